//! Shell completions and manual pages, both generated from the command line's own definitions
//! (`cli.rs`), so they cannot disagree with `--help`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

/// `ccs completions SHELL`: the completion script, to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<()> {
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "ccs", out);
    Ok(())
}

/// `ccs manual DIR`: `ccs.1` and one page per subcommand (`ccs-cliproxy-start.1`, …) in `dir`.
pub fn manual(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make {}: choose another folder", dir.display()))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    crate::outln!("manual pages written to {}", dir.display());
    Ok(())
}

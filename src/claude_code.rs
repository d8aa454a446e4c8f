//! Where Claude Code is: `claude_path` in config.yaml, else the first executable `claude` on
//! PATH. Shared by `ccs run` (the pool) and native profiles (`ccs NAME`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Config;

pub const INSTALL_HINT: &str = "Claude Code is not installed: install it with \
`npm install -g @anthropic-ai/claude-code`, or set claude_path in config.yaml to where it is";

/// `claude` from `claude_path` in config, else the PATH.
pub fn find_claude(config: &Config) -> Result<PathBuf> {
    if let Some(p) = &config.claude_path {
        if p.is_file() {
            return Ok(p.clone());
        }
        bail!(
            "claude_path in config.yaml is {}, which is not a file. {INSTALL_HINT}",
            p.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("claude"))
        .find(|c| is_executable(c))
        .context(INSTALL_HINT)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

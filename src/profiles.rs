//! Native profiles: named Claude Code instances, each in its own config folder
//! (`CCS_HOME/instances/NAME`, used as `CLAUDE_CONFIG_DIR`), with Claude Code's own credential
//! file, and optional shared context groups.
//!
//! Owns: names, the instance folder and its metadata, Claude Code's `.credentials.json`
//! format (specs/anthropic.md §4), and linking shared folders into a group. Must not: refresh a
//! profile's grant (Claude Code owns it until `ccs pool import`), or share credentials.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Paths;
use crate::fsutil;

/// What Claude Code keeps that a context group shares: history (`projects`), and with deeper
/// continuity its session state too.
pub const CONTEXT_DIRS: &[&str] = &["projects"];
pub const DEEPER_DIRS: &[&str] = &["session-env", "file-history", "shell-snapshots", "todos"];

/// Names a profile may not take: commands, and the default pool.
pub const RESERVED: &[&str] = &[
    "claude", "run", "pool", "auth", "cliproxy", "daemon", "sim", "demo", "config", "help",
    "version",
];

const META: &str = ".ccs-profile.json";
const CREDENTIALS: &str = ".credentials.json";

/// Checks a profile name: letters, digits, `-`, `_`; not a command.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        bail!("profile name {name:?}: use letters, digits, '-' and '_' only (no paths, no dots)");
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        bail!("profile name {name:?} is a ccs command; choose another");
    }
    Ok(())
}

/// A profile's own settings, next to its Claude Code config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub email: Option<String>,
    pub context_group: Option<String>,
    #[serde(default)]
    pub deeper_continuity: bool,
    pub created_at: Option<String>,
}

pub fn dir(paths: &Paths, name: &str) -> PathBuf {
    paths.instances_dir().join(name)
}

pub fn exists(paths: &Paths, name: &str) -> bool {
    dir(paths, name).join(META).is_file()
}

pub fn read_meta(paths: &Paths, name: &str) -> Result<Meta> {
    let p = dir(paths, name).join(META);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("no profile {name:?} (see `ccs auth list`)"))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a profile file", p.display()))
}

pub fn write_meta(paths: &Paths, name: &str, meta: &Meta) -> Result<()> {
    let p = dir(paths, name).join(META);
    fsutil::write_private(&p, &serde_json::to_vec_pretty(meta)?)?;
    Ok(())
}

/// Every profile, by name.
pub fn list(paths: &Paths) -> Result<Vec<(String, Meta)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(paths.instances_dir()) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if exists(paths, &name) {
            out.push((name.clone(), read_meta(paths, &name)?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Claude Code's credential file content for a token response.
pub fn credentials_json(
    tokens: &crate::oauth::TokenResponse,
    plan: Option<&str>,
    now_ms: u64,
) -> Value {
    let expires_in = tokens.expires_in.unwrap_or(3600);
    let scopes: Vec<&str> = tokens
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    json!({
        "claudeAiOauth": {
            "accessToken": tokens.access_token,
            "refreshToken": tokens.refresh_token,
            "expiresAt": now_ms + expires_in * 1000,
            "scopes": scopes,
            "subscriptionType": plan.map(str::to_ascii_lowercase),
        }
    })
}

/// Creates (or with `force`, re-creates) the instance folder and writes the credentials.
pub fn create(
    paths: &Paths,
    name: &str,
    force: bool,
    meta: &Meta,
    credentials: &Value,
) -> Result<PathBuf> {
    check_name(name)?;
    let d = dir(paths, name);
    if d.exists() {
        if !force {
            bail!("profile {name:?} exists already: use --force to log it in again from scratch");
        }
        leave_group(paths, name)?;
        std::fs::remove_dir_all(&d).with_context(|| format!("cannot remove {}", d.display()))?;
    }
    fsutil::private_dir(&paths.instances_dir())?;
    fsutil::private_dir(&d)?;
    fsutil::write_private(
        &d.join(CREDENTIALS),
        &serde_json::to_vec_pretty(credentials)?,
    )?;
    // Claude Code's interactive mode wants onboarding done.
    fsutil::write_private(
        &d.join(".claude.json"),
        &serde_json::to_vec_pretty(&json!({"hasCompletedOnboarding": true}))?,
    )?;
    write_meta(paths, name, meta)?;
    Ok(d)
}

/// Deletes one instance (after giving back any shared folders).
pub fn remove(paths: &Paths, name: &str) -> Result<()> {
    check_name(name)?;
    if !exists(paths, name) {
        bail!("no profile {name:?} (see `ccs auth list`)");
    }
    // Unlink shared folders first so removing the instance never touches the group's data.
    for sub in CONTEXT_DIRS.iter().chain(DEEPER_DIRS) {
        let p = dir(paths, name).join(sub);
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::remove_dir_all(dir(paths, name))?;
    Ok(())
}

/// The token expiry and whether a refresh token is there, from the credential file.
pub fn token_state(paths: &Paths, name: &str) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(dir(paths, name).join(CREDENTIALS)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let o = &v["claudeAiOauth"];
    let refresh = o["refreshToken"].as_str().is_some_and(|r| !r.is_empty());
    Some((o["expiresAt"].as_u64()?, refresh))
}

pub fn read_credentials(paths: &Paths, name: &str) -> Result<Value> {
    let p = dir(paths, name).join(CREDENTIALS);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("profile {name:?} has no credential file ({})", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", p.display()))
}

/// Retires the credential file after an import: the refresh token is gone from it, so Claude
/// Code in this instance cannot refresh the grant behind the daemon's back.
pub fn retire_credentials(paths: &Paths, name: &str) -> Result<()> {
    let d = dir(paths, name);
    let mut v = read_credentials(paths, name)?;
    if let Some(o) = v["claudeAiOauth"].as_object_mut() {
        o.remove("refreshToken");
        o.insert(
            "retiredBy".into(),
            json!("ccs pool import: the ccs daemon owns this grant now"),
        );
    }
    fsutil::write_private(
        &d.join(".credentials.json.imported"),
        &serde_json::to_vec_pretty(&v)?,
    )?;
    std::fs::remove_file(d.join(CREDENTIALS))?;
    Ok(())
}

fn group_dir(paths: &Paths, group: &str) -> PathBuf {
    paths.home.join("shared").join("context-groups").join(group)
}

/// Moves every entry of `from` into `to` without overwriting: a clash keeps both, the
/// incoming one renamed with the profile's name.
fn merge_into(from: &Path, to: &Path, profile: &str) -> Result<()> {
    fsutil::private_dir(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        let src = e.path();
        let mut dst = to.join(e.file_name());
        if dst.exists() {
            if src.is_dir() && dst.is_dir() {
                merge_into(&src, &dst, profile)?;
                std::fs::remove_dir_all(&src)?;
                continue;
            }
            dst = to.join(format!(
                "{}.from-{profile}",
                e.file_name().to_string_lossy()
            ));
        }
        std::fs::rename(&src, &dst)
            .with_context(|| format!("cannot move {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Links the profile's shared folders into `group` (merging existing history into the group,
/// losing nothing); deeper continuity links the session folders too.
pub fn join_group(paths: &Paths, name: &str, group: &str, deeper: bool) -> Result<()> {
    check_name(group).map_err(|_| {
        anyhow::anyhow!("context group {group:?}: use letters, digits, '-' and '_' only")
    })?;
    let d = dir(paths, name);
    let subs: Vec<&str> = CONTEXT_DIRS
        .iter()
        .chain(if deeper { DEEPER_DIRS } else { &[] })
        .copied()
        .collect();
    for sub in subs {
        let shared = group_dir(paths, group).join(sub);
        fsutil::private_dir(&shared)?;
        let mine = d.join(sub);
        match mine.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&mine)? == shared {
                    continue;
                }
                std::fs::remove_file(&mine)?;
            }
            Ok(m) if m.is_dir() => {
                merge_into(&mine, &shared, name)?;
                std::fs::remove_dir_all(&mine)?;
            }
            Ok(_) => bail!(
                "{} is a file, not a folder; move it away first",
                mine.display()
            ),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&shared, &mine)
            .with_context(|| format!("cannot link {}", mine.display()))?;
    }
    Ok(())
}

/// Replaces every shared link of the profile with a private copy of the group's data.
pub fn leave_group(paths: &Paths, name: &str) -> Result<()> {
    let d = dir(paths, name);
    for sub in CONTEXT_DIRS.iter().chain(DEEPER_DIRS) {
        let mine = d.join(sub);
        if mine
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let target = std::fs::read_link(&mine)?;
            std::fs::remove_file(&mine)?;
            if target.is_dir() {
                copy_tree(&target, &mine)?;
            } else {
                std::fs::create_dir_all(&mine)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in [
            "", "../x", "a/b", ".hidden", "a.b", "claude", "RUN", "-x", "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["work", "home_2", "Team-A"] {
            check_name(good).unwrap();
        }
    }
}

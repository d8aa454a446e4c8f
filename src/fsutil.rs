//! Files that hold secrets: private folders (0700), private files (0600), and atomic
//! replacement (temp file, fsync, rename, fsync of the folder) so a crash leaves either the old
//! file or the new one, never half of one.
//!
//! Must not: follow a path outside the folder it was given, or leave a temp file behind on error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and parents) if needed and makes it 0700. For folders ccs owns.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    // Every folder made on the way is 0700 too: `CCS_HOME/cliproxy` made first must not leave
    // a missing CCS_HOME open to others.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A folder the user may have chosen (`CCS_HOME`): created 0700 when it is missing, but never
/// re-moded when it exists (it may be shared, or hold other things). Returns its mode when it
/// lets others in, for a warning; ccs's secrets live in 0700 folders below it either way.
pub fn home_dir(dir: &Path) -> io::Result<Option<u32>> {
    if !dir.exists() {
        private_dir(dir)?;
        return Ok(None);
    }
    let m = mode(dir)?;
    Ok((m & 0o077 != 0).then_some(m))
}

/// Makes every file below `dir` 0600 and every folder 0700 (sled creates its files with the
/// process umask: `db`, `conf`, `snap.*` and `blobs/` hold tokens).
pub fn privatize_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
            privatize_tree(&path)?;
        } else if kind.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Removes the temp files `write_private` leaves when the process is killed mid-write (they
/// may hold a token); returns how many.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Replaces `path` with `bytes` atomically; the file is 0600 from its first byte.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no folder"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing temp file keeps its old mode: make sure.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The mode bits of a file or folder (for tests and `doctor`-style checks).
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        private_dir(&sub).unwrap();
        assert_eq!(mode(&sub).unwrap(), 0o700);
        assert_eq!(
            mode(&dir.path().join("a")).unwrap(),
            0o700,
            "and the folder made on the way"
        );
        let f = sub.join("t.json");
        write_private(&f, b"one").unwrap();
        write_private(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(mode(&f).unwrap(), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

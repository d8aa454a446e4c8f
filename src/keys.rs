//! The client key and the management secret when config.yaml does not set them: random, made
//! once per `CCS_HOME` at first use, kept in `cliproxy/keys.json` (0600 in a 0700 folder).
//! ccs hands the client key to Claude Code itself and the CLI reads the secret from here, so
//! nobody types either, and no web page can guess them (the public default names of the tool we
//! replace are accepted only when config.yaml names them explicitly).
//!
//! Must not: overwrite a keys file another process made first, or print a key.

use std::io;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Paths};

#[derive(Serialize, Deserialize)]
struct Generated {
    client_key: String,
    management_secret: String,
}

fn random_key(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The generated keys of `paths`, made now if there are none. Two processes racing at the
/// first start agree: the file is linked into place only if absent, and the loser reads the
/// winner's.
fn generated(paths: &Paths) -> io::Result<Generated> {
    let file = paths.keys_file();
    if let Ok(text) = std::fs::read_to_string(&file) {
        return serde_json::from_str(&text).map_err(|e| {
            io::Error::other(format!(
                "{} is damaged ({e}): delete it to generate new keys (running Claude Code \
                 sessions will need a restart)",
                file.display()
            ))
        });
    }
    crate::fsutil::private_dir(&paths.cliproxy())?;
    let fresh = Generated {
        client_key: random_key("ccs-key-"),
        management_secret: random_key("ccs-mgmt-"),
    };
    let tmp = paths.cliproxy().join(format!(
        ".keys.json.tmp-{}-{:x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    crate::fsutil::write_private(&tmp, &serde_json::to_vec_pretty(&fresh)?)?;
    let linked = std::fs::hard_link(&tmp, &file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(fresh),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => generated(paths),
        Err(e) => Err(e),
    }
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills the keys config.yaml leaves unset with the generated ones.
pub fn resolve(paths: &Paths, config: &mut Config) -> io::Result<()> {
    let auth = &mut config.cliproxy.auth;
    let hashed = auth.management_secret_argon2.is_some();
    if auth.api_key.is_some() && (auth.management_secret.is_some() || hashed) {
        return Ok(());
    }
    let g = generated(paths)?;
    auth.api_key.get_or_insert(g.client_key);
    if !hashed {
        auth.management_secret.get_or_insert(g.management_secret);
    }
    Ok(())
}

/// Where the CLI takes the management secret from when config.yaml keeps it hashed (and what
/// a remote daemon's secret will come from).
pub const SECRET_ENV: &str = "CCS_MANAGEMENT_KEY";

/// The management secret the CLI presents: `CCS_MANAGEMENT_KEY` when set, else the one in
/// config.yaml or keys.json; an error that says what to do when config.yaml keeps only its
/// hash.
pub fn cli_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()) {
        return Ok(s);
    }
    if config.cliproxy.auth.management_secret_argon2.is_some() {
        anyhow::bail!(
            "config.yaml keeps the management secret hashed (management_secret_argon2): give it \
             to this command in the environment, {SECRET_ENV}=…"
        );
    }
    Ok(config.management_secret().to_string())
}

/// An argon2 hash of `secret` (PHC string), for `management_secret_argon2`.
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the secret: {e}"))
}

/// A management secret kept as an argon2 hash. A check costs tens of milliseconds (that is
/// the point), so the digest of the last secret that passed is remembered: the owner's CLI and
/// dashboard pay once, a guesser every time.
pub struct HashedSecret {
    phc: String,
    passed: std::sync::Mutex<Option<[u8; 32]>>,
}

impl HashedSecret {
    pub fn new(phc: &str) -> HashedSecret {
        HashedSecret {
            phc: phc.to_string(),
            passed: std::sync::Mutex::new(None),
        }
    }

    pub fn verify(&self, given: &str) -> bool {
        use argon2::password_hash::PasswordVerifier;
        use sha2::Digest;
        if given.is_empty() {
            return false;
        }
        let d: [u8; 32] = sha2::Sha256::digest(given.as_bytes()).into();
        let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        if passed.is_some_and(|p| constant_time_eq(&p, &d)) {
            return true;
        }
        let Ok(hash) = argon2::PasswordHash::new(&self.phc) else {
            return false;
        };
        let ok = argon2::Argon2::default()
            .verify_password(given.as_bytes(), &hash)
            .is_ok();
        if ok {
            *passed = Some(d);
        }
        ok
    }
}

/// `Config::load`, then the keys resolved: what every command that talks to the daemon or
/// starts Claude Code uses.
pub fn load(paths: &Paths) -> anyhow::Result<Config> {
    let mut config = Config::load(paths)?;
    resolve(paths, &mut config)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_secret_lets_in_the_secret_only() {
        let phc = hash_secret("the-secret").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("the-secret"));
        let h = HashedSecret::new(&phc);
        assert!(!h.verify("wrong"));
        assert!(!h.verify(""));
        assert!(h.verify("the-secret"));
        assert!(h.verify("the-secret"), "again, from the remembered digest");
        assert!(!h.verify("the-secreT"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn unset_keys_are_generated_once_private_and_distinct_per_home() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path().join("a"));
        let a1 = load(&paths).unwrap();
        let a2 = load(&paths).unwrap();
        assert_eq!(a1.client_key(), a2.client_key(), "made once, then read");
        assert_eq!(a1.management_secret(), a2.management_secret());
        assert_ne!(a1.client_key(), crate::config::DEFAULT_API_KEY);
        assert!(a1.client_key().len() >= 64, "{}", a1.client_key().len());
        assert_ne!(a1.client_key(), a1.management_secret());
        assert_eq!(crate::fsutil::mode(&paths.keys_file()).unwrap(), 0o600);
        assert_eq!(crate::fsutil::mode(&paths.cliproxy()).unwrap(), 0o700);
        let b = load(&Paths::at(dir.path().join("b"))).unwrap();
        assert_ne!(a1.client_key(), b.client_key(), "random per home");
    }

    #[test]
    fn keys_set_in_config_win_and_defaults_count_only_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        std::fs::write(
            paths.config_file(),
            "cliproxy:\n  auth:\n    api_key: ccs-internal-managed\n",
        )
        .unwrap();
        let c = load(&paths).unwrap();
        assert_eq!(c.client_key(), "ccs-internal-managed", "named explicitly");
        assert_ne!(
            c.management_secret(),
            crate::config::DEFAULT_MANAGEMENT_SECRET,
            "the unnamed one is generated"
        );
    }

    #[test]
    fn racing_first_starts_agree_on_one_set_of_keys() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        let seen: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load(&paths).unwrap().client_key().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    }
}

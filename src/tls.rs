//! TLS for both sides of a shared daemon (rustls on the ring provider): the daemon's server
//! configuration from PEM files (`cliproxy.tls`), a self-signed certificate for
//! `ccs cliproxy cert --self-signed`, and what a client trusts: the platform's roots, a CA
//! file, or one certificate pinned by its SHA-256 fingerprint (`Trust`).
//!
//! Must not: accept a pinned server whose certificate differs from the pin, or read a private
//! key with wider permissions than the owner's without saying so.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate's SHA-256 over its DER bytes, shown as `AB:CD:…` (as `openssl x509
/// -fingerprint -sha256` prints it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Reads 64 hex digits, with or without colons, any case; an optional `sha256:` or
    /// `SHA256 Fingerprint=` prefix is ignored.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let s = s.trim();
        let s = s.rsplit_once('=').map(|(_, r)| r).unwrap_or(s);
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The certificates of a PEM file, in order (the server's own first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{} holds no certificate (a PEM file with BEGIN CERTIFICATE is expected)",
            path.display()
        );
    }
    Ok(certs)
}

/// The daemon's TLS configuration from `cert` (PEM chain) and `key` (PEM private key). Read at
/// each start, so `ccs cliproxy restart` picks up renewed files.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a PEM private key from {} (cliproxy.tls.key)",
            key.display()
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                key = %key.display(),
                "the TLS private key is readable by others: chmod 600 it"
            );
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS configuration from a certificate and key held in memory (PEM): the simulator's
/// HTTPS listener. actix-web offers HTTP/2 on it by ALPN.
pub fn server_config_pem(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("the certificate is not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("the key is not PEM")?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the key does not fit the certificate")
}

/// A new key and self-signed certificate for `hosts` (names or IP addresses), as PEM, with the
/// certificate's fingerprint.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: Fingerprint,
}

/// Whole days from now until a certificate's end `ends` (RFC 3339); negative once it passed.
pub fn days_left(ends: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(ends).ok()?;
    Some((t.timestamp() - chrono::Utc::now().timestamp()).div_euclid(86_400))
}

/// How long a certificate `self_signed` makes is valid.
pub const SELF_SIGNED_DAYS: u64 = 365;
/// How long before its end a certificate is warned of.
pub const RENEW_WITHIN_DAYS: u64 = 30;

/// When a certificate (DER) stops being valid, in seconds since the epoch: its
/// `tbsCertificate.validity.notAfter` (RFC 5280 §4.1.2.5), read without a parser crate.
pub fn not_after(der: &[u8]) -> Option<i64> {
    // One DER element: its tag, its content, and what follows it.
    fn element(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *d.first()?;
        let first = *d.get(1)? as usize;
        let (len, head) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = len << 8 | *d.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let end = head.checked_add(len)?;
        Some((tag, d.get(head..end)?, d.get(end..)?))
    }
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    // [0] version (optional), serial number, signature algorithm, issuer, validity.
    let (tag, _, rest) = element(tbs)?;
    let rest = if tag == 0xA0 { element(rest)?.2 } else { rest };
    let (_, _, rest) = element(rest)?;
    let (_, _, rest) = element(rest)?;
    let (_, validity, _) = element(rest)?;
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950–2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    let full = match tag {
        0x17 => {
            let yy: i32 = text.get(0..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(full.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

pub fn self_signed(hosts: &[String]) -> Result<SelfSigned> {
    if hosts.is_empty() {
        bail!("name at least one host the clients will use (a name or an IP address)");
    }
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .context("a host is neither a DNS name nor an IP address")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("ccs daemon {}", hosts[0]),
    );
    // Valid from yesterday (a client's clock a little behind) for a year: a lifetime a
    // person renews, and `ccs cliproxy status` and `ccs doctor` warn in its last month.
    let today = chrono::Utc::now().date_naive();
    let ymd = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(SELF_SIGNED_DAYS));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(SelfSigned {
        fingerprint: Fingerprint::of(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a client trusts when it speaks TLS to a daemon.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The platform's usual roots (a certificate from a public CA).
    Roots,
    /// The certificates of a PEM file (a private CA, or the self-signed certificate itself).
    Ca(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this fingerprint, whatever its name and issuer.
    Pin(Fingerprint),
}

/// What a pinned connection met: the fingerprint and certificate the server presented, kept
/// for the message of a mismatch and for handing the verified certificate on to Claude Code.
#[derive(Debug, Default)]
pub struct Seen {
    pub cert: Option<CertificateDer<'static>>,
}

/// What a custom verifier accepts.
#[derive(Debug)]
enum Check {
    /// Exactly the certificate with this fingerprint; what was met is kept in `seen`.
    Pin {
        pin: Fingerprint,
        seen: Arc<Mutex<Seen>>,
    },
    /// Any certificate: only for asking this machine's own daemon whether it is up, a request
    /// that carries nothing (its certificate may have been replaced on disk since it started;
    /// everything else pins it).
    Anything,
}

/// A certificate check other than the roots': the handshake's signatures are always verified.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::Pin { pin, seen } = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = Fingerprint::of(end_entity);
        if let Ok(mut seen) = seen.lock() {
            seen.cert = Some(end_entity.clone().into_owned());
        }
        // The pin is the identity: name and issuer do not matter, the bytes do.
        if got != *pin {
            return Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 fingerprint {got}, not the pinned {pin}"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn custom(check: Check) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The configuration of a liveness probe of the local daemon, which sends no key or secret.
pub fn liveness_config() -> Result<rustls::ClientConfig> {
    custom(Check::Anything)
}

/// A client configuration that trusts `trust`; a pinned one records what it met in `seen`.
pub fn client_config(trust: &Trust, seen: Arc<Mutex<Seen>>) -> Result<rustls::ClientConfig> {
    let roots = match trust {
        Trust::Pin(pin) => return custom(Check::Pin { pin: *pin, seen }),
        Trust::Ca(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .context("a certificate of the CA file cannot serve as a trust anchor")?;
            }
            roots
        }
        Trust::Roots => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate as PEM text.
pub fn pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_reads_back_what_it_prints_in_any_spelling() {
        let f = Fingerprint::of(b"a certificate");
        let shown = f.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&shown), Some(f));
        assert_eq!(Fingerprint::parse(&shown.to_lowercase()), Some(f));
        assert_eq!(Fingerprint::parse(&shown.replace(':', "")), Some(f));
        assert_eq!(
            Fingerprint::parse(&format!("sha256 Fingerprint={shown}")),
            Some(f)
        );
        assert_eq!(Fingerprint::parse(&shown[3..]), None, "too short");
        assert_eq!(Fingerprint::parse(&shown.replace('A', "G")), None);
    }

    #[test]
    fn a_self_signed_certificate_round_trips_through_pem_with_its_fingerprint() {
        let s = self_signed(&["127.0.0.2".into(), "ccs.example".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, &s.cert_pem).unwrap();
        std::fs::write(&key, &s.key_pem).unwrap();
        let certs = read_certs(&cert).unwrap();
        assert_eq!(Fingerprint::of(&certs[0]), s.fingerprint);
        assert_eq!(pem(&certs[0]), s.cert_pem.replace("\r\n", "\n"));
        server_config(&cert, &key).expect("the key fits the certificate");
        let der = CertificateDer::pem_slice_iter(s.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let ends = not_after(&der).expect("its end reads");
        let in_a_year = chrono::Utc::now().timestamp() + SELF_SIGNED_DAYS as i64 * 86_400;
        assert!(
            (ends - in_a_year).abs() < 2 * 86_400,
            "valid for a year, not until 4096: {ends}"
        );
        assert_eq!(not_after(b"not a certificate"), None);
        // rcgen's default end (4096) is a GeneralizedTime: read too.
        let k = rcgen::KeyPair::generate().unwrap();
        let far = rcgen::CertificateParams::new(vec!["x.example".into()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        let year = chrono::DateTime::from_timestamp(not_after(far.der()).unwrap(), 0)
            .map(|t| chrono::Datelike::year(&t));
        assert_eq!(year, Some(4096));
        let other = self_signed(&["127.0.0.2".into()]).unwrap();
        std::fs::write(&key, &other.key_pem).unwrap();
        let err = server_config(&cert, &key).unwrap_err();
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
        assert!(self_signed(&[]).is_err());
    }
}

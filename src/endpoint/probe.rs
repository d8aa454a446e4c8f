//! A tiny blocking `GET` over HTTP/1.1, plain or TLS, for health checks: no runtime needed, so
//! it works wherever the CLI is (and inside tests' threads).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// What `/healthz` said, and how long the round trip took.
#[derive(Clone, Debug)]
pub struct Probe {
    pub pid: u32,
    pub version: String,
    pub rtt: Duration,
}

/// `GET {base}/healthz`: what a ccs daemon says of itself, with the round trip (a new
/// connection, its TLS handshake included); an error when nothing, or something else, answers.
pub fn healthz(base: &str, tls: Option<rustls::ClientConfig>) -> std::io::Result<Probe> {
    let started = std::time::Instant::now();
    let body = get(&format!("{base}/healthz"), tls, None)?;
    let rtt = started.elapsed();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if v["status"] != "ok" {
        return Err(std::io::Error::other(format!(
            "{base} answers, but it is not a ccs daemon"
        )));
    }
    Ok(Probe {
        pid: v["pid"].as_u64().unwrap_or(0) as u32,
        version: v["version"].as_str().unwrap_or("").to_string(),
        rtt,
    })
}

/// How long a connection may take; a daemon answers `/healthz` at once.
const CONNECT: Duration = Duration::from_millis(1500);
const READ: Duration = Duration::from_secs(3);

/// `GET url` with an optional bearer; the body of a 200 answer, or an error that says what
/// happened (refused, certificate, other status).
pub fn get(
    url: &str,
    tls: Option<rustls::ClientConfig>,
    bearer: Option<&str>,
) -> std::io::Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| std::io::Error::other(format!("{url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| std::io::Error::other(format!("{url} names no host")))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
    let tcp = TcpStream::connect_timeout(&addr, CONNECT)?;
    tcp.set_read_timeout(Some(READ))?;
    tcp.set_write_timeout(Some(READ))?;
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n");
    let raw = match (parsed.scheme(), tls) {
        ("https", Some(config)) => {
            let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
            let conn = rustls::ClientConnection::new(Arc::new(config), name)
                .map_err(std::io::Error::other)?;
            exchange(rustls::StreamOwned::new(conn, tcp), &request)?
        }
        ("http", None) => exchange(tcp, &request)?,
        (scheme, _) => {
            return Err(std::io::Error::other(format!(
                "{url}: the scheme {scheme} does not fit the TLS settings"
            )))
        }
    };
    // A TLS record (a handshake or an alert) where an HTTP answer was expected.
    if matches!(raw.first(), Some(0x15 | 0x16)) {
        return Err(std::io::Error::other(
            "it speaks HTTPS, not plain HTTP: use --proxy-protocol https (or protocol: https)",
        ));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or("no answer");
        return Err(std::io::Error::other(format!("it answered {line:?}")));
    }
    Ok(body.to_string())
}

/// Writes `request` and reads the answer: to the end of its `content-length` body, or to the
/// close (a peer that closes without TLS close_notify still gave a whole answer then).
fn exchange(mut s: impl Read + Write, request: &str) -> std::io::Result<Vec<u8>> {
    s.write_all(request.as_bytes())?;
    s.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(want) = whole(&buf) {
            buf.truncate(want);
            return Ok(buf);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {
                return Ok(buf)
            }
            Err(e) => return Err(e),
        }
    }
}

/// The length of the whole answer once its head and `content-length` body are in `buf`.
fn whole(buf: &[u8]) -> Option<usize> {
    let end = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })?;
    (buf.len() >= end + len).then_some(end + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_whole_once_its_body_is_in() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(whole(head), None);
        let mut full = head.to_vec();
        full.extend_from_slice(b"ab");
        assert_eq!(whole(&full), None);
        full.extend_from_slice(b"cdEXTRA");
        assert_eq!(whole(&full), Some(head.len() + 4));
        assert_eq!(
            whole(b"HTTP/1.1 200 OK\r\n\r\n"),
            None,
            "no length: read to close"
        );
    }
}

//! The floor: nginx as a plain reverse proxy (one process and no master, so ending the child
//! leaves no worker behind; keep-alive to the upstream, no buffering) in front of the same
//! simulator, so the load benchmark reads "ccs against direct against the cheapest possible
//! HTTP hop" in one run. nginx comes from Debian's packages
//! (`nginx-light`), installed by the benchmark when it is missing and the user may install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Proc};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx, installed now if missing (as root, or through sudo); `None` with the reason when it
/// cannot be had.
pub fn ensure_nginx() -> Result<PathBuf, String> {
    apt_tool(NGINX, "nginx-light", "the nginx floor row")
}

/// `bin`, installed now from Debian's `package` if missing (as root, or through sudo); the
/// reason when it cannot be had.
pub fn apt_tool(bin: &str, package: &str, wanted_by: &str) -> Result<PathBuf, String> {
    if Path::new(bin).exists() {
        return Ok(PathBuf::from(bin));
    }
    eprintln!("{wanted_by} needs {package}: apt-get install {package}");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut cmd = if root {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    };
    let ok = cmd
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok && Path::new(bin).exists() {
        Ok(PathBuf::from(bin))
    } else {
        Err(format!(
            "{package} is not installed and could not be (apt-get install {package})"
        ))
    }
}

/// Starts nginx proxying to `upstream` (`http://127.0.0.1:PORT`); returns it and its URL.
pub fn spawn_nginx(dir: &Path, upstream: &str) -> Result<(Proc, String), String> {
    let bin = ensure_nginx()?;
    let port = free_port();
    let up = upstream.trim_start_matches("http://");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let d = dir.display();
    let conf = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         client_max_body_size 64m;\n  client_body_buffer_size 16m;\n  keepalive_requests 1000000;\n  \
         upstream sim {{ server {up}; keepalive 256; keepalive_requests 1000000; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://sim;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n      \
         proxy_request_buffering off;\n    }}\n  }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let proc_ = Proc(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "nginx did not listen within 10 s; see {d}/error.log"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((proc_, format!("http://127.0.0.1:{port}")))
}

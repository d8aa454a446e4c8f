"""Start to ready: how long `ccs daemon run` takes from spawn to its first `/healthz` answer.

Usage: python3 benches/start_to_ready.py BINARY [BINARY ...]

Each binary runs 12 times, alternating with the others in one invocation, each on a fresh
temporary CCS_HOME and a free loopback port (no account, no upstream warm-up); the fastest and
slowest run of each are dropped and the median of the rest printed. Loopback only.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RUNS = 12


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def once(exe):
    folder = tempfile.mkdtemp()
    home = os.path.join(folder, "ccs")
    os.makedirs(home, mode=0o700)
    port = free_port()
    with open(os.path.join(home, "config.yaml"), "w") as f:
        f.write(
            f"cliproxy:\n  port: {port}\n  auth:\n"
            "    api_key: bench-key-0123456789abcdefgh\n"
            "    management_secret: bench-secret-0123456789abcdef\n"
            "upstream:\n  warm: false\n"
        )
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [exe, "daemon", "run"],
        env={**os.environ, "CCS_HOME": home},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if daemon.poll() is not None:
                    sys.exit(f"{exe} exited before it was ready")
                time.sleep(0.002)
        return (time.perf_counter() - started) * 1000
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    times = {exe: [] for exe in sys.argv[1:]}
    for _ in range(RUNS):
        for exe in times:
            times[exe].append(once(exe))
    for exe, ms in times.items():
        kept = sorted(ms)[1:-1]
        print(f"{exe}: median {statistics.median(kept):.1f} ms, min {min(kept):.1f} ms")


if __name__ == "__main__":
    main()

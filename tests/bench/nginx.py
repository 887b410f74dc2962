"""nginx as the data-plane benchmark's peer: a plain reverse proxy with keepalive, to compare the router with.

Debian's ``nginx`` package is downloaded once per machine and extracted into the cache
(``<cache root>/nginx``, next to the control-plane binaries), never installed: no root, no service, no
system file touched. The download goes through apt (the machine's package lists when they have nginx,
else a private apt directory under the cache with bookworm's lists); a shared library the machine lacks
(``ldd`` says "not found") is extracted from its Debian package into the same folder and found through
``LD_LIBRARY_PATH``. The benchmark runs it in the foreground (``daemon off; master_process off``: one
process, like the router) with its prefix, pid, logs and temp folders in the run's own temp folder.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from cells_devtools.devcluster.assets import DEBIAN_MIRROR, KEYRING, PrivateApt, cache_root

PACKAGE = "nginx"
# The Debian package of each shared library nginx links (bookworm and trixie names), for a machine
# that lacks one of them.
LIBRARY_PACKAGES = {
    "libcrypt.so.1": "libcrypt1",
    "libpcre2-8.so.0": "libpcre2-8-0",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libz.so.1": "zlib1g",
}


def _log(message: str) -> None:
    print(f"[nginx] {message}", file=sys.stderr, flush=True)


class _BookwormApt(PrivateApt):
    """The cache's private apt, with bookworm's binary packages (the machine's apt stays untouched)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, _log)
        self.sources.write_text(
            f"deb [signed-by={KEYRING}] {DEBIAN_MIRROR} bookworm main\n"
            f"deb [signed-by={KEYRING}] {DEBIAN_MIRROR} bookworm-updates main\n"
            f"deb [signed-by={KEYRING}] {DEBIAN_MIRROR}-security bookworm-security main\n"
        )


def _download(packages: list[str], root: Path, debs: Path) -> None:
    """``apt-get download``: with the machine's lists if they know the packages, else with private ones."""
    debs.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["apt-get", "download", *packages], cwd=debs, capture_output=True).returncode == 0:
        return
    apt = _BookwormApt(root / "apt")
    apt.update()
    apt.download(tuple(packages), debs)


def _extract(package: str, debs: Path, root: Path) -> None:
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def library_path(root: Path) -> str:
    """Where the extracted libraries are (first), for ``LD_LIBRARY_PATH``."""
    triplet = f"{platform.machine()}-linux-gnu"
    dirs = [root / "usr" / "lib" / triplet, root / "lib" / triplet]
    return os.pathsep.join([str(d) for d in dirs if d.is_dir()] + [os.environ.get("LD_LIBRARY_PATH", "")]).strip(
        os.pathsep
    )


def missing_libraries(binary: Path, root: Path) -> list[str]:
    """The sonames ``ldd`` cannot resolve for ``binary`` (with the libraries extracted under ``root``)."""
    env = {**os.environ, "LD_LIBRARY_PATH": library_path(root)}
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    return re.findall(r"^\s*(\S+) => not found", out, flags=re.MULTILINE)


def find_nginx() -> Path:
    """Debian's nginx binary, extracted into the cache on first use (with any library the machine lacks)."""
    root = cache_root() / "nginx"
    binary = root / "usr" / "sbin" / "nginx"
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "nginx.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per machine: a concurrent bench waits for it
        if not binary.exists():
            _log(f"downloading Debian's {PACKAGE} into {root}")
            _download([PACKAGE], root, root / "debs")
            _extract(PACKAGE, root / "debs", root)
        missing = missing_libraries(binary, root)
        if missing:
            packages = sorted({LIBRARY_PACKAGES.get(m, m) for m in missing})
            _log(f"missing {', '.join(missing)}: extracting {', '.join(packages)}")
            _download(packages, root, root / "debs")
            for package in packages:
                _extract(package, root / "debs", root)
            if still := missing_libraries(binary, root):
                raise RuntimeError(f"nginx still lacks {', '.join(still)} after extracting {', '.join(packages)}")
    return binary


def nginx_version(binary: Path) -> str:
    """``nginx/1.22.1`` (what ``nginx -v`` prints on stderr)."""
    env = {**os.environ, "LD_LIBRARY_PATH": library_path(binary.parents[2])}
    out = subprocess.run([str(binary), "-v"], capture_output=True, text=True, env=env)
    return (out.stderr or out.stdout).strip().rpartition(": ")[2]


def proxy_conf(prefix: Path, port: int, upstream: str, keepalive: int = 64) -> str:
    """A plain reverse proxy with keepalive to ``upstream``: one process, no access log, nothing outside ``prefix``.

    Upstream keepalive needs all three: the ``keepalive`` connection pool, HTTP/1.1 to the upstream, and an
    empty ``Connection`` header (nginx sends ``Connection: close`` otherwise).
    """
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp}
    upstream cell {{
        server {upstream};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cell;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_argv(binary: Path, prefix: Path, port: int, upstream: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment to run nginx as a proxy on ``port`` to ``upstream`` (conf written to ``prefix``)."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(proxy_conf(prefix, port, upstream))
    env = {**os.environ, "LD_LIBRARY_PATH": library_path(binary.parents[2])}
    # -e: the error log before the configuration is read (the default, /var/log/nginx, may not be writable).
    return [str(binary), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)], env


if __name__ == "__main__":
    print(find_nginx())

"""Find, or build once per machine, the binaries of the local control plane.

The integration tier needs a *real* kube-apiserver backed by a *real* etcd, on machines that have
no Docker (so no kind) and no access to release downloads. Lookup order follows the envtest
convention so that users who already have envtest binaries of a newer Kubernetes can use them:

1. ``$KUBEBUILDER_ASSETS`` -- a folder holding ``etcd``, ``kube-apiserver``, ``kubectl`` (and,
   optionally, ``kube-controller-manager``);
2. the cache folder (``~/.cache/cells-operator/k8s-v1.20.2/bin``);
3. a build into that cache from Debian's ``kubernetes`` source package with Go 1.15 from bullseye,
   all fetched through apt with a private configuration so the system's apt state stays untouched.

etcd comes from Debian's ``etcd-server`` and kubectl from ``PATH`` (>= 1.20) or Debian's
``kubernetes-client`` when ``$KUBEBUILDER_ASSETS`` does not provide them.

Why Go 1.15: Go >= 1.18 builds a kube-apiserver 1.20 that crashes with SIGSEGV in its JSON encoder
(the vendored reflect2 predates Go 1.18's runtime changes), so bookworm's Go cannot be used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.20.2"
K8S_SOURCE_PACKAGE = "kubernetes"
GO_PACKAGES = ("golang-1.15-go", "golang-1.15-src")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_MIRROR = os.environ.get("CELLS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
MIN_KUBECTL = (1, 20)

Log = Callable[[str], None]


class AssetError(RuntimeError):
    """A control-plane binary is missing and cannot be obtained; the message says what to do."""


@dataclass(frozen=True)
class Assets:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    kube_controller_manager: Path | None
    source: str  # where the apiserver came from, for logs


def _stderr(msg: str) -> None:
    print(f"[devcluster] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """The per-machine cache: ``$CELLS_OPERATOR_CACHE`` or ``$XDG_CACHE_HOME/cells-operator``."""
    if env := os.environ.get("CELLS_OPERATOR_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cells-operator"


def k8s_cache_dir() -> Path:
    return cache_root() / f"k8s-v{K8S_VERSION}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run(cmd: list[str], log: Log, **kwargs) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise AssetError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def apt_install(packages: list[str], log: Log) -> None:
    """Install Debian packages with the system's apt (needs root); a clear error otherwise."""
    if not _is_root():
        raise AssetError(
            f"missing {', '.join(packages)}: install them with `sudo apt-get install {' '.join(packages)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # An apt that has never been updated knows no packages; update once, then install.
    lists = Path("/var/lib/apt/lists")
    if not any(lists.glob("*Packages*")):
        _run(["apt-get", "update"], log, env=env)
    try:
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages], log, env=env)
    except AssetError:
        _run(["apt-get", "update"], log, env=env)
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages], log, env=env)


def kubectl_version(path: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [str(path), "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'"major":\s*"(\d+)".*?"minor":\s*"(\d+)', out, re.S)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_etcd(log: Log, install: bool = True) -> Path:
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb and _executable(Path(kb) / "etcd"):
        return Path(kb) / "etcd"
    for candidate in (shutil.which("etcd"), "/usr/bin/etcd"):
        if candidate and _executable(Path(candidate)):
            return Path(candidate)
    if not install:
        raise AssetError("etcd not found: install Debian's etcd-server or set KUBEBUILDER_ASSETS")
    log("etcd not found; installing Debian's etcd-server")
    apt_install(["etcd-server"], log)
    return Path("/usr/bin/etcd")


def find_kubectl(log: Log, install: bool = True) -> Path:
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb and _executable(Path(kb) / "kubectl"):
        return Path(kb) / "kubectl"
    on_path = shutil.which("kubectl")
    if on_path and (kubectl_version(Path(on_path)) or (0, 0)) >= MIN_KUBECTL:
        return Path(on_path)
    built = k8s_cache_dir() / "bin" / "kubectl"
    if _executable(built):
        return built
    if not install:
        raise AssetError("kubectl >= 1.20 not found: install Debian's kubernetes-client")
    log("kubectl >= 1.20 not found; installing Debian's kubernetes-client")
    apt_install(["kubernetes-client"], log)
    return Path("/usr/bin/kubectl")


def ensure_openssl(log: Log, install: bool = True) -> None:
    """The control plane's service-account keys and the webhook's self-signed certificates use ``openssl``."""
    if shutil.which("openssl"):
        return
    if not install:
        raise AssetError("openssl not found: install Debian's openssl")
    log("openssl not found; installing Debian's openssl")
    apt_install(["openssl"], log)


def find_assets(build: bool = True, log: Log = _stderr) -> Assets:
    """Locate every control-plane binary, building kube-apiserver/controller-manager if allowed."""
    ensure_openssl(log, install=build)
    etcd = find_etcd(log, install=build)
    kubectl = find_kubectl(log, install=build)
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb:
        folder = Path(kb)
        apiserver = folder / "kube-apiserver"
        if not _executable(apiserver):
            raise AssetError(f"KUBEBUILDER_ASSETS={kb} holds no executable kube-apiserver")
        kcm = folder / "kube-controller-manager"
        if not _executable(kcm):
            log(
                "KUBEBUILDER_ASSETS has no kube-controller-manager: garbage collection and namespace "
                "deletion will not run"
            )
            kcm = None
        return Assets(etcd, apiserver, kubectl, kcm, f"KUBEBUILDER_ASSETS={kb}")
    bindir = k8s_cache_dir() / "bin"
    wanted = ("kube-apiserver", "kube-controller-manager")
    if not all(_executable(bindir / b) for b in wanted):
        if not build:
            raise AssetError(
                f"kube-apiserver not found in {bindir}; run `cells-operator cluster build` or set KUBEBUILDER_ASSETS"
            )
        build_kubernetes(log)
    return Assets(etcd, bindir / "kube-apiserver", kubectl, bindir / "kube-controller-manager", str(bindir))


@contextlib.contextmanager
def _build_lock(path: Path, log: Log) -> Iterator[None]:
    """One build per machine: concurrent callers (two pytest runs, make demo + make test) wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building Kubernetes (lock {path}); waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class PrivateApt:
    """apt with its own sources, lists and archives under the cache: the system's apt stays untouched."""

    def __init__(self, root: Path, log: Log):
        self.root = root
        self.log = log
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache").mkdir(parents=True, exist_ok=True)
        self.sources = root / "sources.list"
        self.sources.write_text(
            f"deb-src [signed-by={KEYRING}] {DEBIAN_MIRROR} bookworm main\n"
            f"deb [signed-by={KEYRING}] {DEBIAN_MIRROR} bullseye main\n"
        )

    def options(self) -> list[str]:
        r = self.root
        return [
            "-o",
            f"Dir::Etc::SourceList={self.sources}",
            "-o",
            "Dir::Etc::SourceParts=/nonexistent",
            "-o",
            f"Dir::State::Lists={r / 'lists'}",
            "-o",
            f"Dir::Cache={r / 'cache'}",
            "-o",
            f"Dir::Cache::Archives={r / 'archives'}",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Sandbox::User=root",
        ]

    def update(self) -> None:
        _run(["apt-get", *self.options(), "update"], self.log)

    def source(self, package: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", *self.options(), "source", "--download-only", package], self.log, cwd=dest)

    def download(self, packages: tuple[str, ...], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", *self.options(), "download", *packages], self.log, cwd=dest)


def _go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def build_kubernetes(log: Log = _stderr) -> Path:
    """Build kube-apiserver and kube-controller-manager 1.20.2 into the cache (about 5 minutes)."""
    target = k8s_cache_dir()
    bindir = target / "bin"
    with _build_lock(target / "build.lock", log):
        wanted = ("kube-apiserver", "kube-controller-manager")
        if all(_executable(bindir / b) for b in wanted):
            return bindir  # someone else built it while we waited
        missing_tools = [t for t in ("rsync", "jq", "make", "dpkg") if not shutil.which(t)]
        if missing_tools:
            log(f"the build needs {', '.join(missing_tools)}; installing")
            apt_install(missing_tools, log)
        started = time.monotonic()
        log(f"building Kubernetes {K8S_VERSION} control plane into {target} (once per machine, ~5 min)")
        apt = PrivateApt(target / "apt", log)
        log("step 1/4: apt update (private lists: bookworm sources, bullseye binaries)")
        apt.update()

        log("step 2/4: fetching Go 1.15 from bullseye")
        goroot = target / "go" / "usr" / "lib" / "go-1.15"
        if not (goroot / "bin" / "go").exists():
            debs = target / "debs"
            apt.download(GO_PACKAGES, debs)
            for deb in sorted(debs.glob("*.deb")):
                _run(["dpkg", "-x", str(deb), str(target / "go")], log)

        log("step 3/4: fetching the kubernetes source package of bookworm")
        tree = target / "src" / f"kubernetes-{K8S_VERSION}"
        if not (tree / "Makefile").exists():
            srcdir = target / "src"
            apt.source(K8S_SOURCE_PACKAGE, srcdir)
            origs = sorted(srcdir.glob(f"{K8S_SOURCE_PACKAGE}_*.orig.tar.gz"))
            if not origs:
                raise AssetError(f"apt-get source produced no orig tarball in {srcdir}")
            with tarfile.open(origs[-1]) as tar:
                tar.extractall(srcdir, filter="tar")
        gopath = tree / ".go"
        link = gopath / "src" / "k8s.io" / "kubernetes"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("../../..")

        log("step 4/4: make WHAT='cmd/kube-apiserver cmd/kube-controller-manager' (progress below)")
        home = target / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": f"{goroot / 'bin'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "GOROOT": str(goroot),
            "GOPATH": str(gopath),
            "GO111MODULE": "off",
            "CGO_ENABLED": "0",
            "HOME": str(home),
            "GOCACHE": str(target / "gocache"),
            "KUBE_GIT_VERSION": f"v{K8S_VERSION}",
            "KUBE_GIT_TREE_STATE": "clean",
            "KUBE_BUILD_PLATFORMS": f"linux/{_go_arch()}",
            "LANG": "C.UTF-8",
        }
        proc = subprocess.Popen(
            ["make", "WHAT=cmd/kube-apiserver cmd/kube-controller-manager"],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-60:], line]
            log(f"  make: {line}  [{int(time.monotonic() - started)}s]")
        if proc.wait() != 0:
            raise AssetError("Kubernetes build failed:\n" + "\n".join(tail))
        bindir.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            built = next((p for p in (tree / "_output").rglob(name) if _executable(p)), None)
            if built is None:
                raise AssetError(f"build finished but produced no {name} under {tree / '_output'}")
            tmp = bindir / f".{name}.tmp"
            shutil.copy2(built, tmp)
            tmp.replace(bindir / name)
        log(f"built in {int(time.monotonic() - started)}s; removing the source tree and Go caches")
        shutil.rmtree(target / "src", ignore_errors=True)
        shutil.rmtree(target / "gocache", ignore_errors=True)
        return bindir

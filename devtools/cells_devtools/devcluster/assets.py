"""Find, or build once per machine, the binaries of the local control plane.

The integration tier needs a *real* kube-apiserver backed by a *real* etcd, on machines that have
no Docker (so no kind) and no access to release downloads. Lookup order follows the envtest
convention so that users who already have envtest binaries can use them:

1. ``$KUBEBUILDER_ASSETS`` -- a folder holding ``etcd``, ``kube-apiserver``, ``kubectl`` (and,
   optionally, ``kube-controller-manager``);
2. the cache folder of the selected release (``~/.cache/cells-operator/k8s-vX.Y.Z/bin``);
3. a build into that cache.

The release is ``$K8S_VERSION`` (``make ... K8S_VERSION=1.20.2``), else :data:`DEFAULT_K8S_VERSION`.
Two build paths exist (ADR 0012 says why both):

* **Current releases, from Go modules** (:func:`build_from_modules`). A generated wrapper module
  requires ``k8s.io/kubernetes`` at the release and replaces every ``k8s.io/*`` staging module (which
  the kubernetes ``go.mod`` points at ``./staging/...``, a path a module consumer does not have) by its
  published ``v0.Y.Z``; ``go build`` then makes kube-apiserver, kube-controller-manager and kubectl.
  etcd of the release's line (read from the release's ``build/dependencies.yaml``) is built from
  ``go.etcd.io/etcd/server/v3`` in a second wrapper, so its dependency versions do not move the
  apiserver's. Go comes from ``PATH`` (or ``/usr/local/go``) when it is at least the release's ``go``
  directive, else from Debian. Module downloads go to ``<cache root>/go/mod`` (shared by releases),
  so the build touches neither ``~/go`` nor the system.
* **1.20.2, from Debian** (:func:`build_kubernetes_legacy`): bookworm's ``kubernetes`` source package
  with Go 1.15 from bullseye. Go >= 1.18 builds a kube-apiserver 1.20 that crashes with SIGSEGV in
  its JSON encoder (the vendored reflect2 predates Go 1.18's runtime changes). etcd comes from
  Debian's ``etcd-server`` (3.4) and kubectl from ``PATH`` (>= 1.20) or Debian's
  ``kubernetes-client``.
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

LEGACY_K8S_VERSION = "1.20.2"
"""The release the project was first tested on; built from Debian's source package (see the module doc)."""
CURRENT_K8S_VERSION = "1.37.2"
"""The newest patch of the newest minor the Go module proxy served when this was pinned (ADR 0012)."""
DEFAULT_K8S_VERSION = CURRENT_K8S_VERSION
"""What ``make cluster``/``make test``/CI run on when ``$K8S_VERSION`` is unset."""
SUPPORTED_MINORS = ((1, 35), (1, 36), (1, 37))
"""The support window (ADR 0012): the newest three minors. Others run, with a warning."""
ETCD_FOR = {"1.37.2": "3.7.3"}
"""Pinned etcd per release (newest patch of the release's etcd line); other releases derive it."""

K8S_SOURCE_PACKAGE = "kubernetes"
GO_PACKAGES = ("golang-1.15-go", "golang-1.15-src")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_MIRROR = os.environ.get("CELLS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
MIN_KUBECTL = (1, 20)
KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kubectl")

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


def k8s_version() -> str:
    """The selected release: ``$K8S_VERSION`` (a leading ``v`` is accepted), else the default."""
    raw = os.environ.get("K8S_VERSION", "").strip().lstrip("v") or DEFAULT_K8S_VERSION
    if not re.fullmatch(r"1\.\d+\.\d+", raw):
        raise AssetError(f"K8S_VERSION={raw!r} is not a Kubernetes release such as {CURRENT_K8S_VERSION}")
    return raw


def minor_of(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def is_legacy(version: str) -> bool:
    """Releases before 1.27 cannot be built from Go modules here (see the module doc): Debian's path."""
    return minor_of(version) < (1, 27)


def k8s_cache_dir(version: str | None = None) -> Path:
    return cache_root() / f"k8s-v{version or k8s_version()}"


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


def binary_version(path: Path) -> tuple[int, int] | None:
    """``(major, minor)`` a Kubernetes binary reports with ``--version`` ("Kubernetes v1.37.2"), else None.

    Asked of the binary itself, not of the selected ``K8S_VERSION``: ``$KUBEBUILDER_ASSETS`` may hold
    any release, and the flags a control-plane component accepts depend on what it is.
    """
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v(\d+)\.(\d+)\.", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_etcd(log: Log, install: bool = True, version: str | None = None) -> Path:
    """etcd: ``$KUBEBUILDER_ASSETS``, the release's cache (module builds), else Debian's (1.20 only).

    Debian's etcd-server is 3.4, which a current kube-apiserver still talks to but which is outside its
    supported line, so for a current release only the etcd built next to the apiserver counts.
    """
    version = version or k8s_version()
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb and _executable(Path(kb) / "etcd"):
        return Path(kb) / "etcd"
    if not is_legacy(version):
        built = k8s_cache_dir(version) / "bin" / "etcd"
        if _executable(built) or not install:
            if not _executable(built):
                raise AssetError(f"etcd not found in {built.parent}; run `make assets` or set KUBEBUILDER_ASSETS")
            return built
        build_from_modules(version, log)
        return built
    for candidate in (shutil.which("etcd"), "/usr/bin/etcd"):
        if candidate and _executable(Path(candidate)):
            return Path(candidate)
    if not install:
        raise AssetError("etcd not found: install Debian's etcd-server or set KUBEBUILDER_ASSETS")
    log("etcd not found; installing Debian's etcd-server")
    apt_install(["etcd-server"], log)
    return Path("/usr/bin/etcd")


def find_kubectl(log: Log, install: bool = True, version: str | None = None) -> Path:
    """kubectl: ``$KUBEBUILDER_ASSETS``, the release's cache, then ``PATH`` (legacy) or a build.

    For a current release the kubectl built with it comes first: kubectl's supported skew is one minor,
    and the tests' ``kubectl apply`` should exercise the release under test, not whatever is on PATH.
    """
    version = version or k8s_version()
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb and _executable(Path(kb) / "kubectl"):
        return Path(kb) / "kubectl"
    built = k8s_cache_dir(version) / "bin" / "kubectl"
    if _executable(built):
        return built
    if not is_legacy(version):
        if not install:
            raise AssetError(f"kubectl not found in {built.parent}; run `make assets` or set KUBEBUILDER_ASSETS")
        build_from_modules(version, log)
        return built
    on_path = shutil.which("kubectl")
    if on_path and (kubectl_version(Path(on_path)) or (0, 0)) >= MIN_KUBECTL:
        return Path(on_path)
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
    """Locate every control-plane binary of the selected release, building them if allowed."""
    version = k8s_version()
    ensure_openssl(log, install=build)
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    if kb:
        folder = Path(kb)
        apiserver = folder / "kube-apiserver"
        if not _executable(apiserver):
            raise AssetError(f"KUBEBUILDER_ASSETS={kb} holds no executable kube-apiserver")
        found = folder / "kube-controller-manager"
        kcm = found if _executable(found) else None
        if kcm is None:
            log(
                "KUBEBUILDER_ASSETS has no kube-controller-manager: garbage collection and namespace "
                "deletion will not run"
            )
        etcd = find_etcd(log, install=build, version=version)
        kubectl = find_kubectl(log, install=build, version=version)
        return Assets(etcd, apiserver, kubectl, kcm, f"KUBEBUILDER_ASSETS={kb}")
    if minor_of(version) not in SUPPORTED_MINORS and version != LEGACY_K8S_VERSION:
        log(f"Kubernetes {version} is outside the support window {_window()} (ADR 0012); running it anyway")
    bindir = k8s_cache_dir(version) / "bin"
    wanted = ("kube-apiserver", "kube-controller-manager")
    if not all(_executable(bindir / b) for b in wanted):
        if not build:
            raise AssetError(
                f"kube-apiserver {version} not found in {bindir}; run `make assets` "
                "(`cells-dev cluster build`) or set KUBEBUILDER_ASSETS"
            )
        if is_legacy(version):
            build_kubernetes_legacy(version, log)
        else:
            build_from_modules(version, log)
    etcd = find_etcd(log, install=build, version=version)
    kubectl = find_kubectl(log, install=build, version=version)
    return Assets(etcd, bindir / "kube-apiserver", kubectl, bindir / "kube-controller-manager", str(bindir))


def _window() -> str:
    return ", ".join(f"{a}.{b}" for a, b in SUPPORTED_MINORS)


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


def build_kubernetes_legacy(version: str = LEGACY_K8S_VERSION, log: Log = _stderr) -> Path:
    """Build kube-apiserver and kube-controller-manager 1.20.2 into the cache (about 6 minutes).

    Only the release bookworm's source package holds can be built this way.
    """
    if version != LEGACY_K8S_VERSION:
        raise AssetError(
            f"Kubernetes {version} predates the Go-module build (>= 1.27) and is not {LEGACY_K8S_VERSION}, "
            "the only old release Debian's sources provide; point KUBEBUILDER_ASSETS at envtest binaries"
        )
    K8S_VERSION = version  # the name the steps below have always used
    target = k8s_cache_dir(version)
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


# --------------------------------------------------------------------------- Go-module build
@dataclass(frozen=True)
class GoToolchain:
    go: Path
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        return "go" + ".".join(map(str, self.version))


def _parse_go_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _go_candidates() -> list[Path]:
    found = [shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"]
    found += sorted(str(p) for p in Path("/usr/lib").glob("go-1.*/bin/go"))
    seen: list[Path] = []
    for c in found:
        if c and _executable(Path(c)) and Path(c).resolve() not in [s.resolve() for s in seen]:
            seen.append(Path(c))
    return seen


def _toolchains() -> list[GoToolchain]:
    out = []
    for go in _go_candidates():
        try:
            text = subprocess.run(
                [str(go), "env", "GOVERSION"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "GOTOOLCHAIN": "local"},
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if v := _parse_go_version(text):
            out.append(GoToolchain(go, v))
    return sorted(out, key=lambda t: t.version, reverse=True)


def find_go(minimum: tuple[int, int, int], log: Log = _stderr, install: bool = True) -> GoToolchain:
    """The newest Go on this machine that is at least ``minimum`` (the release's ``go`` directive).

    ``PATH`` and ``/usr/local/go`` first, then Debian's ``golang-go``. ``GOTOOLCHAIN=local`` everywhere:
    Go's automatic toolchain download is not a Debian package and is not what the README promises.
    """
    for tc in _toolchains():
        if tc.version >= minimum:
            return tc
    if install:
        log(f"no Go >= {'.'.join(map(str, minimum))} found; trying Debian's golang-go")
        with contextlib.suppress(AssetError):
            apt_install(["golang-go"], log)
        for tc in _toolchains():
            if tc.version >= minimum:
                return tc
    have = ", ".join(f"{t.go} ({t.label})" for t in _toolchains()) or "none"
    raise AssetError(
        f"building Kubernetes needs Go >= {'.'.join(map(str, minimum))}; found {have}. Install a newer Go on "
        "PATH, or set KUBEBUILDER_ASSETS to envtest binaries, or K8S_VERSION to a release your Go can build"
    )


def go_root() -> Path:
    """Module downloads and GOPATH of the build, shared by every release (``rm -rf`` the cache root to reclaim)."""
    return cache_root() / "go"


def _go_env(tc: GoToolchain, gocache: Path) -> dict[str, str]:
    root = go_root()
    return {
        **os.environ,
        "PATH": f"{tc.go.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "GOTOOLCHAIN": "local",
        "GOMODCACHE": str(root / "mod"),
        "GOPATH": str(root / "path"),
        "GOCACHE": str(gocache),
        "GOFLAGS": "-buildvcs=false",
        "CGO_ENABLED": "0",
        "GOWORK": "off",
        "GO111MODULE": "on",
    }


def _lower_priority() -> None:  # pragma: no cover - runs in the child
    """A build shares 2 cores with tests and other work: it yields the CPU to anything interactive."""
    with contextlib.suppress(OSError):
        os.nice(19)


def _go_json(go_cmd: list[str], env: dict[str, str], log: Log, cwd: Path) -> dict:
    import json

    return json.loads(_run(go_cmd, log, env=env, cwd=cwd).stdout)


def staging_replacements(gomod: str, version: str) -> dict[str, str]:
    """``k8s.io/X => ./staging/src/k8s.io/X`` lines of kubernetes' go.mod, mapped to ``k8s.io/X v0.Y.Z``.

    ``k8s.io/kubernetes`` requires its staging modules at ``v0.0.0`` and replaces them with folders of
    its own repository; replace directives of a dependency are ignored, so a consumer must say which
    published version each one is. Each is published as ``v0.<minor>.<patch>`` of the release.
    """
    staged = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\1\s*$", gomod, re.M)
    if not staged:
        raise AssetError("kubernetes go.mod lists no staging replacements; is this a kubernetes release?")
    _, minor, patch = version.split(".")
    return {module: f"v0.{minor}.{patch}" for module in staged}


def wrapper_gomod(version: str, go_directive: str, replacements: dict[str, str]) -> str:
    """The generated module that builds one release's commands (see :func:`staging_replacements`)."""
    lines = [
        "// Generated by cells_devtools.devcluster.assets: builds the Kubernetes control plane from Go modules.",
        "module cells.dev/k8s-control-plane",
        "",
        f"go {go_directive}",
        "",
        f"require k8s.io/kubernetes v{version}",
        "",
        "replace (",
        *(f"\t{m} => {m} {v}" for m, v in sorted(replacements.items())),
        ")",
        "",
    ]
    return "\n".join(lines)


def etcd_line(dependencies_yaml: str) -> str:
    """The etcd version a release is tested with, from its ``build/dependencies.yaml``."""
    m = re.search(r'-\s*name:\s*"?etcd"?\s*\n\s*version:\s*"?v?(\d+\.\d+\.\d+)', dependencies_yaml)
    if not m:
        raise AssetError("build/dependencies.yaml names no etcd version")
    return m.group(1)


def newest_patch(versions: list[str], floor: str) -> str:
    """The newest released ``vX.Y.Z`` with the same X.Y as ``floor`` and not older than it."""
    want = tuple(int(x) for x in floor.split("."))
    best = want
    for v in versions:
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", v)
        if m:
            t = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            if t[:2] == want[:2] and t > best:
                best = t
    return ".".join(map(str, best))


def _ldflags(version: str, build_date: str) -> str:
    """The version stamps ``hack/lib/version.sh`` sets, so ``/version`` and ``kubectl version`` tell the truth."""
    major, minor, _ = version.split(".")
    values = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def _stream(cmd: list[str], env: dict[str, str], cwd: Path, log: Log, started: float, what: str) -> None:
    """Run a build step, logging every 100th package ``go build -v`` reports and the tail on failure."""
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_lower_priority,  # no threads are running here
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for count, raw in enumerate(proc.stdout, start=1):
        line = raw.rstrip()
        tail = [*tail[-60:], line]
        if count % 100 == 0:
            log(f"  {what}: {count} packages, now {line}  [{int(time.monotonic() - started)}s]")
    if proc.wait() != 0:
        raise AssetError(f"{what} build failed:\n" + "\n".join(tail))


def _go_build(go: Path, packages: list[str], output: str, ldflags: str) -> list[str]:
    """``go build`` as both builds run it: module mode, no local paths in the binaries, every package
    reported (``-v``) so that :func:`_stream` can show progress; ``output`` ending in ``/`` is a folder."""
    return [str(go), "build", "-mod=mod", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", output, *packages]


def build_from_modules(version: str, log: Log = _stderr) -> Path:
    """Build etcd, kube-apiserver, kube-controller-manager and kubectl of ``version`` into its cache.

    Idempotent and serialised per release by a file lock; what was built, with which Go and how long
    it took, is written to ``bin/BUILD.json``.
    """
    import json

    target = k8s_cache_dir(version)
    bindir = target / "bin"
    wanted = ("etcd", *KUBERNETES_BINARIES)
    with _build_lock(target / "build.lock", log):
        if all(_executable(bindir / b) for b in wanted):
            return bindir
        started = time.monotonic()
        log(f"building Kubernetes {version} control plane from Go modules into {target} (once per machine)")
        bootstrap = find_go((1, 21, 0), log)  # enough to download; the release's own minimum follows
        gocache = target / "gocache"
        env = _go_env(bootstrap, gocache)
        work = target / "build"
        work.mkdir(parents=True, exist_ok=True)

        log(f"step 1/4: k8s.io/kubernetes@v{version} from the module proxy")
        info = _go_json(
            [str(bootstrap.go), "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"], env, log, work
        )
        if info.get("Error"):
            raise AssetError(f"k8s.io/kubernetes@v{version}: {info['Error']}")
        gomod = Path(info["GoMod"]).read_text()
        directive = re.search(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", gomod, re.M)
        go_directive = directive.group(1) if directive else "1.21"
        tc = find_go(_parse_go_version("go" + go_directive) or (1, 21, 0), log)
        env = _go_env(tc, gocache)
        log(f"using {tc.go} ({tc.label}); the release needs go >= {go_directive}")
        build_date = json.loads(Path(info["Info"]).read_text()).get("Time", "1970-01-01T00:00:00Z")

        kdir = work / "kubernetes"
        kdir.mkdir(exist_ok=True)
        (kdir / "go.mod").write_text(wrapper_gomod(version, go_directive, staging_replacements(gomod, version)))
        etcd_version = ETCD_FOR.get(version)
        if etcd_version is None:
            line = etcd_line((Path(info["Dir"]) / "build" / "dependencies.yaml").read_text())
            listed = _run(
                [str(tc.go), "list", "-m", "-versions", "go.etcd.io/etcd/server/v3"], log, env=env, cwd=work
            ).stdout.split()
            etcd_version = newest_patch(listed[1:], line)
        edir = work / "etcd"
        edir.mkdir(exist_ok=True)
        (edir / "go.mod").write_text(
            "// Generated by cells_devtools.devcluster.assets: etcd of the release's line.\n"
            f"module cells.dev/etcd\n\ngo {go_directive}\n\nrequire go.etcd.io/etcd/server/v3 v{etcd_version}\n"
        )

        out = work / "out"
        out.mkdir(exist_ok=True)
        log(f"step 2/4: go build etcd v{etcd_version}")
        etcd = _go_build(tc.go, ["go.etcd.io/etcd/server/v3"], str(out / "etcd"), "-s -w")
        _stream(etcd, env, edir, log, started, "etcd")
        log("step 3/4: go build kube-apiserver kube-controller-manager kubectl (the long one)")
        commands = [f"k8s.io/kubernetes/cmd/{b}" for b in KUBERNETES_BINARIES]
        kubernetes = _go_build(tc.go, commands, str(out) + "/", _ldflags(version, build_date))
        _stream(kubernetes, env, kdir, log, started, "kubernetes")
        log("step 4/4: installing into the cache")
        bindir.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            if not _executable(out / name):
                raise AssetError(f"the build finished but produced no {name} in {out}")
            tmp = bindir / f".{name}.tmp"
            shutil.copy2(out / name, tmp)
            tmp.replace(bindir / name)
        seconds = int(time.monotonic() - started)
        (bindir / "BUILD.json").write_text(
            json.dumps(
                {
                    "kubernetes": version,
                    "etcd": etcd_version,
                    "go": tc.label,
                    "seconds": seconds,
                    "cores": os.cpu_count(),
                },
                indent=2,
            )
            + "\n"
        )
        log(f"built in {seconds}s; removing the build cache (module downloads stay in {go_root() / 'mod'})")
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(gocache, ignore_errors=True)
        return bindir

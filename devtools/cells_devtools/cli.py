"""``cells-dev``: developer tooling around the operator, kept out of its runtime package and images.

Subcommands:
  cluster up     start the local control plane, write <dir>/kubeconfig, print the export line
  cluster down   stop it
  cluster build  only find or build the control-plane binaries (once per machine)
  cluster status say whether it runs and where
  demo           CRDs, the operator, the samples and the data plane on the local control plane (``make demo``)
  mirror         write the operator's ConfigMaps to files, as a kubelet does (the data plane outside Kubernetes)

``demo`` and ``mirror`` take their own options (``cells-dev demo --help``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .devcluster.assets import AssetError, find_assets
from .devcluster.cluster import ClusterError, LocalCluster


def _cluster(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    try:
        if args.action == "build":
            assets = find_assets(build=True)
            print(
                f"etcd: {assets.etcd}\nkube-apiserver: {assets.kube_apiserver}\n"
                f"kube-controller-manager: {assets.kube_controller_manager}\nkubectl: {assets.kubectl}"
            )
            return 0
        if args.action == "status":
            if (workdir / "state.json").exists() and LocalCluster.attach(workdir).alive():
                cluster = LocalCluster.attach(workdir)
                print(f"running at {cluster.server}; export KUBECONFIG={cluster.kubeconfig}")
                return 0
            print(f"no local control plane running from {workdir}")
            return 1
        if args.action == "down":
            if not (workdir / "state.json").exists():
                print(f"no local control plane running from {workdir}")
                return 0
            LocalCluster.attach(workdir).stop()
            print(f"stopped the local control plane in {workdir}")
            return 0
        # up
        if (workdir / "state.json").exists():
            existing = LocalCluster.attach(workdir)
            if existing.alive() and existing.ready():
                print(f"already running at {existing.server}", file=sys.stderr)
                print(f"export KUBECONFIG={existing.kubeconfig}")
                return 0
            existing.stop()
        for stale in ("etcd", "pki", "logs"):
            target = workdir / stale
            if target.exists():
                shutil.rmtree(target)
        cluster = LocalCluster.create(workdir)
        cluster.start()
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    except (AssetError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _demo(argv: list[str]) -> int:
    from . import demo

    return demo.main(argv)


def _mirror(argv: list[str]) -> int:
    from . import mirror

    mirror.main(argv)
    return 0


# Subcommands with their own parsers: everything after the name is theirs.
DELEGATED: dict[str, Callable[[list[str]], int]] = {"demo": _demo, "mirror": _mirror}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cells-dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="the local control plane (etcd + kube-apiserver)")
    cluster.add_argument("action", choices=("up", "down", "build", "status"))
    cluster.add_argument("--dir", default=".cluster", help="working folder (default .cluster)")
    cluster.set_defaults(func=_cluster)
    sub.add_parser("demo", help="the operator, samples and data plane on the local control plane", add_help=False)
    sub.add_parser("mirror", help="mirror the operator's ConfigMaps into files", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        return DELEGATED[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

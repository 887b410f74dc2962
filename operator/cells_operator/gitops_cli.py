"""``cells-operator validate|render|route`` and the ``kubectl cells`` plugin: the thin shell of GitOps reviews.

Reads files, folders and stdin, the cluster's published ConfigMaps with ``--from-cluster``, and prints. All
decisions are made by :mod:`cells_operator.gitops` and :mod:`cells_operator.route_explain`.

Exit codes (every command): 0 valid / routed, 1 invalid / not routed, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import gitops
from .config import OperatorConfig
from .gitops import InputError, Inputs, Notice, Published

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

VALIDATE_EXAMPLES = """\
examples:
  %(prog)s -f deploy/samples/                       # files and folders (recursively *.yaml, *.yml, *.json)
  kubectl kustomize deploy/overlays/production | %(prog)s -f -
  %(prog)s -f cells/ --records topology.json        # include what is already allocated and retired
  %(prog)s -f cells/ --from-cluster -o json         # the records of the current kubeconfig's cluster
  %(prog)s -f cells/ --junit report.xml             # JUnit XML for the CI's test report

exit status: 0 valid, 1 invalid, 2 unreadable input
"""
RENDER_EXAMPLES = """\
examples:
  %(prog)s -f deploy/samples/ -n cells > rendered.yaml
  kubectl get configmap cells-topology cells-router-rules -n cells -o yaml > published.yaml
  kubectl kustomize deploy/samples | %(prog)s -f - --records published.yaml

Prints the ConfigMaps the operator would publish (YAML), byte for byte, given the previous records.
A new object's uid (assigned by the API server) is rendered as new:<name>.
exit status: 0 valid, 1 some object invalid (what the operator would publish is still printed), 2 unreadable
"""
ROUTE_EXAMPLES = """\
examples:
  %(prog)s --rules rendered.yaml --records rendered.yaml /api/v4/cells/2/projects
  %(prog)s --rules session_token.json --records topology.json --cookie _gitlab_session=cell-2-abc /
  %(prog)s --rules rendered.yaml --records rendered.yaml --header 'X-Cell: 3' -o json /

exit status: 0 a cell answers, 1 no rule matches or no cell answers, 2 unreadable input
"""


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([Notice(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from exc


def _manifest_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        return [str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in MANIFEST_SUFFIXES]
    return [path]


def load_inputs(paths: Sequence[str], namespace: str, stdin: TextIO) -> Inputs:
    """Every manifest of ``paths``; unreadable files become notices (exit 2), never a traceback."""
    inputs = Inputs()
    for path in paths:
        if path != "-" and not Path(path).exists():
            inputs.errors.append(Notice(path, "no such file or folder"))
            continue
        for file in _manifest_files(path):
            origin = "<stdin>" if file == "-" else file
            try:
                text = _read(file, stdin)
            except InputError as exc:
                inputs.errors += exc.notices
                continue
            except OSError as exc:
                inputs.errors.append(Notice(origin, f"cannot read: {exc.strerror or exc}"))
                continue
            inputs.extend(gitops.read_manifests(text, origin, namespace))
    return inputs


def read_cluster(namespaces: Sequence[str], config: OperatorConfig) -> dict[str, Published]:
    """The published ConfigMaps of each namespace, through the current kubeconfig (read only)."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from .kube import load_api_client

    try:
        api = CoreV1Api(load_api_client())
    except Exception as exc:  # kubeconfig missing or unusable: say so, as kubectl would
        raise InputError([Notice("--from-cluster", f"no usable kubeconfig: {exc}")]) from exc
    out: dict[str, Published] = {}
    for ns in namespaces:
        published = Published()
        for name in (config.topology_configmap, config.router_configmap):
            source = f"--from-cluster configmap {ns}/{name}"
            try:
                cm = api.read_namespaced_config_map(name, ns)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise InputError([Notice(source, f"cannot read: {exc.status} {exc.reason}")]) from exc
            except Exception as exc:  # connection refused, TLS, timeouts
                raise InputError([Notice(source, f"cannot read: {exc}")]) from exc
            obj = api.api_client.sanitize_for_serialization(cm)
            published.merge(gitops.published_from_configmap(obj, source))
        out[ns] = published
    return out


def _config(args: argparse.Namespace) -> OperatorConfig:
    """The names and the rules dialect the operator publishes with: same defaults and environment as
    ``cells-operator run`` (``CELLS_ROUTER_DIALECT``), so render shows what the operator would publish."""
    return dataclasses.replace(
        OperatorConfig.from_env(os.environ),
        topology_configmap=args.topology_configmap,
        router_configmap=args.router_configmap,
    )


def _review(args: argparse.Namespace, stdin: TextIO) -> gitops.ChangeReview:
    if "-" in args.filename and "-" in (args.records or ()):
        raise InputError([Notice("<stdin>", "-f - and --records - cannot both read stdin: give one of them a file")])
    inputs = load_inputs(args.filename, args.namespace, stdin)
    if inputs.errors:
        raise InputError(inputs.errors)
    config = _config(args)
    given: dict[str, Published] = {}
    for path in args.records or ():
        origin = "<stdin>" if path == "-" else path
        try:
            text = _read(path, stdin)
        except OSError as exc:
            raise InputError([Notice(origin, f"cannot read: {exc.strerror or exc}")]) from exc
        for ns, read in gitops.read_published(text, origin).items():
            given.setdefault(ns, Published()).merge(read)
    published = gitops.published_for(inputs.namespaces, given)
    if args.from_cluster:
        for ns, from_cluster in read_cluster(inputs.namespaces, config).items():
            published[ns].merge(from_cluster)
    return gitops.review_change(inputs, published, config, prune=args.prune)


def _write_junit(path: str | None, text: str) -> bool:
    if not path:
        return True
    try:
        Path(path).write_text(text)
    except OSError as exc:
        print(f"error: cannot write --junit {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def run_validate(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        result = _review(args, stdin)
    except InputError as exc:
        _write_junit(args.junit, gitops.junit_report(None, exc))
        if args.output == "json":
            print(json.dumps(gitops.json_report(None, exc), indent=2), file=stdout)
        else:
            print(gitops.errors_report(exc), end="", file=stdout)
        return EXIT_UNREADABLE
    written = _write_junit(args.junit, gitops.junit_report(result))
    if args.output == "json":
        print(json.dumps(gitops.json_report(result), indent=2), file=stdout)
    else:
        print(gitops.human_report(result), end="", file=stdout)
    if not written:
        return EXIT_UNREADABLE
    return EXIT_OK if result.valid else EXIT_INVALID


def run_render(
    args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        result = _review(args, stdin)
    except InputError as exc:
        print(gitops.errors_report(exc), end="", file=stderr)
        return EXIT_UNREADABLE
    print(gitops.render_yaml(result.plans), end="", file=stdout)
    if not result.valid:
        invalid = [r for r in result.results if not r.valid]
        print("".join(f"{r.source}: {r.refusal}\n" for r in invalid), end="", file=stderr)
        print(
            f"{len(invalid)} object(s) invalid: the output is what the operator would publish "
            "(they are left out, or keep their last published version)",
            file=stderr,
        )
        return EXIT_INVALID
    return EXIT_OK


def run_route(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    from . import route_explain as rx

    try:
        headers = rx.parse_pairs(args.header, "--header")
        cookies = rx.parse_pairs(args.cookie, "--cookie")
    except ValueError as exc:
        print(f"error: {exc}", file=stdout)
        return EXIT_UNREADABLE
    try:
        rules_text = _read(args.rules, stdin)
        records_text = rules_text if args.records == args.rules else _read(args.records, stdin)
        rules = rx.read_rules(rules_text, args.rules, args.ruleset, args.namespace)
        topology = rx.read_records(records_text, args.records, args.namespace)
    except InputError as exc:
        print(gitops.errors_report(exc), end="", file=stdout)
        return EXIT_UNREADABLE
    except OSError as exc:
        print(f"error: cannot read: {exc}", file=stdout)
        return EXIT_UNREADABLE
    explanation = rx.explain(rules, topology, args.path, headers, cookies)
    if args.output == "json":
        print(json.dumps(explanation.as_json(), indent=2), file=stdout)
    else:
        print(rx.human(explanation), end="", file=stdout)
    return EXIT_OK if explanation.routed else EXIT_INVALID


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A reader that stops early (``| head``) is not an error worth a traceback."""

    def call(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except BrokenPipeError:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
            return EXIT_INVALID

    return call


def _header_pair(value: str) -> str:
    """``--header 'X-Cell: 3'`` (curl's form) is accepted as well as ``X-Cell=3``."""
    if "=" not in value and ":" in value:
        name, _, rest = value.partition(":")
        return f"{name.strip()}={rest.strip()}"
    return value


def _add_inputs(p: argparse.ArgumentParser) -> None:
    defaults = OperatorConfig()
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="file, folder (recursively *.yaml, *.yml, *.json) or - for stdin (kustomize/helm output); repeatable",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default=gitops.DEFAULT_NAMESPACE,
        help="namespace of objects that name none (default: default, as kubectl without a context namespace)",
    )
    previous = p.add_mutually_exclusive_group()
    previous.add_argument(
        "--records",
        action="append",
        metavar="FILE",
        help="previously published records: a topology.json, or the ConfigMaps as YAML "
        "(kubectl get configmap cells-topology cells-router-rules -o yaml); repeatable",
    )
    previous.add_argument(
        "--from-cluster",
        action="store_true",
        help="read the published ConfigMaps of each namespace through the current kubeconfig (read only)",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="published Cells and RoutingRules the input does not declare are deleted (the input is the whole "
        "namespace, synced with pruning); default: kept as published",
    )
    p.add_argument(
        "--topology-configmap", default=defaults.topology_configmap, help="records ConfigMap name (default %(default)s)"
    )
    p.add_argument(
        "--router-configmap", default=defaults.router_configmap, help="router ConfigMap name (default %(default)s)"
    )


def add_subparsers(sub: Any) -> None:
    """Add ``validate``, ``render`` and ``route`` to a parser's subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    validate = sub.add_parser(
        "validate",
        help="check Cells and RoutingRules offline, as admission and the operator would",
        description="Check every Cell and RoutingRule exactly as the admission webhook and the operator's planner "
        "would (same reasons, same messages), including cross-object checks, without a cluster.",
        epilog=VALIDATE_EXAMPLES,
        formatter_class=fmt,
    )
    _add_inputs(validate)
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text")
    validate.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    validate.set_defaults(func=_guarded(run_validate))

    render = sub.add_parser(
        "render",
        help="print the ConfigMaps the operator would publish",
        description="Print the records and router ConfigMaps the operator would publish for these manifests, "
        "deterministically given the previous records, so a pull request's diff shows the routing change.",
        epilog=RENDER_EXAMPLES,
        formatter_class=fmt,
    )
    _add_inputs(render)
    render.set_defaults(func=_guarded(run_render))

    route = sub.add_parser(
        "route",
        help="explain which rule and which cell a request is routed to",
        description="Evaluate a request with the reference router's own code: which rule matches (position, "
        "name, captured groups), the classify request it makes and which cell answers, or why nothing matches.",
        epilog=ROUTE_EXAMPLES,
        formatter_class=fmt,
    )
    route.add_argument(
        "--rules", required=True, metavar="FILE", help="a <ruleset>.json, or the router ConfigMap YAML (- for stdin)"
    )
    route.add_argument(
        "--records", required=True, metavar="FILE", help="a topology.json, or the records ConfigMap YAML"
    )
    route.add_argument("--ruleset", help="which ruleset of the router ConfigMap (default: its only one)")
    route.add_argument("-n", "--namespace", help="which namespace's ConfigMaps, when the files hold several")
    route.add_argument("--cookie", action="append", metavar="NAME=VALUE", help="a cookie sent (repeatable)")
    route.add_argument(
        "--header", action="append", type=_header_pair, metavar="NAME=VALUE", help="a header sent (repeatable)"
    )
    route.add_argument("-o", "--output", choices=("text", "json"), default="text")
    route.add_argument("path", help="the request path, e.g. /api/v4/projects")
    route.set_defaults(func=_guarded(run_route))


def build_kubectl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl cells",
        description="Offline GitOps reviews of cells.dev Cells and RoutingRules (the cells-operator kubectl plugin).",
        epilog="examples:\n  kubectl cells validate -f deploy/samples/\n  kubectl cells render -f deploy/samples/\n"
        "  kubectl cells route --rules rendered.yaml --records rendered.yaml /",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    return parser


def kubectl_main(argv: list[str] | None = None) -> int:
    """``kubectl-cells``: kubectl runs it for ``kubectl cells ...`` (the plugin convention)."""
    args = build_kubectl_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(kubectl_main())

"""The `kurable` command: run the operator, a local dev cluster, inspect runs, command entities."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import UserError

# Each command's module is imported only when that command runs: they pull in kopf,
# the Kubernetes and etcd clients, pydantic models and CEL (~2 s), which `--help` and
# argument errors must not wait for.


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """`kurable.cli.<module>.<function>`, imported when called."""

    def run(args: argparse.Namespace) -> int:
        target: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"{__name__}.{module}"), function
        )
        return target(args)

    return run


class _Version(argparse.Action):
    """`--version`: the installed package's version, read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("kurable")
        except PackageNotFoundError:
            found = "unknown (not installed as a package)"
        print(f"kurable {found}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kurable", description="Durable workflows and entities on Kubernetes."
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    op = sub.add_parser("operator", help="run the operator against the current kubeconfig")
    op.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (glob patterns allowed; repeatable)",
    )
    op.add_argument("--etcd-endpoints", help="host:port[,host:port] ($KURABLE_ETCD_ENDPOINTS)")
    op.add_argument("--etcd-prefix", help="key prefix in etcd ($KURABLE_ETCD_PREFIX, /kurable/)")
    op.add_argument(
        "--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    op.add_argument(
        "--lease-ttl",
        type=int,
        default=10,
        help="seconds the executor's etcd lease outlives a silent operator",
    )
    op.add_argument(
        "--executor-id",
        help="a name at most one live operator holds, e.g. the pod name "
        "($KURABLE_EXECUTOR_ID); a restart under the same name resumes runs at once",
    )
    op.add_argument(
        "--peering",
        metavar="NAME",
        help="join kopf's peering NAME (a ClusterKopfPeering, or a KopfPeering in each "
        "watched namespace): one replica is active, the others stand by; default: standalone",
    )
    op.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority, the highest live one is active (default with --peering: "
        "random, since same-priority peers all pause)",
    )
    op.add_argument(
        "--resync-interval",
        type=float,
        default=float(os.environ.get("KURABLE_RESYNC_INTERVAL", 30)),
        metavar="SECONDS",
        help="list the Workflows this often, so that runs keep moving when kopf's watch goes "
        "silent, adopt runs no daemon drives, and fail the liveness probe when the watch "
        "missed something; 0: never ($KURABLE_RESYNC_INTERVAL, 30)",
    )
    op.add_argument(
        "--api-timeout",
        type=float,
        default=float(os.environ.get("KURABLE_API_TIMEOUT", 30)),
        metavar="SECONDS",
        help="give up a request to the API server that connects or answers no faster "
        "(a silent keep-alive connection) and retry on a new one ($KURABLE_API_TIMEOUT, 30)",
    )
    op.add_argument(
        "--max-value-bytes",
        type=int,
        default=int(os.environ.get("KURABLE_MAX_VALUE_BYTES", 1024 * 1024)),
        metavar="BYTES",
        help="the largest value (step output, signal payload, input, entity event or reply, "
        "as JSON) Kurable journals; a larger one is refused before it is written "
        "($KURABLE_MAX_VALUE_BYTES, 1048576)",
    )
    op.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    op.set_defaults(func=_lazy("_operator", "run"))

    dev = sub.add_parser("dev", help="a local control plane plus the operator, in the foreground")
    dev.add_argument(
        "--state-dir",
        default=".kurable/dev",
        help="where certificates, etcd data, kubeconfig and logs live",
    )
    dev.add_argument("--no-operator", action="store_true", help="start only the control plane")
    dev.set_defaults(func=_lazy("_dev", "run"))

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--output", "-o", default="crds", help="directory to write into")
    crds.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if the directory differs from the models",
    )
    crds.set_defaults(func=_lazy("_inspect", "crds"))

    history = sub.add_parser(
        "history", help="print a run's whole journal, or an entity's event log, from etcd"
    )
    history.add_argument("ref", metavar="workflow/NAME|entity/NAME")
    history.add_argument("--namespace", "-n", default=None)
    history.add_argument("--output", "-o", choices=["table", "json"], default="table")
    history.set_defaults(func=_lazy("_inspect", "history"))

    watch = sub.add_parser("watch", help="follow a run's steps until it finishes")
    watch.add_argument("ref", metavar="workflow/NAME")
    watch.add_argument("--namespace", "-n", default=None)
    watch.add_argument("--timeout", type=float, default=600.0, help="give up after seconds")
    watch.set_defaults(func=_lazy("_inspect", "watch"))

    command = sub.add_parser(
        "command",
        help="send a command to an entity; print its reply as JSON (rejected: exit 1; "
        "--id reused for another command or input: exit 3)",
    )
    command.add_argument("ref", metavar="entity/NAME")
    command.add_argument("entity_command", metavar="COMMAND", help="the command's name")
    command.add_argument(
        "--input", "-i", help="the command's input as JSON, e.g. '{\"amount\":10}'"
    )
    command.add_argument(
        "--id",
        help="the command id: sending the same command and input with the same id again "
        "returns the first reply and changes nothing; the same id with another command or "
        "input is refused (exit 3) (default: a new id each time)",
    )
    command.add_argument("--namespace", "-n", default=None)
    command.set_defaults(func=_lazy("_entities", "command"))
    return parser


BROKEN_PIPE_EXIT = 141
"""Exit status when the reader of stdout went away (`kurable history ... | head`): 128 +
SIGPIPE, what a shell reports for a command killed by it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` (default: sys.argv[1:]); its exit status."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here when the output was buffered
    except BrokenPipeError:
        # Python's own recipe (docs: "Note on SIGPIPE"): point stdout at devnull, so that
        # the flush at exit does not complain too, and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as e:
        print(f"kurable: {e}", file=sys.stderr)
        return 2

"""The `kurable` command: run the operator and the endpoint, a local dev cluster, inspect runs,
start and signal runs and command entities (through the endpoint), trigger and backfill
schedules, publish to topics."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._client import add_endpoint_flags
from ._errors import UserError
from ._etcd import add_etcd_flags
from ._output import DATA_FORMATS

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
    add_etcd_flags(op)
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
        "watched namespace): one replica is active and drives every run, the others stand "
        "by; default: every operator sharing the etcd prefix is active and drives its share",
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
        "missed something; with many runs, less often (at most 100 Workflows listed per "
        "second on average); 0: never ($KURABLE_RESYNC_INTERVAL, 30)",
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
    op.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=os.environ.get("KURABLE_METRICS_ADDRESS") or None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:9090 "
        "($KURABLE_METRICS_ADDRESS; default: not served)",
    )
    op.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where this process keeps its own copies of the Views it serves, one SQLite file "
        "each ($KURABLE_STATE_DIR; default: a new temporary directory)",
    )
    op.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    op.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default=os.environ.get("KURABLE_LOG_FORMAT", "plain"),
        help="plain text lines, or one JSON object per line, a line about a Workflow, "
        "Entity, ... naming it in `object` ($KURABLE_LOG_FORMAT, plain)",
    )
    op.set_defaults(
        func=_lazy("_operator", "run"), kubectl_flags=("kubeconfig", "context", "namespace")
    )

    dev = sub.add_parser(
        "dev", help="a local control plane plus the operator and the endpoint, in the foreground"
    )
    dev.add_argument(
        "--state-dir",
        default=".kurable/dev",
        metavar="DIR",
        help="where certificates, etcd data, kubeconfig, logs and the env file live "
        "(default: .kurable/dev)",
    )
    dev.add_argument(
        "--no-operator",
        action="store_true",
        help="start only the control plane and the endpoint",
    )
    dev.set_defaults(func=_lazy("_dev", "run"), kubectl_flags=())  # its own cluster

    endpoint = sub.add_parser(
        "endpoint",
        help="serve the HTTP API (workflows, entities) authorised by Kubernetes RBAC",
    )
    endpoint.add_argument(
        "--bind",
        default=os.environ.get("KURABLE_ENDPOINT_BIND", "127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="where to listen ($KURABLE_ENDPOINT_BIND, 127.0.0.1:8080)",
    )
    add_etcd_flags(endpoint)
    endpoint.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(os.environ.get("KURABLE_MAX_BODY_BYTES", 1024 * 1024)),
        metavar="BYTES",
        help="request bodies larger than this get 413 unread ($KURABLE_MAX_BODY_BYTES, 1048576)",
    )
    endpoint.add_argument(
        "--max-value-bytes",
        type=int,
        default=int(os.environ.get("KURABLE_MAX_VALUE_BYTES", 1024 * 1024)),
        metavar="BYTES",
        help="the largest value an entity command may journal, as the operator's "
        "($KURABLE_MAX_VALUE_BYTES, 1048576)",
    )
    endpoint.add_argument(
        "--token-cache-seconds",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="reuse a TokenReview answer this long (keyed by the token's hash); 0: never",
    )
    endpoint.add_argument(
        "--access-cache-seconds",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="reuse an allowed SubjectAccessReview answer this long (keyed by user, groups, "
        "verb, resource, namespace and name; as kube-apiserver's webhook authorizer); "
        "denials are never reused; 0: never",
    )
    endpoint.add_argument(
        "--api-timeout",
        type=float,
        default=float(os.environ.get("KURABLE_API_TIMEOUT", 30)),
        metavar="SECONDS",
        help="give up a request to the API server after this ($KURABLE_API_TIMEOUT, 30)",
    )
    endpoint.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve requests without a token as system:anonymous (still authorised by "
        "RBAC); for local development only",
    )
    endpoint.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where this process keeps its own copies of the Views it serves, one SQLite file "
        "each ($KURABLE_STATE_DIR; default: a new temporary directory)",
    )
    endpoint.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    endpoint.set_defaults(func=_lazy("_endpoint", "run"), kubectl_flags=("kubeconfig", "context"))

    etcd_auth = sub.add_parser(
        "etcd-auth",
        help="as etcd's root, give Kurable's user read/write on its prefix and turn etcd's "
        "authentication on (idempotent: the chart runs it before the operator starts)",
    )
    add_etcd_flags(etcd_auth)
    etcd_auth.add_argument(
        "--grant-user", default="kurable", metavar="NAME", help="Kurable's etcd user (kurable)"
    )
    etcd_auth.add_argument(
        "--grant-password-file",
        required=True,
        metavar="FILE",
        help="the file with Kurable's user's password",
    )
    etcd_auth.set_defaults(func=_lazy("_etcd", "setup_auth"), kubectl_flags=())

    snapshot = sub.add_parser(
        "etcd-snapshot",
        help="save a snapshot of the operator's etcd into a directory, keeping the newest N "
        "(as a user with etcd's root role; the chart's backup CronJob runs it)",
    )
    add_etcd_flags(snapshot)
    snapshot.add_argument("--output", required=True, metavar="DIR", help="where to write")
    snapshot.add_argument(
        "--keep", type=int, default=10, metavar="N", help="snapshots kept in DIR (10)"
    )
    snapshot.set_defaults(func=_lazy("_etcd", "snapshot"), kubectl_flags=())

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--output", "-o", default="crds", help="directory to write into")
    crds.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if the directory differs from the models",
    )
    crds.set_defaults(func=_lazy("_inspect", "crds"), kubectl_flags=())  # writes files

    history = sub.add_parser(
        "history",
        help="print a run's whole journal, or an entity's event log (through the endpoint)",
    )
    history.add_argument("ref", metavar="workflow/NAME|entity/NAME")
    history.add_argument("--namespace", "-n", default=None)
    history.add_argument("--output", "-o", choices=["table", *DATA_FORMATS], default="table")
    add_endpoint_flags(history)
    history.set_defaults(func=_lazy("_inspect", "history"))

    graph = sub.add_parser(
        "graph",
        help="print a workflow (template or run, with its steps' phases) as a Mermaid "
        "flowchart or Graphviz dot",
    )
    graph.add_argument("ref", nargs="?", metavar="workflow/NAME|workflowtemplate/NAME")
    graph.add_argument("--namespace", "-n", default=None)
    graph.add_argument(
        "--format", choices=["mermaid", "dot"], default="mermaid", help="(default: mermaid)"
    )
    graph.add_argument("--filename", "-f", help="draw from a manifest file instead of the cluster")
    graph.set_defaults(func=_lazy("_graph", "graph"))

    watch = sub.add_parser("watch", help="follow a run's steps until it finishes")
    watch.add_argument("ref", metavar="workflow/NAME")
    watch.add_argument("--namespace", "-n", default=None)
    watch.add_argument("--timeout", type=float, default=600.0, help="give up after seconds")
    watch.set_defaults(
        func=_lazy("_inspect", "watch"), kubectl_flags=("kubeconfig", "context", "namespace")
    )

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
    add_endpoint_flags(command)
    command.set_defaults(func=_lazy("_entities", "command"))

    start = sub.add_parser(
        "start",
        help="start a run of a WorkflowTemplate through the endpoint; print the run as JSON "
        "(--wait: once finished; exit 1 if not Succeeded, 4 if still running)",
    )
    start.add_argument("template", metavar="TEMPLATE", help="the WorkflowTemplate's name")
    start.add_argument("--input", "-i", help="the run's input as JSON, e.g. '{\"order\":7}'")
    start.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to finish (at most --timeout) and print its output or error",
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long --wait waits, at most 300 (default 300)",
    )
    start.add_argument("--name", help="the run's name (default: from --id, else generated)")
    start.add_argument(
        "--id",
        help="the Idempotency-Key: starting again with the same key and input returns the "
        "same run; the same key with another input is refused (exit 3)",
    )
    start.add_argument(
        "--label", "-l", action="append", metavar="KEY=VALUE", help="a label of the run"
    )
    start.add_argument("--namespace", "-n", default=None)
    add_endpoint_flags(start)
    start.set_defaults(func=_lazy("_workflows", "start"))

    signal = sub.add_parser(
        "signal", help="send a signal with a JSON payload to a run through the endpoint"
    )
    signal.add_argument("ref", metavar="workflow/NAME")
    signal.add_argument("signal", metavar="SIGNAL", help="the signal's name")
    signal.add_argument("--payload", "-p", help="the payload as JSON, e.g. '{\"ok\":true}'")
    signal.add_argument(
        "--id",
        help="the Idempotency-Key: a resend with the same key is a no-op; with another "
        "signal or payload it is refused (exit 3)",
    )
    signal.add_argument("--namespace", "-n", default=None)
    add_endpoint_flags(signal)
    signal.set_defaults(func=_lazy("_workflows", "signal"))

    from . import _views

    _views.add_parser(sub)

    schedule = sub.add_parser("schedule", help="start a schedule's runs by hand")
    actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    trigger = actions.add_parser(
        "trigger",
        help="start one run now, as the schedule would (its concurrency policy applies; "
        "skipped: exit 1)",
    )
    trigger.add_argument("ref", metavar="schedule/NAME")
    trigger.add_argument("--namespace", "-n", default=None)
    trigger.set_defaults(func=_lazy("_schedules", "trigger"))
    backfill = actions.add_parser(
        "backfill",
        help="start the run of every tick in a past range that has none yet, exactly once "
        "(its concurrency policy applies; skipped ticks: exit 1)",
    )
    backfill.add_argument("ref", metavar="schedule/NAME")
    backfill.add_argument(
        "--from", dest="start", required=True, metavar="TIME", help="RFC 3339, inclusive"
    )
    backfill.add_argument(
        "--to", dest="end", required=True, metavar="TIME", help="RFC 3339, inclusive, not future"
    )
    backfill.add_argument("--namespace", "-n", default=None)
    backfill.set_defaults(func=_lazy("_schedules", "backfill"))

    publish = sub.add_parser(
        "publish", help="publish a message to a topic through the endpoint (exactly once per --id)"
    )
    publish.add_argument("ref", metavar="topic/NAME")
    publish.add_argument("--key", help="the message key (messages of one key stay in order)")
    publish.add_argument("--data", help="the message data, JSON")
    publish.add_argument("--type", help="the message type")
    publish.add_argument("--id", help="the message id (sent as Idempotency-Key)")
    add_endpoint_flags(publish)
    publish.add_argument("--timeout", type=float, default=30.0, help="seconds (30)")
    publish.set_defaults(func=_lazy("_publish", "publish"))

    completion = sub.add_parser(
        "completion",
        help="print the shell completion script: "
        "`source <(kurable completion bash)`, or into your shell's completion directory",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(func=_lazy("_completion", "run"), kubectl_flags=())

    add_kubectl_flags(parser)
    return parser


KUBECTL_FLAGS = ("kubeconfig", "context", "namespace", "output")
"""kubectl's flags that every command gets, unless it names fewer with
`set_defaults(kubectl_flags=(...))`: a command that talks to no cluster takes none, a
server no `--output`."""


def add_kubectl_flags(parser: argparse.ArgumentParser) -> None:
    """Give every command, however nested, kubectl's flags: `--kubeconfig`, `--context`,
    `-n/--namespace`, and `-o/--output json|yaml` (for data; a table or text without it);
    a command that names fewer in its `kubectl_flags` default gets those only, and a
    command that defines one of these flags itself keeps its own. Called once, last, by
    `build_parser`: a command added anywhere before it gets them too."""
    for command in _commands(parser):
        if command is parser:
            continue
        wanted = command.get_default("kubectl_flags")
        wanted = KUBECTL_FLAGS if wanted is None else wanted
        flags = command._option_string_actions
        group = command.add_argument_group("kubectl flags")
        if "kubeconfig" in wanted and "--kubeconfig" not in flags:
            group.add_argument(
                "--kubeconfig", metavar="PATH", help="the kubeconfig file ($KUBECONFIG)"
            )
        if "context" in wanted and "--context" not in flags:
            group.add_argument("--context", help="the kubeconfig context (its current one)")
        if "namespace" in wanted and "--namespace" not in flags and "-n" not in flags:
            group.add_argument(
                "--namespace", "-n", help="the namespace (the context's, else default)"
            )
        if "output" in wanted and "--output" not in flags and "-o" not in flags:
            group.add_argument(
                "--output", "-o", choices=DATA_FORMATS, help="print data as JSON or YAML"
            )


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser below it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.extend(_commands(child))
    return found


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
    from ._kube import use_kubectl_flags

    use_kubectl_flags(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as e:
        print(f"kurable: {e}", file=sys.stderr)
        return 2

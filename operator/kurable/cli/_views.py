"""`kurable query view/NAME QUERY --param k=v`: a View's query through the endpoint."""

from __future__ import annotations

import argparse
import json
import os

from ._errors import UserError
from ._output import DATA_FORMATS, print_data
from ._table import table

VIEW_KINDS = ("view", "views", "kview")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `query` command's flags."""
    query = sub.add_parser(
        "query", help="run a View's named query through the endpoint; print its rows"
    )
    query.add_argument("ref", metavar="view/NAME")
    query.add_argument("query", metavar="QUERY", help="the query's name, as the View names it")
    query.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a query parameter (repeatable)",
    )
    query.add_argument(
        "--min-offset",
        type=int,
        default=0,
        help="answer only once the View includes this offset (a command reply's `offset`)",
    )
    query.add_argument("--namespace", "-n", default=None)
    query.add_argument("--output", "-o", choices=["table", *DATA_FORMATS], default="table")
    query.add_argument(
        "--endpoint",
        default=os.environ.get("KURABLE_ENDPOINT"),
        metavar="URL",
        help="the Kurable endpoint, e.g. http://127.0.0.1:8080 ($KURABLE_ENDPOINT)",
    )
    query.add_argument(
        "--token", default=os.environ.get("KURABLE_TOKEN"), help="bearer token ($KURABLE_TOKEN)"
    )
    query.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kurable.client import QueryFailed, query_view

    kind, _, name = args.ref.partition("/")
    if kind.lower() not in VIEW_KINDS or not name:
        raise UserError(f"expected view/NAME, got {args.ref!r}")
    if not args.endpoint:
        raise UserError("no endpoint: pass --endpoint URL or set $KURABLE_ENDPOINT")
    params = {}
    for given in args.param:
        key, sep, value = given.partition("=")
        if not sep or not key:
            raise UserError(f"--param must be NAME=VALUE, got {given!r}")
        params[key] = value
    try:
        rows = query_view(
            args.endpoint,
            args.token,
            args.namespace or _namespace(),
            name,
            args.query,
            params,
            args.min_offset,
        )
    except QueryFailed as e:
        raise UserError(e.detail) from None
    except OSError as e:
        raise UserError(f"cannot reach the endpoint {args.endpoint}: {e}") from None
    if args.output in DATA_FORMATS:
        print_data(args, rows)
    else:
        columns = list(rows[0]) if rows else []
        lines = table(
            [c.upper() for c in columns], [[_cell(r.get(c)) for c in columns] for r in rows]
        )
        print("\n".join(lines) if rows else "no rows")
    return 0


def _cell(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _namespace() -> str:
    """The kubeconfig context's namespace, else `default`."""
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG")
        )
    except config.ConfigException:
        return "default"
    return str(context.get("context", {}).get("namespace") or "default")

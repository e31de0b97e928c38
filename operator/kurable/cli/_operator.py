"""`kurable operator`: kopf, with Kurable's handlers, against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from pathlib import Path

import kopf

from kurable.executor import tracing
from kurable.executor.settings import OperatorSettings, default_state_dir

from ._etcd import etcd_config


def settings(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings from its flags, else from the environment
    ($KURABLE_ETCD_*, $KURABLE_EXECUTOR_ID; the flags
    --resync-interval, --api-timeout and --max-value-bytes read theirs as defaults), else
    the defaults."""
    return OperatorSettings(
        etcd=etcd_config(args),
        executor_id=args.executor_id or os.environ.get("KURABLE_EXECUTOR_ID") or None,
        namespaces=tuple(args.namespace),
        peering=args.peering or None,
        lease_ttl=args.lease_ttl,
        api_timeout=args.api_timeout,
        resync_interval=args.resync_interval,
        max_value_bytes=args.max_value_bytes,
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
    )


def serve_metrics(address: str) -> None:
    """Serve the process's Prometheus metrics at http://ADDRESS/metrics (a thread)."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"--metrics {address}: expected HOST:PORT, e.g. 0.0.0.0:9090")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")


def run(args: argparse.Namespace) -> int:
    ours = settings(args)
    if args.log_format == "json":
        # kopf's JSON lines: `object` names the Kubernetes object of every line about one.
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL)
    if args.metrics:
        serve_metrics(args.metrics)
    tracing.configure_from_env("kurable-operator")

    from kurable.handlers.operator import OperatorMemo  # registers the handlers

    memo = OperatorMemo()
    memo.settings = ours
    # kopf's peering is active/standby, and peers of equal priority all pause: without
    # an explicit priority each replica draws its own.
    priority = args.priority
    if args.peering and priority is None:
        priority = random.randint(1, 2**31 - 1)
    asyncio.run(
        kopf.operator(
            standalone=not args.peering,
            peering_name=args.peering or None,
            priority=priority,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            memo=memo,
        )
    )
    return 0

"""`kurable operator`: kopf, with Kurable's handlers, against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import os
import random

import kopf

from kurable.executor.settings import OperatorSettings
from kurable.store.journal import EtcdConfig
from kurable.store.keys import normalize_prefix


def settings(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings from its flags, else from the environment
    ($KURABLE_ETCD_ENDPOINTS, $KURABLE_ETCD_PREFIX, $KURABLE_EXECUTOR_ID; the flags
    --resync-interval, --api-timeout and --max-value-bytes read theirs as defaults), else
    the defaults."""
    etcd = EtcdConfig.from_env()
    return OperatorSettings(
        etcd=EtcdConfig(
            endpoints=args.etcd_endpoints or etcd.endpoints,
            prefix=normalize_prefix(args.etcd_prefix) if args.etcd_prefix else etcd.prefix,
        ),
        executor_id=args.executor_id or os.environ.get("KURABLE_EXECUTOR_ID") or None,
        namespaces=tuple(args.namespace),
        peering=args.peering or None,
        lease_ttl=args.lease_ttl,
        api_timeout=args.api_timeout,
        resync_interval=args.resync_interval,
        max_value_bytes=args.max_value_bytes,
    )


def run(args: argparse.Namespace) -> int:
    ours = settings(args)
    kopf.configure(verbose=args.verbose)

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

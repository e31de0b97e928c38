"""`kurable operator`: kopf, with Kurable's handlers, against the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import os
import random

import kopf


def run(args: argparse.Namespace) -> int:
    # The etcd settings travel as environment, the one place the handlers read them.
    if args.etcd_endpoints:
        os.environ["KURABLE_ETCD_ENDPOINTS"] = args.etcd_endpoints
    if args.executor_id:
        os.environ["KURABLE_EXECUTOR_ID"] = args.executor_id
    if args.etcd_prefix:
        os.environ["KURABLE_ETCD_PREFIX"] = args.etcd_prefix
    kopf.configure(verbose=args.verbose)

    import kurable.handlers  # noqa: F401  (registers the handlers)

    memo = kopf.Memo(
        lease_ttl=args.lease_ttl,
        api_timeout=args.api_timeout,
        resync_interval=args.resync_interval,
        namespaces=list(args.namespace),
        peering=bool(args.peering),
    )
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

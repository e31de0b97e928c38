"""The etcd flags `kurable operator` and `kurable endpoint` share, spelt like etcdctl's
(`--cacert`, `--cert`, `--key`, `--user`) under `--etcd-`, each with its environment
variable. The password is never a flag (a flag shows in `ps`): `$KURABLE_ETCD_PASSWORD`
or a file (`--etcd-password-file`, e.g. a mounted Secret)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports aetcd: only when a command runs
    from kurable.store.etcd import EtcdConfig


def add_etcd_flags(parser: argparse.ArgumentParser) -> None:
    """Add the --etcd-* flags to `parser` (the values are read by `etcd_config`)."""
    group = parser.add_argument_group("the operator's etcd")
    group.add_argument(
        "--etcd-endpoints",
        metavar="URLS",
        help="[http[s]://]host:port[,...]: every member is used, moving to the next when one "
        "fails; https:// for TLS ($KURABLE_ETCD_ENDPOINTS, 127.0.0.1:2379)",
    )
    group.add_argument("--etcd-prefix", help="key prefix in etcd ($KURABLE_ETCD_PREFIX, /kurable/)")
    group.add_argument(
        "--etcd-cacert",
        metavar="FILE",
        help="verify etcd's serving certificates with this CA bundle ($KURABLE_ETCD_CACERT)",
    )
    group.add_argument(
        "--etcd-cert",
        metavar="FILE",
        help="client certificate for etcd's --client-cert-auth ($KURABLE_ETCD_CERT)",
    )
    group.add_argument(
        "--etcd-key", metavar="FILE", help="the client certificate's key ($KURABLE_ETCD_KEY)"
    )
    group.add_argument(
        "--etcd-user",
        metavar="NAME",
        help="etcd user name; the password comes from $KURABLE_ETCD_PASSWORD or "
        "--etcd-password-file ($KURABLE_ETCD_USER)",
    )
    group.add_argument(
        "--etcd-password-file",
        metavar="FILE",
        help="read the etcd user's password from this file ($KURABLE_ETCD_PASSWORD_FILE)",
    )


def etcd_config(args: argparse.Namespace) -> EtcdConfig:
    """The etcd settings from the flags, else the environment, else the defaults. Raises
    UserError saying what to fix when they cannot work."""
    from kurable.store.etcd import EtcdConfig, EtcdConfigError, read_password
    from kurable.store.keys import normalize_prefix

    from ._errors import UserError

    try:
        env = EtcdConfig.from_env()
        password = env.password
        if args.etcd_password_file:
            password = read_password(args.etcd_password_file)
        return EtcdConfig(
            endpoints=args.etcd_endpoints or env.endpoints,
            prefix=normalize_prefix(args.etcd_prefix) if args.etcd_prefix else env.prefix,
            cacert=args.etcd_cacert or env.cacert,
            cert=args.etcd_cert or env.cert,
            key=args.etcd_key or env.key,
            user=args.etcd_user or env.user,
            password=password,
        )
    except EtcdConfigError as e:
        raise UserError(str(e)) from None


def setup_auth(args: argparse.Namespace) -> int:
    """`kurable etcd-auth`: kurable.store.etcd.ensure_auth with the --etcd-* flags naming
    root (`--etcd-user root`, root's password from the environment or a file)."""
    import asyncio

    from kurable.store.etcd import (
        EtcdAuthError,
        EtcdConfigError,
        EtcdTLSError,
        ensure_auth,
        read_password,
    )

    from ._errors import UserError

    config = etcd_config(args)
    try:
        password = read_password(args.grant_password_file)
        enabled = asyncio.run(ensure_auth(config, args.grant_user, password))
    except (EtcdConfigError, EtcdAuthError, EtcdTLSError) as e:
        raise UserError(str(e)) from None
    state = "turned on" if enabled else "was on already"
    print(
        f"etcd user {args.grant_user!r} may read and write under {config.prefix}; "
        f"authentication {state}"
    )
    return 0


def snapshot(args: argparse.Namespace) -> int:
    """`kurable etcd-snapshot`: kurable.store.etcd.save_snapshot into
    `--output/snapshot-<UTC time>.db`, then all but the newest `--keep` snapshots there
    deleted; prints the file."""
    import asyncio
    import datetime
    from pathlib import Path

    from kurable.store.etcd import EtcdAuthError, EtcdTLSError, save_snapshot

    from ._errors import UserError

    config = etcd_config(args)
    directory = Path(args.output)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    saved = directory / f"snapshot-{stamp}.db"
    try:
        asyncio.run(save_snapshot(config, saved))
    except (EtcdAuthError, EtcdTLSError) as e:
        raise UserError(str(e)) from None
    for old in sorted(directory.glob("snapshot-*.db"))[: -max(args.keep, 1)]:
        old.unlink()
    print(f"saved {saved} ({saved.stat().st_size} bytes)")
    return 0

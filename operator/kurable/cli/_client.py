"""How the user-facing commands reach Kurable: through the endpoint, with `kurable.client`.

`add_endpoint_flags` gives a command `--endpoint` and `--token`; `connect(args)` opens a
Client with them (else $KURABLE_ENDPOINT and $KURABLE_TOKEN or the kubeconfig's user),
and turns what the client raises into one-line UserErrors that say what to do.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._errors import UserError

if TYPE_CHECKING:
    from kurable.client import Client


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    """`--endpoint URL` and `--token TOKEN` (their environment variables as defaults)."""
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="the Kurable endpoint, e.g. http://127.0.0.1:8080 ($KURABLE_ENDPOINT)",
    )
    parser.add_argument(
        "--token",
        help="the bearer token ($KURABLE_TOKEN; default: the kubeconfig's current user's "
        "token, tokenFile or exec credential plugin)",
    )


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A Client for the command's flags; its errors that no command handles itself
    (unreachable endpoint, refused token, RBAC denial, bad request...) as UserErrors."""
    import httpx

    # Imported late: `kurable --help` must not wait for httpx.
    from kurable.client import Client, ClientError, EndpointError, Forbidden, Unauthenticated

    try:
        client = Client(
            getattr(args, "endpoint", None),
            getattr(args, "token", None),
            kubeconfig=getattr(args, "kubeconfig", None),
            context=getattr(args, "context", None),
        )
    except ClientError as e:
        raise UserError(str(e)) from None
    try:
        with client:
            yield client
    except ClientError as e:
        raise UserError(str(e)) from None
    except Unauthenticated as e:
        raise UserError(
            f"{e.detail} (pass --token, set $KURABLE_TOKEN, or use a kubeconfig user with a "
            "token or credential plugin)"
        ) from None
    except Forbidden as e:
        raise UserError(e.detail) from None
    except EndpointError as e:
        where = "; ".join(f"{x.get('pointer') or '/'}: {x.get('detail')}" for x in e.errors)
        raise UserError(
            e.detail + (f" [{where}]" if where and where not in e.detail else "")
        ) from None
    except httpx.TransportError as e:
        raise UserError(
            f"cannot reach the endpoint at {client.url} ({type(e).__name__}: {e}); "
            "is `kurable endpoint` running? (--endpoint / $KURABLE_ENDPOINT)"
        ) from None

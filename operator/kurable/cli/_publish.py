"""`kurable publish topic/NAME --key K --data JSON`: publish through the endpoint (HTTP only;
the CLI never opens etcd). The endpoint is `--endpoint` or $KURABLE_ENDPOINT, the bearer
token `--token` or $KURABLE_TOKEN; `--id` is sent as the Idempotency-Key (the message id)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from ._errors import UserError


def publish(args: argparse.Namespace) -> int:
    """Publish one message; print {id, offset, duplicate}. Exit 0, or 2 with the
    endpoint's problem detail."""
    kind, _, topic = args.ref.partition("/")
    if kind not in ("topic", "topics") or not topic:
        raise UserError(f"{args.ref!r}: name the topic as topic/NAME")
    endpoint = args.endpoint or os.environ.get("KURABLE_ENDPOINT")
    if not endpoint:
        raise UserError("no endpoint: pass --endpoint URL or set KURABLE_ENDPOINT")
    try:
        data = json.loads(args.data) if args.data is not None else None
    except json.JSONDecodeError as e:
        raise UserError(f"--data is not JSON: {e}") from None
    namespace = args.namespace or os.environ.get("KURABLE_NAMESPACE") or "default"
    url = (
        f"{endpoint.rstrip('/')}/v1/namespaces/{urllib.parse.quote(namespace)}"
        f"/topics/{urllib.parse.quote(topic)}/messages"
    )
    body: dict[str, object] = {"data": data}
    if args.key is not None:
        body["key"] = args.key
    if args.type is not None:
        body["type"] = args.type
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = args.token or os.environ.get("KURABLE_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if args.id:
        headers["Idempotency-Key"] = args.id
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except ValueError:
            detail = None
        raise UserError(f"{e.code} {detail or e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot reach the endpoint {endpoint}: {e}") from None
    json.dump(answer, sys.stdout)
    print()
    return 0

"""The shop part of `make demo` (examples/shop/): an order through the endpoint.

A request to the endpoint starts a run of the `order` template: its first step asks the
`products` View for the cheapest product with enough stock, the next reserve it (a command
to that product) and charge the customer's account the price the view gave (a command to
a second entity). Then `kurable query` shows the view after the order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from kurable.cli import main as kurable
from kurable.cli._dev import admin_token
from kurable.testing import ControlPlane, EndpointProcess

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
ORDER = {"account": "carol", "qty": 2}
EXPECTED = {"product": "pen", "paid": 6, "balance": 94}


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def post(url: str, token: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=90) as reply:
        return json.loads(reply.read())


def shop(cp: ControlPlane, work: Path) -> bool:
    """Run the shop example against the running operator (a second endpoint logging into
    `work`: each endpoint keeps its own copy of the views); True when the order came out
    as expected."""
    banner("starting a second endpoint (every endpoint keeps its own copy of the views)")
    with EndpointProcess(cp.env(), work / "shop-endpoint.log") as endpoint:
        token = admin_token(cp)
        banner("kubectl apply -f examples/shop/   (products, an account, a View, a template)")
        print(cp.kubectl("apply", "-f", str(SHOP)).stdout.rstrip())
        for _ in range(150):
            view = json.loads(cp.kubectl("get", "view/products", "-o", "json").stdout)
            if (view.get("status") or {}).get("rows") == 2:
                break
            time.sleep(0.2)
        print(cp.kubectl("get", "views").stdout.rstrip())
        banner("POST /v1/namespaces/default/workflows?wait=60s   (an order of 2)")
        run = post(
            f"{endpoint.url}/v1/namespaces/default/workflows?wait=60s",
            token,
            {
                "templateRef": {"name": "order"},
                "name": "order-1",
                "input": {"account": "carol", "qty": 2},
            },
        )
        print(f"  {run['name']}: {run['phase']}, output {json.dumps(run.get('output'))}")
        banner("kurable query view/products in_stock")
        # This endpoint builds its copy of the view now: caught up past the order.
        auth = ["--endpoint", endpoint.url, "--token", token]
        kurable(["query", "view/products", "in_stock", *auth])
        ok: bool = run.get("phase") == "Succeeded" and run.get("output") == EXPECTED
        if not ok:
            print(f"expected output {EXPECTED}\n{endpoint.log_tail()}")
        return ok

"""HTTP against the endpoint process, and tokens from real ServiceAccounts."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from kurable.testing import ControlPlane

from .conftest import apply


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str
    body: Any = field(default=None)


def call(
    url: str,
    method: str = "GET",
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Answer:
    """One request; the answer whatever its status (JSON bodies parsed)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, got, text = reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as e:
        status, got, text = e.code, dict(e.headers), e.read().decode()
    parsed = None
    if "json" in got.get("content-type", ""):
        parsed = json.loads(text)
    return Answer(status, {k.lower(): v for k, v in got.items()}, text, parsed)


def service_account_token(cp: ControlPlane, namespace: str, name: str | None = None) -> str:
    """A token of a new ServiceAccount in `namespace` (TokenRequest, one hour)."""
    name = name or f"sa-{secrets.token_hex(3)}"
    cp.kubectl("create", "serviceaccount", name, "-n", namespace)
    return cp.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()


def grant(
    cp: ControlPlane,
    namespace: str,
    account: str,
    rules: list[dict[str, Any]],
) -> None:
    """A Role with `rules` in `namespace`, bound to ServiceAccount `account` there."""
    role = f"role-{account}"
    apply(
        cp,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role},
            "rules": rules,
        },
    )
    apply(
        cp,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


ALL_OF_KURABLE = [{"apiGroups": ["kurable.dev"], "resources": ["*"], "verbs": ["*"]}]


def admin_token(cp: ControlPlane, namespace: str) -> str:
    """A token that may do everything with kurable.dev resources in `namespace`."""
    account = f"admin-{secrets.token_hex(3)}"
    token = service_account_token(cp, namespace, account)
    grant(cp, namespace, account, ALL_OF_KURABLE)
    return token

"""kubectl's flags (`--kubeconfig`, `--context`), and reading one Kurable object through
the Kubernetes API as kubectl would find it."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from kurable.api.v1alpha1 import GROUP, VERSION, ResourceKind

from ._errors import UserError


def split_ref(ref: str, spellings: Sequence[str]) -> tuple[str, str]:
    """(the kind's singular, the name) of `KIND/NAME`, KIND one of `spellings` (any case);
    UserError for anything else."""
    spelled, _, name = ref.partition("/")
    singular = spellings[0]
    if spelled.lower() not in spellings or not name:
        raise UserError(f"expected {singular}/NAME, got {ref!r}")
    return singular, name


def use_kubectl_flags(args: argparse.Namespace) -> None:
    """Make `--kubeconfig` and `--context` hold for everything this process connects with:
    the Kubernetes clients (sync and asyncio), kopf, and kubectl started from here.

    They all read `$KUBECONFIG` (a list of files), so the flags become a `$KUBECONFIG`:
    `--kubeconfig` replaces the list; `--context` adds a file that holds nothing but
    `current-context` (no credentials), at both ends of the list, since kubectl and kopf
    take the first file's current context and the Python clients the last one's. That file
    is removed when the process exits. Call it before importing a Kubernetes client (the
    Python clients read `$KUBECONFIG` at import): `kurable` does, first thing."""
    kubeconfig = getattr(args, "kubeconfig", None)
    context = getattr(args, "context", None)
    if not kubeconfig and not context:
        return
    paths = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if context:
        chosen = tempfile.NamedTemporaryFile(  # noqa: SIM115 (removed at exit)
            "w", prefix="kurable-context-", suffix=".yaml", delete=False
        )
        with chosen:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": context}, chosen)
        atexit.register(os.unlink, chosen.name)
        paths = os.pathsep.join([chosen.name, paths, chosen.name])
    os.environ["KUBECONFIG"] = paths


def get_object(
    ref: str, namespace: str | None, kind: ResourceKind, spellings: Sequence[str]
) -> tuple[Any, str, dict[str, Any]]:
    """The API client (`CustomObjectsApi`), the namespace and the object `ref` names.

    `ref` is `KIND/NAME` with KIND one of `spellings` (any case); the namespace defaults
    to the kubeconfig context's, then `default` ($KUBECONFIG is read now, not at import).
    Raises UserError for a malformed ref, an unusable kubeconfig or a missing object."""
    singular, name = split_ref(ref, spellings)
    from kubernetes import client, config

    path = os.environ.get("KUBECONFIG")
    try:
        config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
        _, context = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=path
        )
    except config.ConfigException as e:
        raise UserError(f"no usable kubeconfig: {e}") from None
    namespace = namespace or context.get("context", {}).get("namespace") or "default"
    api = client.CustomObjectsApi()
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, kind.plural, name
        )
    except client.ApiException as e:
        if e.status == 404:
            raise UserError(f"{singular} {name!r} not found in namespace {namespace!r}") from None
        raise
    return api, namespace, obj

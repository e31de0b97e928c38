"""Kubernetes conditions, as every kind's status carries them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]] | None,
    now: str,
) -> dict[str, Any]:
    """One condition, keeping lastTransitionTime while its status stays the same."""
    old = next((c for c in previous or [] if c.get("type") == kind), None) or {}
    changed = old.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }

"""Kubernetes conditions, as every kind's status carries them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kurable.api.v1alpha1 import Condition

ConditionStatus = Literal["True", "False", "Unknown"]


def updated_condition(
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]] | None,
    now: str,
) -> Condition:
    """Condition `kind` as it is now, keeping the previous lastTransitionTime while its
    status stays the same (`previous`: the status's conditions as stored, or None)."""
    old = next((c for c in previous or [] if c.get("type") == kind), None) or {}
    changed = old.get("status") != status
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed else old.get("lastTransitionTime", now),
        observed_generation=generation,
    )

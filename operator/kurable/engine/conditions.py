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


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether writing status `a` over status `b` would change nothing a reader sees:
    equal apart from the conditions' `lastTransitionTime`, a null field being the same as
    an absent one at every depth (a JSON merge patch's null removes the field, RFC 7396,
    so the stored object shows no key where the patch said null)."""
    return bool(_comparable(a) == _comparable(b))


def _comparable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _comparable(v)
            for k, v in value.items()
            if v is not None and k != "lastTransitionTime"
        }
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value

"""What a step action gets and answers: the run it belongs to, and (output, error)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kurable.engine.decide import StepError

Outcome = tuple[Any, StepError | None]
"""(output, None) when the attempt succeeded, (None, error) when it failed."""


@dataclass(frozen=True)
class RunRef:
    """The run an action belongs to."""

    name: str
    namespace: str
    uid: str

"""The names and label values Kurable derives for objects it creates, within Kubernetes' limits.

Kurable names the objects it creates from other names (a child run from its parent and
step, later a schedule's run from its tick, a consumer's run from its message), and labels
them with names. Kubernetes limits both:

- an object name of a custom resource is a DNS-1123 subdomain: at most 253 characters of
  `[a-z0-9.-]`, each dot-separated part starting and ending alphanumeric;
- a label value is at most 63 characters of `[A-Za-z0-9_.-]`, starting and ending
  alphanumeric (or empty).

Derived names are kept to 63 characters, so that a derived name can also be a label value
(a grandchild's `kurable.dev/parent`). Every function here is deterministic (the same
inputs give the same name: a step re-executed after a crash finds the object its first
execution created) and keeps distinct inputs distinct: an input that is already valid
is used as it is; any other is cleaned up, cut short and suffixed with a hash of the
whole input.
"""

from __future__ import annotations

import hashlib
import re

NAME_LIMIT = 63
"""The longest name derived here (so that it is also a valid label value)."""
LABEL_VALUE_LIMIT = 63
"""Kubernetes' limit on a label value."""
DIGEST_LENGTH = 10
"""Hex digits of the hash suffix (40 bits: collisions are out of reach for one namespace)."""

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def is_name(text: str, limit: int = NAME_LIMIT) -> bool:
    """Whether `text` is a DNS-1123 subdomain of at most `limit` characters."""
    return 0 < len(text) <= limit and _SUBDOMAIN.fullmatch(text) is not None


def is_label_value(text: str) -> bool:
    """Whether `text` is a valid Kubernetes label value."""
    return len(text) <= LABEL_VALUE_LIMIT and _LABEL_VALUE.fullmatch(text) is not None


def _digest(parts: tuple[str, ...]) -> str:
    whole = "\0".join(parts).encode()
    return hashlib.sha256(whole).hexdigest()[:DIGEST_LENGTH]


def derived_name(*parts: str, limit: int = NAME_LIMIT) -> str:
    """An object name made of `parts` joined by `-`: the join itself when it is a valid
    name of at most `limit` characters, else its lowercase letters, digits and dashes,
    cut to fit, then `-` and a hash of all the parts (in order).

    `limit` is at least DIGEST_LENGTH + 2 and at most 253; raises ValueError otherwise.
    """
    if not DIGEST_LENGTH + 2 <= limit <= 253:
        raise ValueError(f"a derived name's limit must be in [{DIGEST_LENGTH + 2}, 253]")
    joined = "-".join(parts)
    if is_name(joined, limit):  # within 63 characters, a name is also a label value
        return joined
    clean = re.sub(r"[^a-z0-9]+", "-", joined.lower()).strip("-")
    head = clean[: limit - DIGEST_LENGTH - 1].rstrip("-")
    digest = _digest(parts)
    return f"{head}-{digest}" if head else digest


def label_value(text: str) -> str:
    """`text` as a label value: itself when valid, else its letters, digits, `-`, `_` and
    `.`, cut to fit, then `-` and a hash of the whole text."""
    if is_label_value(text):
        return text
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    clean = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)
    head = re.sub(r"[^A-Za-z0-9]+$", "", clean[: LABEL_VALUE_LIMIT - DIGEST_LENGTH - 1])
    digest = _digest((text,))
    return f"{head}-{digest}" if head else digest


def child_run_name(parent: str, step: str, visit: int = 1) -> str:
    """The name of the child run a `workflow` step starts: `<parent>-<step>`, and
    `-<visit>` from a step's second visit on (a `next` loop starts a new child each
    time). forEach items (`step[3]`) and long names get a hash suffix (derived_name)."""
    if visit <= 1:
        return derived_name(parent, step)
    return derived_name(parent, step, str(visit))

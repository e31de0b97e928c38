"""Messages Kurable writes for people (status conditions, Events, step errors): one line,
bounded length, whatever text from outside (an HTTP answer, a handler's error) they quote."""

from __future__ import annotations

import re

MESSAGE_LIMIT = 1024
"""Characters of a message in a status condition or an Event: Kubernetes keeps at most
1 KiB of an Event's note (events.k8s.io/v1), and `kubectl describe` shows it on one line."""

EXCERPT_LIMIT = 200
"""Characters of outside text (a response body, a handler's error) quoted in a step
error; the journal keeps the step error with this excerpt."""

ELLIPSIS = "…"

_WHITESPACE = re.compile(r"\s+")


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """`text` (anything: str() is taken) with every run of whitespace, newlines included,
    collapsed to one space, stripped, and cut to at most `limit` characters (`limit` >= 1),
    the last of them an ellipsis when something was cut."""
    flat = _WHITESPACE.sub(" ", str(text)).strip()
    if len(flat) <= limit:
        return flat
    return flat[: max(0, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


def counted(count: int, noun: str) -> str:
    """`count` and `noun`, plural unless the count is 1: `1 step`, `3 steps`, `0 keys`
    (`noun` is a regular English noun: its plural adds an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

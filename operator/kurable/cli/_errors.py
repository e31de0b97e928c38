"""The CLI's one user-facing error type (kept apart so `kurable --help` imports nothing heavy)."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; printed as one line without a traceback (exit 2)."""

"""The layout of Kurable's keys in etcd, in one place.

Everything lives under one prefix (default `/kurable/`), separate from the API
server's own keys (`/registry/`):

    <prefix>workflows/<uid>/journal/<seq:010d>   one journal record (JSON)
    <prefix>workflows/<uid>/owner                the executor holding the run (fencing)
    <prefix>executors/<id>                       a live operator instance (on its lease)
"""

from __future__ import annotations

DEFAULT_PREFIX = "/kurable/"


def normalize_prefix(prefix: str) -> str:
    """`/kurable` and `kurable/` both mean `/kurable/`."""
    return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def workflow(prefix: str, uid: str) -> str:
    """Everything of one run (delete this prefix to forget the run)."""
    return f"{prefix}workflows/{uid}/"


def journal(prefix: str, uid: str) -> str:
    """The prefix of a run's journal records."""
    return f"{workflow(prefix, uid)}journal/"


def journal_record(prefix: str, uid: str, seq: int) -> str:
    """One record; zero-padded so that key order is journal order."""
    return f"{journal(prefix, uid)}{seq:010d}"


def owner(prefix: str, uid: str) -> str:
    """Who executes the run; attached to the executor's lease, so it dies with it."""
    return f"{workflow(prefix, uid)}owner"


def executor(prefix: str, executor_id: str) -> str:
    """A live executor, kept while its lease is renewed."""
    return f"{prefix}executors/{executor_id}"


def range_end(prefix: str) -> str:
    """The end of the key range that starts with `prefix` (etcd's prefix convention)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()

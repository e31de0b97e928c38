"""The operator's settings: one frozen dataclass, built by `kurable operator` from its
flags and environment and handed to the executor at startup.

Nothing below the CLI reads the environment or kopf's memo for a setting: a setting
is a field here, with its unit, its default and why it has that default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kurable.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from kurable.store.journal import EtcdConfig


@dataclass(frozen=True)
class OperatorSettings:
    """How one operator process connects, and how patiently it drives runs.

    Each field names its unit; the CLI flag or environment variable that sets it is in
    brackets (the flag wins over the variable).
    """

    # -- where ------------------------------------------------------------------------

    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """The operator's etcd: endpoints and key prefix (`--etcd-endpoints`,
    `$KURABLE_ETCD_ENDPOINTS`; `--etcd-prefix`, `$KURABLE_ETCD_PREFIX`). Default:
    127.0.0.1:2379 under `/kurable/`, the local development etcd."""
    executor_id: str | None = None
    """A name at most one live operator holds, e.g. the pod name (`--executor-id`,
    `$KURABLE_EXECUTOR_ID`). A restart under the same name resumes its runs at once
    instead of waiting for the old lease to expire. Default: None, a name made from
    host and process (unique, so a restart waits for the lease)."""
    namespaces: tuple[str, ...] = ()
    """kopf's namespace patterns (globs) this operator serves (`--namespace`, repeatable).
    Default: empty, cluster-wide."""
    peering: str | None = None
    """kopf's peering name (`--peering`): one replica is active and drives every run, the
    others stand by. Default: None, kopf standalone, and the operators sharing the etcd
    prefix share the runs, all active (kurable.executor.shards). With peering, resync
    only refreshes the runs this process drives (kopf does not tell a replica whether it
    is the active one)."""

    # -- how long ---------------------------------------------------------------------

    lease_ttl: int = 10
    """Seconds the executor's etcd lease outlives a silent operator (`--lease-ttl`).
    Default 10: another executor takes a dead one's runs over within that. The lease is
    renewed every ttl/5 (2 s) by a thread with its own gRPC channel, never behind the
    event loop's tasks: only a frozen process (SIGSTOP, a stalled node) or etcd out of
    reach for four renewals in a row loses it, and then every hold comes back with the
    next grant."""
    api_timeout: float = 30.0
    """Seconds a request to the API server may take to connect, and then between two
    reads of its answer (`--api-timeout`, `$KURABLE_API_TIMEOUT`). Default 30: a request
    on a silent keep-alive connection fails and is retried on a new one, while a long
    listing that keeps sending is not cut short."""
    resync_interval: float = 30.0
    """Seconds between two listings of the Workflows (`--resync-interval`,
    `$KURABLE_RESYNC_INTERVAL`); 0: no resync. Default 30: a run whose event the watch
    lost moves again within half a minute, for one list request per interval."""
    coalesce_seconds: float = 0.5
    """While steps commit back to back, a run's status is patched at most this often
    (seconds), its first patch too (counted from when this process began driving it). A
    run that finishes, or waits for a signal or a timer, patches at once (kurable.engine
    .passive.status_write_delay). Default 0.5: status stays current for people while a
    fast chain of steps costs the API server two patches a second, not one per step, and
    a run faster than that writes one status: its end."""
    claim_retry_seconds: float = 5.0
    """Seconds between two attempts to claim a run another live executor holds. Default
    5: a fraction of the lease, so a run moves soon after its holder's lease expires."""
    outage_backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    """Seconds to wait before resuming a run after an etcd or API server error, one per
    failure in a row (the last repeats). Default: doubling from 0.5 to 8, so a blip
    costs half a second and a long outage one attempt per run every 8 seconds."""
    stalled_after_failures: int = 3
    """Errors in a row without progress after which a run's status says `Stalled`.
    Default 3: a single blip is not reported, an outage is (after about 3.5 s)."""
    template_retry_seconds: float = 5.0
    """Seconds between two looks for a missing WorkflowTemplate a run refers to.
    Default 5: a template applied just after its run is found quickly."""

    # -- how much ---------------------------------------------------------------------

    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    """The largest value Kurable journals, in bytes of canonical JSON: a step's output, a
    signal's payload, a run's input, a child's output, an entity event's data, a command's
    reply (`--max-value-bytes`, `$KURABLE_MAX_VALUE_BYTES`). A larger value is refused
    before it is written: the step fails with `OutputTooLarge`, the signal is dropped with
    a Warning Event, the command is rejected, the run is Invalid. Default 1 MiB
    (kurable.engine.sizes): under etcd's default `--max-request-bytes` of 1.5 MiB, with
    room for the record around it; journal records over 256 KiB are stored in chunks, so
    a larger limit needs no etcd change for runs (entity commands commit in one request:
    raise etcd's `--max-request-bytes` too)."""
    state_dir: Path | None = None
    """Where this process keeps its copies of the Views that `view` steps query, one SQLite
    file per View (`--state-dir`, `$KURABLE_STATE_DIR`; default: a new temporary directory,
    so the copies are rebuilt from etcd at each start)."""

    @property
    def reporting_instance(self) -> str:
        """The instance Kurable's Events report: `executor_id` (the chart sets it to the
        pod's name), else the host name (a pod's name too)."""
        return self.executor_id or socket.gethostname()

    def __post_init__(self) -> None:
        if self.max_value_bytes < 1024:
            raise ValueError(
                f"max_value_bytes must be at least 1024 bytes, got {self.max_value_bytes}"
            )
        if not self.outage_backoff:
            raise ValueError("outage_backoff needs at least one delay (seconds)")
        if self.lease_ttl < 1:
            raise ValueError(f"lease_ttl must be at least 1 second, got {self.lease_ttl}")
        if self.api_timeout <= 0:
            raise ValueError(f"api_timeout must be positive (seconds), got {self.api_timeout}")
        if self.resync_interval < 0:
            raise ValueError(
                f"resync_interval must be 0 (off) or positive (seconds), got {self.resync_interval}"
            )


def default_state_dir() -> Path | None:
    """`$KURABLE_STATE_DIR`, else None: a new temporary directory when Views start (two
    processes on one machine must not share one: each keeps its own copies of the Views)."""
    found = os.environ.get("KURABLE_STATE_DIR")
    return Path(found) if found else None

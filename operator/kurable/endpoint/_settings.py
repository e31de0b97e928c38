"""The endpoint's settings: one frozen dataclass, built by `kurable endpoint` from its flags
and environment (the flag wins over the variable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kurable.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from kurable.store.journal import EtcdConfig

from ._auth import DEFAULT_ACCESS_TTL, DEFAULT_TOKEN_TTL
from ._limits import DEFAULT_MAX_BODY_BYTES

DEFAULT_BIND = "127.0.0.1:8080"


@dataclass(frozen=True)
class EndpointSettings:
    """How one endpoint process listens, connects and guards."""

    bind: str = DEFAULT_BIND
    """HOST:PORT to listen on (`--bind`, `$KURABLE_ENDPOINT_BIND`). Default: loopback
    8080; in a pod `0.0.0.0:8080`."""
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """The operator's etcd (`--etcd-endpoints`, `$KURABLE_ETCD_ENDPOINTS`; `--etcd-prefix`,
    `$KURABLE_ETCD_PREFIX`): the endpoint reads journals and runs entity commands there."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Bytes a request body may have (`--max-body-bytes`, `$KURABLE_MAX_BODY_BYTES`); a larger
    one gets 413 unread. Default 1 MiB."""
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    """The largest value (input, event, reply; bytes of JSON) an entity command may journal
    (`--max-value-bytes`, `$KURABLE_MAX_VALUE_BYTES`), as the operator's setting."""
    token_ttl: float = DEFAULT_TOKEN_TTL
    """Seconds a TokenReview answer is reused (`--token-cache-seconds`); 0: never."""
    access_ttl: float = DEFAULT_ACCESS_TTL
    """Seconds an allowed SubjectAccessReview answer is reused, keyed by all its attributes
    (`--access-cache-seconds`); 0: never. Denials are never reused."""
    allow_anonymous: bool = False
    """Serve requests without a token as `system:anonymous` (`--allow-anonymous`), still
    authorised by SubjectAccessReview. For local development only."""
    api_timeout: float = 30.0
    """Seconds a request to the API server may take (`--api-timeout`, `$KURABLE_API_TIMEOUT`)."""
    etcd_timeout: float = 10.0
    """Seconds an etcd request may take before the endpoint answers 503."""
    state_dir: Path | None = None
    """Where this process keeps its copies of the Views it serves, one SQLite file per View
    (`--state-dir`, `$KURABLE_STATE_DIR`); an emptyDir in the chart (rebuilt from etcd)."""
    view_row_cap: int = 1000
    """The most rows one page of a View query returns."""

    def host_port(self) -> tuple[str, int]:
        """`bind` split; raises ValueError saying what a bind looks like."""
        host, sep, port = self.bind.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"--bind must be HOST:PORT, e.g. 0.0.0.0:8080, got {self.bind!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

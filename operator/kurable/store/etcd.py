"""Connecting to the operator's etcd: endpoints, TLS, authentication and failover.

Every etcd client Kurable opens is made here: the asyncio client of the operator, the
endpoint, the CLI and the Python client (`EtcdClient`), and the synchronous channel of
the Fence's lease keeper (`open_sync`). All of them honour the same `EtcdConfig`:

- `endpoints`: `host:port`, `http://host:port` or `https://host:port`, comma-separated;
  all are used (below). `https://` means TLS (verified with `cacert`, else the system's
  roots); `http://` with TLS files set is refused, as is a mix of schemes.
- `cacert`, `cert`, `key`: PEM files (etcdctl's `--cacert`, `--cert`, `--key`): the CA
  that signed etcd's serving certificates, and this client's certificate and key for
  etcd's `--client-cert-auth`. Read anew at every (re)connection, so that renewed
  certificates (cert-manager, a rotated Secret) are picked up without a restart.
- `user`, `password`: etcd's authentication (etcdctl's `--user`, `--password`). The
  token etcd returns is per member and expires; it is fetched again on every
  reconnection and whenever etcd says it is no longer valid.

Failover. The client is aetcd (DESIGN.md: asyncio, and `etcd3` cannot import with
protobuf >= 4) over a channel we open ourselves, with our own endpoint rotation, rather
than a client with a different API: every store module speaks aetcd's API and keeps it,
and the alternatives on PyPI that do multi-endpoint failover are either unmaintained
(`etcd3`, `aioetcd3`) or a binding with another API and an unpinned Rust toolchain
(`etcd-client-py`). gRPC's own multi-address channel would fail over too, but only
across literal IP addresses, while a chart names its members by DNS name. So:

- one channel at a time, to the endpoint in use; on a connection error (UNAVAILABLE,
  DEADLINE_EXCEEDED) the client moves to the next endpoint (round robin);
- a read is retried on the next endpoints at once (reads change nothing);
- a write is retried only when it cannot have reached etcd (the channel never
  connected: "failed to connect to all addresses", or etcd refused the auth token);
  otherwise its error is raised after the move, and the caller's own retry (the run
  driver's outage backoff, which reloads the journal and so finds a commit that did
  land) goes to the next member. A transaction is never blindly repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc
from aetcd import watcher as aetcd_watcher
from aetcd.rpc import rpc_pb2_grpc as rpc_grpc

from . import keys

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379


class EtcdConfigError(ValueError):
    """The etcd settings cannot work (a mixed scheme, a key without a certificate, a
    missing file); the message says which setting to fix."""


class EtcdTLSError(aetcd.exceptions.ConnectionFailedError):  # type: ignore[misc]
    """The TLS handshake with etcd failed (the server's certificate is not signed by the
    configured CA, or etcd refused this client's certificate)."""


class EtcdAuthError(aetcd.exceptions.ClientError):  # type: ignore[misc]
    """etcd refused the user name and password (or the user is missing)."""


@dataclass(frozen=True)
class Endpoint:
    """One etcd member's client URL."""

    host: str
    port: int
    tls: bool

    @property
    def target(self) -> str:
        """gRPC's target: `host:port` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.target}"


@dataclass(frozen=True)
class EtcdConfig:
    """Where the operator's etcd is, how to reach it safely, and which prefix is ours.

    Built by the CLI from flags and environment (`from_env` reads the environment:
    KURABLE_ETCD_ENDPOINTS, _PREFIX, _CACERT, _CERT, _KEY, _USER, _PASSWORD,
    _PASSWORD_FILE)."""

    endpoints: str = "127.0.0.1:2379"
    """Comma-separated `host:port`, `http://host:port` or `https://host:port`; all are
    used, the client moving to the next when the one in use fails."""
    prefix: str = keys.DEFAULT_PREFIX
    cacert: str | None = None
    """PEM file of the CA that signed etcd's serving certificates (implies TLS)."""
    cert: str | None = None
    """PEM file of this client's certificate (with `key`; implies TLS)."""
    key: str | None = None
    """PEM file of this client's private key."""
    user: str | None = None
    """etcd user name; `name:password` is accepted as etcdctl's `--user` does."""
    password: str | None = None
    """The user's password (never a command-line flag: from the environment or a file)."""

    @classmethod
    def from_env(cls) -> EtcdConfig:
        """The KURABLE_ETCD_* variables (see the class), with the defaults above.
        Raises EtcdConfigError when KURABLE_ETCD_PASSWORD_FILE cannot be read."""
        password = os.environ.get("KURABLE_ETCD_PASSWORD") or None
        password_file = os.environ.get("KURABLE_ETCD_PASSWORD_FILE")
        if password is None and password_file:
            password = read_password(password_file)
        return cls(
            endpoints=os.environ.get("KURABLE_ETCD_ENDPOINTS", cls.endpoints),
            prefix=keys.normalize_prefix(os.environ.get("KURABLE_ETCD_PREFIX", cls.prefix)),
            cacert=os.environ.get("KURABLE_ETCD_CACERT") or None,
            cert=os.environ.get("KURABLE_ETCD_CERT") or None,
            key=os.environ.get("KURABLE_ETCD_KEY") or None,
            user=os.environ.get("KURABLE_ETCD_USER") or None,
            password=password,
        )

    def __post_init__(self) -> None:
        self.endpoint_list()  # refuse what cannot work at once, saying why
        if bool(self.cert) != bool(self.key):
            raise EtcdConfigError(
                "etcd client TLS needs both a certificate and its key "
                "(--etcd-cert and --etcd-key, $KURABLE_ETCD_CERT and $KURABLE_ETCD_KEY)"
            )

    @property
    def tls(self) -> bool:
        """Whether connections use TLS: an https:// endpoint or any TLS file."""
        return any(e.tls for e in self.endpoint_list())

    def credentials(self) -> tuple[str | None, str | None]:
        """(user, password), None for both without authentication. Raises
        EtcdConfigError for a user without a password."""
        if not self.user:
            return None, None
        user, sep, inline = self.user.partition(":")
        password = self.password if self.password is not None else (inline if sep else None)
        if password is None:
            raise EtcdConfigError(
                f"etcd user {user!r} needs a password: set $KURABLE_ETCD_PASSWORD or "
                "--etcd-password-file (or give --etcd-user NAME:PASSWORD)"
            )
        return user, password

    def endpoint_list(self) -> list[Endpoint]:
        """The endpoints, parsed. Raises EtcdConfigError for an empty list, a bad port,
        a scheme other than http/https, mixed schemes, or http:// with TLS files."""
        files = bool(self.cacert or self.cert)
        found = []
        schemes = set()
        for raw in self.endpoints.split(","):
            text = raw.strip().rstrip("/")
            if not text:
                continue
            scheme, sep, rest = text.partition("://")
            if not sep:
                scheme, rest = "", text
            if scheme not in ("", "http", "https"):
                raise EtcdConfigError(
                    f"etcd endpoint {text!r}: the scheme must be http:// or https://"
                )
            schemes.add(scheme)
            if rest.startswith("["):  # [IPv6]:port
                host, _, after = rest[1:].partition("]")
                port = after[1:] if after.startswith(":") else ""
            else:
                host, sep, port = rest.rpartition(":")
                if not sep:
                    host, port = rest, ""
            host = host or "127.0.0.1"
            try:
                number = int(port) if port else DEFAULT_PORT
            except ValueError:
                raise EtcdConfigError(f"etcd endpoint {text!r}: the port is not a number") from None
            if scheme == "http" and files:
                raise EtcdConfigError(
                    f"etcd endpoint {text!r} is http:// but TLS files are set: use https://"
                )
            found.append(Endpoint(host, number, tls=scheme == "https" or files))
        if not found:
            raise EtcdConfigError("no etcd endpoint given (--etcd-endpoints)")
        if {"http", "https"} <= schemes:
            raise EtcdConfigError(
                f"etcd endpoints mix http:// and https://: {self.endpoints!r}; use one scheme"
            )
        return found

    def first_endpoint(self) -> tuple[str, int]:
        """The first endpoint's (host, port)."""
        first = self.endpoint_list()[0]
        return first.host, first.port

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials from the PEM files (read now), None without TLS. Raises
        EtcdConfigError naming a file that cannot be read."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.cacert, "--etcd-cacert"),
            private_key=_read(self.key, "--etcd-key"),
            certificate_chain=_read(self.cert, "--etcd-cert"),
        )

    def describe(self) -> str:
        """The endpoints and how they are reached, for logs (no secret)."""
        how = "TLS" if self.tls else "plaintext"
        if self.cert:
            how += " with a client certificate"
        if self.user:
            how += f", user {self.user.partition(':')[0]}"
        return f"{', '.join(str(e) for e in self.endpoint_list())} ({how})"


def read_password(path: str) -> str:
    """The password in file `path` (one line; the trailing newline dropped). Raises
    EtcdConfigError when it cannot be read."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as e:
        raise EtcdConfigError(f"cannot read the etcd password file {path}: {e}") from None


def _read(path: str | None, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise EtcdConfigError(f"cannot read {flag} {path}: {e}") from None


# -- errors ---------------------------------------------------------------------------

_TLS_MARKS = ("ssl", "handshake", "certificate", "tls", "tsi_", "unwrap failed")
"""Words of gRPC's failures that are TLS's: with TLS 1.3 a refused client certificate
shows only as "Unwrap failed (TSI_DATA_CORRUPTED)" after the handshake."""
_NEVER_SENT = ("failed to connect to all addresses", "connection refused")


def _details(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(cause, grpc.RpcError):
        return str(cause.details() or "")
    return str(error)


def tls_failure(error: BaseException, endpoint: Endpoint, config: EtcdConfig) -> str | None:
    """A message saying what to fix when `error` is a failed TLS handshake; else None."""
    details = _details(error)
    if not any(mark in details.lower() for mark in _TLS_MARKS):
        return None
    ca = config.cacert or "the system's CA roots"
    return (
        f"TLS handshake with etcd at {endpoint} failed: check that its serving certificate "
        f"is signed by {ca} (--etcd-cacert) and names {endpoint.host}, and that etcd "
        f"trusts the client certificate {config.cert or '(none given: --etcd-cert)'} "
        f"({details})"
    )


def _auth_failure(details: str, endpoint: Endpoint, user: str) -> str:
    return (
        f"etcd at {endpoint} refused user {user!r}: {details}. Check --etcd-user and the "
        "password ($KURABLE_ETCD_PASSWORD or --etcd-password-file)"
    )


_MOVES = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError)


def _stale_token(error: BaseException) -> bool:
    return isinstance(error, aetcd.exceptions.UnauthenticatedError) or (
        "invalid auth token" in _details(error)
    )


# -- the asyncio client ---------------------------------------------------------------

T = TypeVar("T")

_READS = frozenset({"get", "get_prefix", "get_range", "get_all", "status", "get_lease_info"})
_WRITES = frozenset(
    {
        "put",
        "delete",
        "delete_prefix",
        "delete_range",
        "replace",
        "transaction",
        "lease",
        "revoke_lease",
        "refresh_lease",
        "compact",
        "snapshot",
    }
)


MAX_RECEIVE_BYTES = 64 * 1024 * 1024
"""The largest answer the client accepts (gRPC's default is 4 MiB): journals read together
(kurable.store.journal.READ_BATCH) may answer up to 32 MiB."""


class EtcdClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a channel to one endpoint at a time (TLS and the auth token
    when configured), moving to the next endpoint when the one in use fails (the module's
    docstring says when a request is retried). `endpoint` is the one in use now;
    `failovers` counts the moves."""

    def __init__(self, config: EtcdConfig, timeout: float | None = None) -> None:
        self.config = config
        self.endpoints = config.endpoint_list()
        user, password = config.credentials()
        first = self.endpoints[0]
        super().__init__(
            host=first.host,
            port=first.port,
            username=user,
            password=password,
            timeout=timeout,
            options={"grpc.max_receive_message_length": MAX_RECEIVE_BYTES},
        )
        self.index = 0
        self.failovers = 0
        self._connect_lock = asyncio.Lock()
        self._retired: dict[asyncio.Task[None], tuple[Any, Any]] = {}

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self.index]

    async def connect(self) -> None:
        """Open a channel to the endpoint in use (authenticating when configured); on a
        connection error try each other endpoint once. Raises EtcdTLSError, EtcdAuthError
        or the last connection error."""
        if self._connected.is_set():
            return
        async with self._connect_lock:
            last: BaseException | None = None
            for _ in range(len(self.endpoints)):
                if self._connected.is_set():
                    return
                try:
                    await self._open(self.endpoint)
                    return
                except (*_MOVES, EtcdAuthError) as e:
                    last = e
                    self._move(f"cannot connect: {_details(e)}")
            assert last is not None
            raise last

    async def _open(self, endpoint: Endpoint) -> None:
        credentials = self.config.channel_credentials()
        options = list(self._options.items())
        if credentials is None:
            channel = rpc.insecure_channel(endpoint.target, options=options)
        else:
            channel = rpc.secure_channel(endpoint.target, credentials, options=options)
        metadata = None
        if self._username is not None:
            try:
                reply = await rpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=self._username, password=self._password),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as e:
                await channel.close()
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    error = _as_client_error(e)
                    message = tls_failure(error, endpoint, self.config)
                    if message is not None:
                        raise EtcdTLSError(message) from e
                    raise error from e
                raise EtcdAuthError(
                    _auth_failure(str(e.details()), endpoint, self._username)
                ) from e
            metadata = (("token", reply.token),)
        # Swap every attribute at once (no await in between): a request never sees half
        # a channel.
        self._host, self._port = endpoint.host, endpoint.port
        self.channel = channel
        self.metadata = metadata
        self.auth_stub = rpc.AuthStub(channel)
        self.kvstub = rpc.KVStub(channel)
        self.clusterstub = rpc.ClusterStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.maintenancestub = rpc.MaintenanceStub(channel)
        self._watcher = aetcd_watcher.Watcher(
            rpc.WatchStub(channel), timeout=self._timeout, metadata=metadata
        )
        self._connected.set()

    def _move(self, why: str, advance: bool = True) -> None:
        """Drop the channel in use and (with `advance`) take the next endpoint; new
        requests open a channel there."""
        old_channel, old_watcher = self.channel, self._watcher
        before = self.endpoint
        self._init_channel_attrs()
        self._connected.clear()
        if advance:
            self.index = (self.index + 1) % len(self.endpoints)
            self.failovers += 1
        if advance and len(self.endpoints) > 1:
            log.warning("etcd at %s failed (%s); moving to %s", before, why, self.endpoint)
        if old_channel is not None:
            # Requests still on the old channel may finish (a slow member is not a dead
            # one): it is closed after one request timeout.
            grace = float(self._timeout or 10)
            task = asyncio.get_running_loop().create_task(
                _close(old_channel, old_watcher, after=grace)
            )
            self._retired[task] = (old_channel, old_watcher)
            task.add_done_callback(lambda done: self._retired.pop(done, None))

    async def close(self) -> None:
        """Close the channel in use and those retired by a move (at once)."""
        for task, (channel, watcher) in list(self._retired.items()):
            task.cancel()
            await _close(channel, watcher)
        await super().close()

    async def _call(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one request with the failover rules of the module's docstring."""
        attempts = len(self.endpoints) + 1
        for attempt in range(attempts):
            await self.connect()
            channel = self.channel
            try:
                return await call()
            except (*_MOVES, aetcd.exceptions.UnauthenticatedError) as e:
                message = tls_failure(e, self.endpoint, self.config)
                if message is not None:
                    raise EtcdTLSError(message) from e
                stale = _stale_token(e)
                if self.channel is channel:  # nobody moved meanwhile
                    # A stale token was refused before anything happened: a new channel
                    # to the same member fetches a new one. Otherwise: the next member.
                    self._move(_details(e), advance=not stale)
                never_sent = stale or any(m in _details(e).lower() for m in _NEVER_SENT)
                if attempt == attempts - 1 or not (name in _READS or never_sent):
                    raise
        raise AssertionError("unreachable")


async def _close(channel: Any, watcher: Any, after: float = 0.0) -> None:
    if after:
        await asyncio.sleep(after)
    with contextlib.suppress(Exception):
        if watcher is not None:
            await watcher.shutdown()
    with contextlib.suppress(Exception):
        await channel.close()


def _as_client_error(error: grpc.aio.AioRpcError) -> aetcd.exceptions.ClientError:
    try:
        aetcd.exceptions._handle_exception(error)
    except aetcd.exceptions.ClientError as e:
        return e
    return aetcd.exceptions.ClientError(str(error))  # pragma: no cover


def _with_failover(name: str) -> Callable[..., Any]:
    original = getattr(aetcd.Client, name)

    async def method(self: EtcdClient, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, lambda: original(self, *args, **kwargs))

    method.__name__ = name
    method.__doc__ = original.__doc__
    return method


for _name in _READS | _WRITES:
    setattr(EtcdClient, _name, _with_failover(_name))


async def connect(config: EtcdConfig, request_timeout: float = 10.0) -> EtcdClient:
    """An open etcd client; the connection is checked with one request. Raises
    EtcdTLSError or EtcdAuthError saying what to fix, or the connection error when no
    endpoint answers."""
    client = EtcdClient(config, timeout=request_timeout)
    try:
        await client.status()
    except BaseException:
        await client.close()
        raise
    return client


# -- the synchronous channel (the lease keeper's thread) ------------------------------


class SyncChannel:
    """A synchronous gRPC channel to one endpoint of `config` at a time, with the auth
    token: what the Fence's keeper thread renews its lease on. `move()` after an error
    takes the next endpoint; `metadata` goes with every request."""

    def __init__(self, config: EtcdConfig, timeout: float) -> None:
        self.config = config
        self.endpoints = config.endpoint_list()
        self.timeout = timeout
        self.index = 0
        self.channel: grpc.Channel | None = None
        self.metadata: tuple[tuple[str, str], ...] | None = None
        self.leases: Any = None
        self.kv: Any = None

    def open(self) -> None:
        """Open the channel to the endpoint in use when none is open (authenticating).
        Raises grpc.RpcError, EtcdTLSError or EtcdAuthError."""
        if self.channel is not None:
            return
        endpoint = self.endpoints[self.index]
        credentials = self.config.channel_credentials()
        if credentials is None:
            channel = grpc.insecure_channel(endpoint.target)
        else:
            channel = grpc.secure_channel(endpoint.target, credentials)
        user, password = self.config.credentials()
        metadata = None
        if user is not None:
            try:
                reply = rpc_grpc.AuthStub(channel).Authenticate(
                    rpc.AuthenticateRequest(name=user, password=password), timeout=self.timeout
                )
            except grpc.RpcError as e:
                channel.close()
                code, details = e.code(), str(e.details())
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    if any(mark in details.lower() for mark in _TLS_MARKS):
                        message = tls_failure(Exception(details), endpoint, self.config)
                        raise EtcdTLSError(message) from None
                    raise
                raise EtcdAuthError(_auth_failure(details, endpoint, user)) from None
            metadata = (("token", reply.token),)
        self.channel, self.metadata = channel, metadata
        self.leases = rpc_grpc.LeaseStub(channel)
        self.kv = rpc_grpc.KVStub(channel)

    def move(self, error: BaseException) -> None:
        """Close the channel and take the next endpoint (the same one again when the
        error was only a stale auth token)."""
        self.close()
        stale = isinstance(error, grpc.RpcError) and (
            error.code() == grpc.StatusCode.UNAUTHENTICATED
        )
        if not stale:
            self.index = (self.index + 1) % len(self.endpoints)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = self.leases = self.kv = self.metadata = None


# -- setting up authentication (the chart's init container) ---------------------------


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's --prefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


async def ensure_auth(root: EtcdConfig, user: str, password: str) -> bool:
    """Make etcd's authentication what Kurable needs, whatever it was; return whether it
    had to be enabled now.

    `root` reaches etcd as `root` (its password: the one to create root with when
    authentication is still off). Ensures: the role `user` may read and write the keys
    under `root.prefix` and nothing else; the user `user` has that role and `password`;
    root exists with the root role; authentication is on. Idempotent: run before every
    operator start (the chart's init container), it also brings a changed password in.
    Raises EtcdAuthError when root's password is wrong, EtcdTLSError for TLS."""
    name, root_password = root.credentials()
    if name is None or root_password is None:
        raise EtcdConfigError("setting up etcd's authentication needs root's user and password")
    try:
        client = await connect(root)
        enabled_now = False
    except EtcdAuthError as e:
        if "authentication is not enabled" not in str(e):
            raise
        # Off still: set it up without a token, then turn it on.
        client = await connect(dataclasses.replace(root, user=None, password=None))
        enabled_now = True
    try:
        auth = rpc.AuthStub(client.channel)
        metadata = client.metadata
        timeout = client._timeout

        async def ignore_exists(call: Awaitable[Any]) -> None:
            try:
                await call
            except grpc.aio.AioRpcError as e:
                if "already" not in str(e.details()):
                    raise

        key = root.prefix.encode()
        if enabled_now:
            await ignore_exists(
                auth.UserAdd(
                    rpc.AuthUserAddRequest(name=name, password=root_password),
                    timeout=timeout,
                    metadata=metadata,
                )
            )
            await ignore_exists(auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=timeout))
            await auth.UserGrantRole(
                rpc.AuthUserGrantRoleRequest(user=name, role="root"), timeout=timeout
            )
        await ignore_exists(
            auth.RoleAdd(rpc.AuthRoleAddRequest(name=user), timeout=timeout, metadata=metadata)
        )
        readwrite = rpc.Permission(
            permType=rpc.Permission.READWRITE, key=key, range_end=prefix_end(key)
        )
        await auth.RoleGrantPermission(
            rpc.AuthRoleGrantPermissionRequest(name=user, perm=readwrite),
            timeout=timeout,
            metadata=metadata,
        )
        await ignore_exists(
            auth.UserAdd(
                rpc.AuthUserAddRequest(name=user, password=password),
                timeout=timeout,
                metadata=metadata,
            )
        )
        await auth.UserChangePassword(
            rpc.AuthUserChangePasswordRequest(name=user, password=password),
            timeout=timeout,
            metadata=metadata,
        )
        await auth.UserGrantRole(
            rpc.AuthUserGrantRoleRequest(user=user, role=user), timeout=timeout, metadata=metadata
        )
        if enabled_now:
            await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=timeout)
        return enabled_now
    finally:
        await client.close()


async def save_snapshot(config: EtcdConfig, target: Path) -> None:
    """Stream a snapshot of etcd (as `config`'s user, who must have the root role) into
    `target`, written under a temporary name beside it and renamed when complete, so a
    file of that name is always whole. Restore one with `etcdutl snapshot restore`
    (docs/operations.md)."""
    partial = target.with_name(f".{target.name}.partial")
    client = await connect(config, request_timeout=600)
    try:
        with partial.open("wb") as f:
            await client.snapshot(f)
    finally:
        await client.close()
    partial.rename(target)


async def raw_range(client: aetcd.Client, request: Any) -> Any:
    """A raw Range call (an `rpc.RangeRequest`: aetcd's helpers cannot set
    min_mod_revision, limit or count_only); gRPC errors become aetcd's exceptions, as
    from its own calls."""
    await client.connect()
    try:
        return await client.kvstub.Range(request, timeout=client._timeout, metadata=client.metadata)
    except rpc.AioRpcError as e:
        aetcd.exceptions._handle_exception(e)
        raise


async def raw_txn(client: aetcd.Client, request: Any, read_only: bool = False) -> Any:
    """A raw Txn call (an `rpc.TxnRequest`, answered with the `rpc.TxnResponse`), with the
    failover rules of the module's docstring on an EtcdClient: a `read_only` one (ranges
    only) is retried on the next endpoint like a read, any other never once it may have
    reached etcd. gRPC errors become aetcd's exceptions."""

    async def call() -> Any:
        try:
            return await client.kvstub.Txn(
                request, timeout=client._timeout, metadata=client.metadata
            )
        except rpc.AioRpcError as e:
            aetcd.exceptions._handle_exception(e)
            raise

    if isinstance(client, EtcdClient):
        return await client._call("get" if read_only else "transaction", call)
    await client.connect()
    return await call()


_Waiting = tuple[bytes | None, Any, "asyncio.Future[tuple[Any, int]]"]
"""An operation waiting in a TxnBatcher: the key it writes, the RequestOp, its answer."""


class TxnBatcher:
    """Independent etcd operations sent together, as a group commit does: the first goes
    at once; those that arrive while a transaction is in flight wait for it and then go
    in the next one, up to `max_ops` per transaction (etcd's `--max-txn-ops` is 128 by
    default). So 10,000 claims after a restart cost a few hundred requests, not 10,000.

    A transaction without comparisons applies its operations at one revision. Each is
    decided as if sent alone only when no operation compares or reads a key that another
    one of the batch writes: etcd evaluates every nested transaction's comparisons
    against the state before the whole transaction, while ranges see earlier operations'
    writes. Callers keep to that (a claim compares and writes its own run's owner key and
    compares the executor's key, which no claim writes; reads write nothing), and name
    the one key an operation writes: etcd refuses a transaction that writes a key twice,
    even in two nested transactions, so two such never share one.

    Failures. A connection error (etcd down, a timeout: the transaction may or may not
    have been applied) fails the operations of the batch and those waiting, as each would
    have failed alone, without making them wait behind one another's timeouts. Any other
    error (etcd refused the transaction, so nothing of it was applied: too large, too
    many operations) sends the batch's operations again one at a time, so that only the
    one at fault fails. `read_only` batchers (ranges only) fail over like reads."""

    def __init__(self, client: aetcd.Client, max_ops: int = 32, read_only: bool = False) -> None:
        self.client = client
        self.max_ops = max_ops
        self.read_only = read_only
        self.transactions = 0
        """Transactions sent (for tests and benchmarks)."""
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, key: bytes | None, op: Any) -> tuple[Any, int]:
        """Send `op` (an `rpc.RequestOp` that writes at most `key`; None: writes nothing);
        its `rpc.ResponseOp` and the revision of the transaction that carried it."""
        future: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, op, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
            self._sender.add_done_callback(self._sent)
        return await future

    def _sent(self, sender: asyncio.Task[None]) -> None:
        """The sender ended. Cancelled (the loop is closing; perhaps before it ever ran),
        it leaves nobody waiting for ever: what still waits is cancelled too, unless a
        new sender has taken it over."""
        if self._sender is not sender:
            return
        self._sender = None
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting = []

    def _next_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        keys_in: set[bytes | None] = set()
        for item in self._waiting:
            key, _, future = item
            if future.cancelled():
                continue
            if len(batch) < self.max_ops and (key is None or key not in keys_in):
                batch.append(item)
                if key is not None:
                    keys_in.add(key)
            else:
                later.append(item)
        self._waiting = later
        return batch

    async def _send(self) -> None:
        batch: list[_Waiting] = []
        try:
            while batch := self._next_batch():
                try:
                    await self._commit(batch)
                except (*_MOVES, EtcdAuthError) as e:
                    self._fail([*batch, *self._waiting], e)
                    self._waiting = []
                except Exception as e:
                    if len(batch) == 1:
                        self._fail(batch, e)
                        continue
                    for one in batch:  # refused whole, applied nothing: find the culprit
                        try:
                            await self._commit([one])
                        except Exception as e:
                            self._fail([one], e)
        finally:
            for _, _, future in batch:  # cancelled in flight (those waiting: `_sent`)
                future.cancel()

    async def _commit(self, batch: list[_Waiting]) -> None:
        self.transactions += 1
        request = rpc.TxnRequest(success=[op for _, op, _ in batch])
        response = await raw_txn(self.client, request, read_only=self.read_only)
        revision = int(response.header.revision)
        for (_, _, future), answer in zip(batch, response.responses, strict=True):
            if not future.done():
                future.set_result((answer, revision))

    @staticmethod
    def _fail(items: Sequence[_Waiting], error: Exception) -> None:
        for _, _, future in items:
            if not future.done():
                future.set_exception(error)


def request_op(client: aetcd.Client, op: Any) -> Any:
    """aetcd's transaction operation `op` (`client.transactions.put/get/delete/txn`) as
    the `rpc.RequestOp` it sends."""
    return client._ops_to_requests([op])[0]

"""A secured etcd cluster on loopback: what a production operator's etcd looks like.

:class:`EtcdCluster` starts N real etcd members with TLS on the client and peer ports
(certificates made with ``cryptography``), client-certificate authentication and
etcd's user/password authentication on; the operator's user may read and write every
key, as the chart's role does under its prefix. Tests kill members of it (failover),
snapshot it and restore a snapshot into a fresh cluster (backup and restore).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kurable.testing._certs import _builder, _write, _write_key
from kurable.testing._controlplane import _die_with_parent, _free_ports
from kurable.testing._tools import find_tool

START_TIMEOUT = 60.0
USER = "kurable"
"""The operator's etcd user (also its client certificate's common name)."""


class EtcdClusterError(RuntimeError):
    """A member did not start, or the cluster did not accept its set-up."""


@dataclass(frozen=True)
class EtcdPKI:
    """PEM files of one cluster: its CA, the members' certificate (serving and peer),
    the operator's client certificate (CN `kurable`), root's (CN `root`, for set-up), and
    a CA that signed none of them (to prove a wrong CA is refused)."""

    directory: Path

    def __getattr__(self, name: str) -> Path:
        files = {
            "ca_cert": "ca.crt",
            "member_cert": "member.crt",
            "member_key": "member.key",
            "client_cert": "kurable.crt",
            "client_key": "kurable.key",
            "root_cert": "root.crt",
            "root_key": "root.key",
            "other_ca_cert": "other-ca.crt",
        }
        if name not in files:
            raise AttributeError(name)
        return self.directory / files[name]


def make_pki(directory: Path) -> EtcdPKI:
    """Generate the cluster's PKI in `directory` (EC P-256, valid a year)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = EtcdPKI(directory)
    now = datetime.datetime.now(datetime.UTC)

    def ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca("kurable-etcd-ca")
    other_cert, _ = ca("not-the-etcd-ca")

    def leaf(name: str, usages: list[x509.ObjectIdentifier], cert: Path, key_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        signed = (
            _builder(subject, ca_cert.subject, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(key_path, key)
        _write(cert, signed.public_bytes(serialization.Encoding.PEM))

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    leaf("etcd-member", both, pki.member_cert, pki.member_key)
    leaf(USER, [ExtendedKeyUsageOID.CLIENT_AUTH], pki.client_cert, pki.client_key)
    leaf("root", [ExtendedKeyUsageOID.CLIENT_AUTH], pki.root_cert, pki.root_key)
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.other_ca_cert, other_cert.public_bytes(serialization.Encoding.PEM))
    return pki


class EtcdCluster:
    """`members` etcd processes on free loopback ports, TLS everywhere, client
    certificates required, authentication on (user `kurable`, a random `password`).

    ``data_from`` (a snapshot file) restores it with ``etcdutl snapshot restore`` into
    fresh data directories first, as docs/operations.md tells an operator to; the users
    come with the snapshot, so give the snapshotted cluster's ``pki`` and ``passwords``
    (``(password, root_password)``). Use it as
    a context manager, or call :meth:`start` and :meth:`stop`; :meth:`kill` and
    :meth:`restart` act on one member.
    """

    def __init__(
        self,
        members: int = 3,
        state_dir: Path | None = None,
        data_from: Path | None = None,
        pki: EtcdPKI | None = None,
        passwords: tuple[str, str] | None = None,
        auth: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.size = members
        self._given = state_dir
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="kurable-etcd-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_from = data_from
        self.pki = pki or make_pki(self.state_dir / "pki")
        self.password, self.root_password = passwords or (
            secrets.token_urlsafe(12),
            secrets.token_urlsafe(12),
        )
        self.token = f"kurable-{secrets.token_hex(4)}"
        ports = _free_ports(3 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members : 2 * members]
        self.metrics_ports = ports[2 * members :]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * members
        self.auth = auth
        self.extra_args = extra_args
        """More etcd flags for every member (e.g. `--auth-token-ttl=2`)."""
        """Set up the users and turn authentication on at start (else: TLS only)."""

    # -- what clients need -----------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Client URLs, `https://127.0.0.1:<port>`, member 0 first."""
        return [f"https://127.0.0.1:{port}" for port in self.client_ports]

    def env(self) -> dict[str, str]:
        """KURABLE_ETCD_* variables pointing the operator (or endpoint) at this cluster
        with its CA, its client certificate, user and password."""
        return {
            "KURABLE_ETCD_ENDPOINTS": ",".join(self.endpoints),
            "KURABLE_ETCD_CACERT": str(self.pki.ca_cert),
            "KURABLE_ETCD_CERT": str(self.pki.client_cert),
            "KURABLE_ETCD_KEY": str(self.pki.client_key),
            "KURABLE_ETCD_USER": USER,
            "KURABLE_ETCD_PASSWORD": self.password,
        }

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member, wait for a healthy cluster; set up the users and enable
        authentication (unless restored from a snapshot, which carries them)."""
        if self.data_from is not None:
            self._restore(self.data_from)
        for index in range(self.size):
            self._spawn(index)
        self.wait_healthy()
        if self.data_from is None and self.auth:
            self._enable_auth()
        return self

    def stop(self) -> None:
        """SIGTERM every member (SIGKILL after 5 s); remove a temporary state dir."""
        for index in range(self.size):
            self._stop(index, kill=False)
        if self._given is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def kill(self, index: int) -> None:
        """SIGKILL member `index`: a crash (its data stays for :meth:`restart`)."""
        self._stop(index, kill=True)

    def restart(self, index: int) -> None:
        """Start member `index` again on its data; wait until it is healthy."""
        self._spawn(index)
        self._wait(index)

    def wait_healthy(self) -> None:
        for index in range(self.size):
            if self.processes[index] is not None:
                self._wait(index)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------

    def _name(self, index: int) -> str:
        return f"m{index}"

    def _initial_cluster(self) -> str:
        return ",".join(
            f"{self._name(i)}=https://127.0.0.1:{port}" for i, port in enumerate(self.peer_ports)
        )

    def _spawn(self, index: int) -> None:
        pki = self.pki
        client = f"https://127.0.0.1:{self.client_ports[index]}"
        peer = f"https://127.0.0.1:{self.peer_ports[index]}"
        argv = [
            find_tool("etcd"),
            f"--name={self._name(index)}",
            f"--data-dir={self.state_dir / self._name(index)}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self._initial_cluster()}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls=http://127.0.0.1:{self.metrics_ports[index]}",
            f"--cert-file={pki.member_cert}",
            f"--key-file={pki.member_key}",
            f"--trusted-ca-file={pki.ca_cert}",
            "--client-cert-auth",
            f"--peer-cert-file={pki.member_cert}",
            f"--peer-key-file={pki.member_key}",
            f"--peer-trusted-ca-file={pki.ca_cert}",
            "--peer-client-cert-auth",
            "--unsafe-no-fsync",  # tests only: see ControlPlane.start_etcd
            *self.extra_args,
        ]
        log = (self.state_dir / f"{self._name(index)}.log").open("ab")
        with log:
            self.processes[index] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    def _stop(self, index: int, kill: bool) -> None:
        process = self.processes[index]
        self.processes[index] = None
        if process is None or process.poll() is not None:
            return
        process.kill() if kill else process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, index: int, lines: int = 30) -> str:
        path = self.state_dir / f"{self._name(index)}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait(self, index: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.metrics_ports[index]}/health"
        while True:
            process = self.processes[index]
            if process is None or process.poll() is not None:
                raise EtcdClusterError(f"etcd member {index} exited:\n{self.log_tail(index)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if json.load(reply).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise EtcdClusterError(
                    f"etcd member {index} not healthy in {START_TIMEOUT:.0f}s:\n"
                    f"{self.log_tail(index)}"
                )
            time.sleep(0.1)

    def _root_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.root_cert), str(self.pki.root_key))
        return context

    def call(self, path: str, body: dict[str, object]) -> object:
        """POST to etcd's JSON gateway (`/v3/...`) on member 0 as `root` (client
        certificate); raise EtcdClusterError with etcd's message."""
        request = urllib.request.Request(
            f"{self.endpoints[0]}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._root_context()) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise EtcdClusterError(f"{path}: {e.read().decode(errors='replace')}") from None

    def _enable_auth(self) -> None:
        everything = base64.b64encode(b"\0").decode()  # --from-key '': every key
        steps: list[tuple[str, dict[str, object]]] = [
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/add", {"name": "root", "password": self.root_password}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/role/add", {"name": USER}),
            (
                "/v3/auth/role/grant",
                {
                    "name": USER,
                    "perm": {"permType": "READWRITE", "key": everything, "range_end": everything},
                },
            ),
            ("/v3/auth/user/add", {"name": USER, "password": self.password}),
            ("/v3/auth/user/grant", {"user": USER, "role": USER}),
            ("/v3/auth/enable", {}),
        ]
        for path, body in steps:
            self.call(path, body)

    def _restore(self, snapshot: Path) -> None:
        for index in range(self.size):
            data = self.state_dir / self._name(index)
            shutil.rmtree(data, ignore_errors=True)
            subprocess.run(
                [
                    find_tool("etcdutl"),
                    "snapshot",
                    "restore",
                    str(snapshot),
                    f"--name={self._name(index)}",
                    f"--data-dir={data}",
                    f"--initial-cluster={self._initial_cluster()}",
                    f"--initial-cluster-token={self.token}",
                    f"--initial-advertise-peer-urls=https://127.0.0.1:{self.peer_ports[index]}",
                ],
                check=True,
                capture_output=True,
            )

"""A real local Kubernetes control plane: etcd plus kube-apiserver on loopback ports.

This is controller-runtime's envtest approach: no kubelet, no controller manager, no
scheduler. Pods never run, namespaces are never finalised and ownerReferences are
never garbage-collected; everything else (storage, validation, CEL rules, RBAC,
watches, the status subresource) is the real thing.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import yaml

from kurable.testing._certs import ADMIN_USER, PKI, ensure_pki
from kurable.testing._tools import find_tool

START_TIMEOUT = 60.0  # seconds until etcd is healthy / kube-apiserver is ready
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
CRD_TIMEOUT = 30.0  # seconds until an installed CRD is Established and discoverable
LOG_TAIL_LINES = 40
_POLL = 0.1

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

PathLike = str | os.PathLike[str]


class ControlPlaneError(RuntimeError):
    """The local control plane could not start, or was used before it started."""


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` exited with an error; the message includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


@dataclass
class _Process:
    """One running binary and the part of its log file that belongs to this run."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ControlPlaneError:
        return ControlPlaneError(
            f"{self.name} {what}; last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, kill: bool = False, grace: float = STOP_GRACE) -> None:
        """SIGTERM (or SIGKILL) the process group, SIGKILL after ``grace`` seconds."""
        if self.popen.poll() is None:
            self._signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait()

    def _signal(self, sig: signal.Signals) -> None:
        # The process leads its own group (start_new_session), so the group id is its
        # pid; signalling the group also reaches anything it may have spawned.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


class ControlPlane:
    """etcd and kube-apiserver started as local processes, with an admin kubeconfig.

    ``state_dir=None`` uses a fresh temporary directory, removed by :meth:`stop`. A
    given ``state_dir`` is kept: its PKI and etcd data are reused by the next start
    (ports are chosen anew and the kubeconfig rewritten), which is what ``kurable dev``
    relies on to survive a restart. ``crds`` (files or directories of YAML) are
    installed by :meth:`start`. ``etcd_prefix_apiserver`` is where the API server keeps
    its objects in etcd; the operator uses the same etcd under its own prefix.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The processes
    are also stopped at interpreter exit and, on Linux, killed by the kernel if the
    thread that started them dies (so a crashed test runner leaves no orphans; start
    them from a long-lived thread).
    """

    def __init__(
        self,
        state_dir: PathLike | None = None,
        crds: Sequence[PathLike] | PathLike | None = None,
        etcd_prefix_apiserver: str = "/registry",
    ) -> None:
        self._given_state_dir = Path(state_dir).expanduser().resolve() if state_dir else None
        self._state_dir: Path | None = self._given_state_dir
        self._crds = crds
        self._etcd_prefix = etcd_prefix_apiserver
        self._pki: PKI | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._etcd_client_port = 0
        self._etcd_peer_port = 0
        self._apiserver_port = 0
        self._lock: IO[bytes] | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver, wait until the API serves, install the CRDs.

        Returns ``self``. Raises :class:`ControlPlaneError` (with the tail of the
        failing process's log) or :class:`~kurable.testing.ToolNotFound`.
        """
        if self._started:
            return self
        # Resolve the binaries first: a missing tool is the most likely failure and its
        # message says what to do.
        find_tool("etcd")
        find_tool("kube-apiserver")
        if self._given_state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="kurable-cp-"))
        state_dir = self.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        self._started = True
        atexit.register(self.stop)
        try:
            self._pki = ensure_pki(state_dir / "pki")
            self._ssl_context = None
            # A free port can be taken by someone else between our probe and the bind
            # of the server (parallel pytest workers start at the same moment): retry.
            for attempt in range(3):
                ports = _free_ports(3)
                self._etcd_client_port, self._etcd_peer_port, self._apiserver_port = ports
                try:
                    self.start_etcd()
                    self.start_apiserver()
                    break
                except ControlPlaneError as e:
                    self._stop_processes(kill=True)
                    if "address already in use" not in str(e) or attempt == 2:
                        raise
            if self._crds is not None:
                self.install_crds(self._crds)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both processes (SIGTERM, then SIGKILL after a few seconds) and remove a
        temporary state directory. Idempotent; safe to call after a failed start."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        self._stop_processes(kill=False)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if self._given_state_dir is None and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.server if self._started else "stopped"
        return f"<ControlPlane {where} state_dir={self._state_dir}>"

    def _stop_processes(self, kill: bool) -> None:
        # The API server first: it would otherwise log etcd errors while shutting down.
        self.stop_apiserver(kill=kill)
        self.stop_etcd(kill=kill)

    # -- the two processes, separately (for crash tests) -----------------------------

    def start_etcd(self) -> None:
        """(Re)start etcd on this control plane's ports and data directory; wait until
        it is healthy. A running API server reconnects by itself."""
        self._require_started()
        if self._etcd is not None and self._etcd.popen.poll() is None:
            return
        client = f"http://127.0.0.1:{self._etcd_client_port}"
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        argv = [
            find_tool("etcd"),
            "--name=kurable",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kurable={peer}",
            "--initial-cluster-state=new",
            # Without compaction the keyspace history grows without bound.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--quota-backend-bytes=4294967296",
            # Tests and `kurable dev` trade durability across a power loss or kernel
            # crash for speed: writes still reach the page cache, so killing etcd loses
            # nothing, but an OS crash can. Never use this setting for real data.
            "--unsafe-no-fsync",
        ]
        self._etcd = self._spawn("etcd", argv, self.state_dir / "etcd.log")
        self._wait(self._etcd, "did not become healthy", self._etcd_healthy)

    def stop_etcd(self, kill: bool = False) -> None:
        """Stop etcd: SIGTERM (SIGKILL after a grace period), or SIGKILL at once."""
        if self._etcd is not None:
            self._etcd.stop(kill=kill)
            self._etcd = None

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on this control plane's port, rewrite the kubeconfig
        and wait until it is ready and the ``default`` namespace exists."""
        self._require_started()
        if self._apiserver is not None and self._apiserver.popen.poll() is None:
            return
        pki = self._require_pki()
        server = f"https://127.0.0.1:{self._apiserver_port}"
        argv = [
            find_tool("kube-apiserver"),
            f"--etcd-servers=http://{self.etcd_endpoint}",
            f"--etcd-prefix={self._etcd_prefix}",
            f"--secure-port={self._apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No controller manager runs, so nothing would create the service-account
            # tokens this admission plugin waits for; Pods could never be created.
            "--disable-admission-plugins=ServiceAccount",
        ]
        self._write_kubeconfig(server)
        self._apiserver = self._spawn("kube-apiserver", argv, self.state_dir / "kube-apiserver.log")
        self._wait(self._apiserver, "did not become ready", self._apiserver_ready)

    def stop_apiserver(self, kill: bool = False) -> None:
        """Stop kube-apiserver: SIGTERM (SIGKILL after a grace period), or SIGKILL."""
        if self._apiserver is not None:
            self._apiserver.stop(kill=kill)
            self._apiserver = None

    # -- what clients need -----------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The directory with the PKI, the etcd data, the logs and the kubeconfig."""
        if self._state_dir is None:
            raise ControlPlaneError("the control plane is not started: call start() first")
        return self._state_dir

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig (client certificate of ``kurable-admin`` in
        ``system:masters``), with the certificates embedded."""
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:<port>``."""
        self._require_started()
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        """etcd's client endpoint, ``127.0.0.1:<port>`` (plain HTTP on loopback)."""
        self._require_started()
        return f"127.0.0.1:{self._etcd_client_port}"

    def env(self, server: str | None = None) -> dict[str, str]:
        """Environment variables pointing a subprocess (the operator, kubectl, helm) at
        this control plane; merge them into ``os.environ``. With ``server``, the
        kubeconfig names that URL instead (see :meth:`kubeconfig_for`)."""
        kubeconfig = self.kubeconfig if server is None else self.kubeconfig_for(server)
        return {"KUBECONFIG": str(kubeconfig), "KURABLE_ETCD_ENDPOINTS": self.etcd_endpoint}

    def kubeconfig_for(self, server: str) -> Path:
        """An admin kubeconfig like :attr:`kubeconfig` that names another URL for the API
        server, e.g. a proxy in front of it (``https://127.0.0.1:<port>``: the serving
        certificate is for 127.0.0.1, so TLS verification through a loopback proxy
        works). Written once per URL into the state directory."""
        self._require_started()
        port = urllib.parse.urlsplit(server).port
        path = self.state_dir / f"kubeconfig-{port or 'default'}"
        self._write_kubeconfig(server, path)
        return path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl`` with the admin kubeconfig; output is captured as text.

        Raises :class:`KubectlError` (a ``CalledProcessError`` whose message includes
        stderr) on a non-zero exit if ``check``.
        """
        argv = [
            find_tool("kubectl"),
            f"--kubeconfig={self.kubeconfig}",
            # A cache per control plane: ports change between runs, and a shared cache
            # would collect one directory per port in ~/.kube/cache.
            f"--cache-dir={self.state_dir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def api_client(self) -> ApiClient:
        """A new synchronous ``kubernetes.client.ApiClient`` with the admin credentials
        of :attr:`kubeconfig`.

        The caller owns it: close it (or use it in a ``with`` block) when done.
        """
        # Imported here: the kubernetes package takes a while to import, and the pytest
        # plugin imports this module in every test run, with a cluster or not.
        from kubernetes import client

        # Built from the PKI files the kubeconfig embeds rather than by parsing the
        # kubeconfig: the same credentials, without the temporary files the kubeconfig
        # loader writes, and attributes rather than constructor arguments because those
        # differ between releases of the client.
        pki = self._require_pki()
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(pki.ca_cert)
        configuration.cert_file = str(pki.admin_cert)
        configuration.key_file = str(pki.admin_key)
        return client.ApiClient(configuration)

    def install_crds(self, paths: Sequence[PathLike] | PathLike) -> list[str]:
        """Create or update the CustomResourceDefinitions in ``paths`` (YAML files, or
        directories whose ``*.yaml``/``*.yml`` files are read; multi-document files are
        fine) and wait until each is Established and served; create or update the
        ValidatingAdmissionPolicies and their bindings found beside them (the API server
        enforces them shortly after). Returns the CRDs' names."""
        from kubernetes import client

        documents = list(_read_crds(paths))
        crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
        with self.api_client() as api:
            # Typed as Any: the CRDs are passed as plain dicts, which the client sends as
            # they are, but its type hints only admit its model classes.
            extensions: Any = client.ApiextensionsV1Api(api)
            admission: Any = client.AdmissionregistrationV1Api(api)
            for crd in crds:
                _create_or_replace(extensions, "custom_resource_definition", crd)
            for document in documents:
                if document["kind"] in _ADMISSION_KINDS:
                    _create_or_replace(admission, _ADMISSION_KINDS[document["kind"]], document)
            names = [crd["metadata"]["name"] for crd in crds]
            for crd in crds:
                self._wait_crd_served(extensions, crd)
        return names

    # -- internals -------------------------------------------------------------------

    def _lock_state_dir(self) -> None:
        # Two control planes on one etcd data directory would corrupt it or hang; the
        # kernel drops the lock when its holder dies, so a crash leaves no stale lock.
        lock = (self.state_dir / "lock").open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ControlPlaneError(
                f"{self.state_dir} is in use by another running control plane "
                "(another `kurable dev`?): stop it, or use another state directory"
            ) from None
        self._lock = lock

    def _require_started(self) -> None:
        if not self._started:
            raise ControlPlaneError("the control plane is not started: call start() first")

    def _require_pki(self) -> PKI:
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started: call start() first")
        return self._pki

    def _spawn(self, name: str, argv: list[str], log_path: Path) -> _Process:
        with log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(argv)}\n".encode())
            log.flush()
            offset = log.tell()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                # Its own session: a Ctrl-C in the test runner's terminal reaches pytest,
                # which stops the processes in order, instead of killing them mid-way.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        return _Process(name, popen, log_path, offset)

    def _wait(self, process: _Process, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.popen.poll() is not None:
                raise process.failure(f"exited with code {process.popen.returncode}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise process.failure(f"{what} within {START_TIMEOUT:.0f}s")
            time.sleep(_POLL)

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.etcd_endpoint}/health", timeout=2) as r:
                return bool(json.load(r).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        # /readyz turns 200 once storage and the post-start hooks are done; the default
        # namespace is created a moment later by the API server's own bootstrap loop,
        # and clients (kopf, `kubectl apply` without -n) expect it.
        return self._https_ok("/readyz") and self._https_ok("/api/v1/namespaces/default")

    def _https_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.server}{path}", context=self._admin_ssl_context(), timeout=2
            ) as response:
                return bool(response.status == 200)
        except (OSError, ssl.SSLError):  # URLError and HTTPError are OSErrors
            return False

    def _admin_ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            pki = self._require_pki()
            self._ssl_context = ssl.create_default_context(cafile=str(pki.ca_cert))
            self._ssl_context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return self._ssl_context

    def _write_kubeconfig(self, server: str, path: Path | None = None) -> None:
        path = path or self.kubeconfig
        pki = self._require_pki()

        def data(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kurable",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": data(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate-data": data(pki.admin_cert),
                        "client-key-data": data(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kurable",
                    "context": {"cluster": "kurable", "user": ADMIN_USER, "namespace": "default"},
                }
            ],
            "current-context": "kurable",
        }
        tmp = path.with_name(f"{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        os.replace(tmp, path)

    def _discovered(self, group: str, version: str, plural: str) -> bool:
        # Plain HTTPS rather than the kubernetes client: its low-level call_api changed
        # signature across releases.
        try:
            with urllib.request.urlopen(
                f"{self.server}/apis/{group}/{version}",
                context=self._admin_ssl_context(),
                timeout=5,
            ) as response:
                resources = json.load(response).get("resources", [])
        except (OSError, ValueError):
            return False
        return any(r.get("name") == plural for r in resources)

    def _wait_crd_served(self, extensions: Any, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        versions = [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
        deadline = time.monotonic() + CRD_TIMEOUT
        while True:
            conditions = {
                c.type: c
                for c in (extensions.read_custom_resource_definition(name).status.conditions or [])
            }
            names_accepted = conditions.get("NamesAccepted")
            if names_accepted is not None and names_accepted.status == "False":
                raise ControlPlaneError(f"CRD {name}: names not accepted: {names_accepted.message}")
            established = conditions.get("Established")
            # Established means the API server serves the resource; discovery (what
            # kubectl and kopf look at) follows a moment later, so wait for it too.
            if (
                established is not None
                and established.status == "True"
                and all(self._discovered(group, v, plural) for v in versions)
            ):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"CRD {name} was not established and discoverable within "
                    f"{CRD_TIMEOUT:.0f}s; conditions: {list(conditions.values())}"
                )
            time.sleep(_POLL)


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all different (the sockets are held open together
    so that the kernel cannot hand out the same port twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel SIGKILL the child when the thread
    that forked it exits, so a test runner killed with SIGKILL leaves no orphans."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Loaded in the parent: between fork and exec only async-signal-safe calls.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        # The parent may have died before prctl took effect.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _read_crds(paths: Sequence[PathLike] | PathLike) -> Iterator[dict[str, Any]]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    for file in files:
        with file.open() as f:
            for document in yaml.safe_load_all(f):
                if document is None:
                    continue
                if document.get("kind") not in ("CustomResourceDefinition", *_ADMISSION_KINDS):
                    raise ControlPlaneError(
                        f"{file}: expected only CustomResourceDefinitions and "
                        f"ValidatingAdmissionPolicies (and bindings), found "
                        f"kind {document.get('kind')!r}"
                    )
                yield document


_ADMISSION_KINDS = {
    "ValidatingAdmissionPolicy": "validating_admission_policy",
    "ValidatingAdmissionPolicyBinding": "validating_admission_policy_binding",
}
"""The admission kinds `install_crds` takes, by the kubernetes client's method suffix."""


def _create_or_replace(api: Any, kind: str, document: dict[str, Any]) -> None:
    """`api.create_<kind>`, or on conflict `replace_<kind>` at the stored resourceVersion."""
    from kubernetes.client.exceptions import ApiException

    name = document["metadata"]["name"]
    for _ in range(5):
        try:
            getattr(api, f"create_{kind}")(body=document)
            return
        except ApiException as e:
            if e.status != 409:
                raise
        existing = getattr(api, f"read_{kind}")(name)
        body = {
            **document,
            "metadata": {
                **document["metadata"],
                "resourceVersion": existing.metadata.resource_version,
            },
        }
        try:
            getattr(api, f"replace_{kind}")(name, body=body)
            return
        except ApiException as e:
            # 409 again: someone changed it between our read and replace; retry.
            # 404: deleted meanwhile; create again.
            if e.status not in (404, 409):
                raise
    raise ControlPlaneError(f"{document['kind']} {name}: kept conflicting with concurrent updates")

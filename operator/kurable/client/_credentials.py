"""Where the client finds its endpoint and its bearer token, as kubectl finds credentials.

The URL: the `endpoint` argument (the CLI's `--endpoint`), else `$KURABLE_ENDPOINT`.
The token, first found wins:

1. the `token` argument (the CLI's `--token`), else `$KURABLE_TOKEN`;
2. the kubeconfig's current user (`--kubeconfig`, else `$KUBECONFIG`, a `:`-separated
   list merged as kubectl does: the first file to set a value wins, else
   `~/.kube/config`; the context: `--context`, else `current-context`):
   - `token` (a static token), or `tokenFile` (read at each use: a rotated file works);
   - `exec`: a client-go credential plugin, run as kubectl runs it: the command (relative
     to the kubeconfig's directory when it holds a `/`) with `args` and `env` added to
     this process's environment, `KUBERNETES_EXEC_INFO` set to an `ExecCredential`
     request (`client.authentication.k8s.io`, `spec.interactive: false`), no stdin; its
     stdout is an `ExecCredential` whose `status.token` is used until its
     `status.expirationTimestamp` (for the life of the process without one), and it is
     run again after the endpoint answers 401.

No token anywhere: requests go without one (an endpoint started with
`--allow-anonymous` serves them; any other answers 401).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ._errors import ClientError

ENDPOINT_ENV = "KURABLE_ENDPOINT"
TOKEN_ENV = "KURABLE_TOKEN"
EXEC_TIMEOUT_SECONDS = 60.0
"""The longest a credential plugin may run."""
EXPIRY_SKEW_SECONDS = 10.0
"""A plugin's token is renewed this long before its expirationTimestamp."""


def endpoint_url(endpoint: str | None) -> str:
    """The endpoint's base URL (no trailing `/`). Raises ClientError when none is given."""
    url = endpoint or os.environ.get(ENDPOINT_ENV) or ""
    if not url:
        raise ClientError(
            f"no endpoint: pass --endpoint URL (endpoint=) or set ${ENDPOINT_ENV} "
            "(`kurable dev` writes it into .kurable/dev/env)"
        )
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


@dataclass
class Kubeconfig:
    """The parts of a (merged) kubeconfig the client uses: the current context's
    namespace and user."""

    namespace: str | None = None
    user: dict[str, Any] = field(default_factory=dict)
    user_name: str = ""
    directory: Path = field(default_factory=Path.cwd)
    """The directory of the file that defined the user (relative paths start there)."""

    @classmethod
    def load(cls, path: str | None = None, context: str | None = None) -> Kubeconfig:
        """The kubeconfig at `path` (else $KUBECONFIG, else ~/.kube/config); empty when
        there is none. Raises ClientError for a file that is not a kubeconfig or a
        `context` it does not define."""
        spec = path or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        files = [Path(p) for p in spec.split(os.pathsep) if p]
        contexts: dict[str, dict[str, Any]] = {}
        users: dict[str, tuple[dict[str, Any], Path]] = {}
        current: str | None = None
        for file in files:
            if not file.is_file():
                if path is not None and len(files) == 1:
                    raise ClientError(f"kubeconfig {file} does not exist")
                continue
            try:
                doc = yaml.safe_load(file.read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ClientError(f"cannot read kubeconfig {file}: {e}") from None
            if not isinstance(doc, dict):
                raise ClientError(f"kubeconfig {file} is not a kubeconfig (not a mapping)")
            current = current or doc.get("current-context")
            for item in doc.get("contexts") or []:
                contexts.setdefault(item.get("name"), item.get("context") or {})
            for item in doc.get("users") or []:
                users.setdefault(item.get("name"), (item.get("user") or {}, file.parent))
        name = context or current
        if not name:
            return cls()
        if name not in contexts:
            if context is not None:
                raise ClientError(f"the kubeconfig has no context {context!r}")
            return cls()
        chosen = contexts[name]
        user_name = chosen.get("user") or ""
        user, directory = users.get(user_name, ({}, Path.cwd()))
        return cls(chosen.get("namespace"), user, user_name, directory.resolve())


class TokenSource:
    """The bearer token to send, from the first source that has one (module docstring).

    `token()` may run a credential plugin (blocking: async callers run it in a thread);
    `renew()` forgets a plugin's token after a 401, so that the next `token()` asks the
    plugin again, and says whether doing so may help."""

    def __init__(self, token: str | None = None, kubeconfig: Kubeconfig | None = None) -> None:
        self._static = token or os.environ.get(TOKEN_ENV) or None
        self._config = kubeconfig or Kubeconfig()
        self._cached: tuple[str, float] | None = None  # (token, expires at: time.time())
        self._lock = threading.Lock()

    @property
    def runs_plugin(self) -> bool:
        """True when the token comes from an exec credential plugin."""
        return self._static is None and "exec" in self._config.user

    def token(self) -> str | None:
        """The token, None when no source has one. Raises ClientError when the
        kubeconfig's tokenFile cannot be read or its plugin fails."""
        if self._static is not None:
            return self._static
        user = self._config.user
        if user.get("token"):
            return str(user["token"])
        if user.get("tokenFile"):
            file = self._config.directory / str(user["tokenFile"])
            try:
                return file.read_text().strip()
            except OSError as e:
                raise ClientError(f"cannot read the kubeconfig user's tokenFile: {e}") from None
        if "exec" in user:
            with self._lock:
                if self._cached is None or self._cached[1] - EXPIRY_SKEW_SECONDS <= time.time():
                    self._cached = run_exec_plugin(user["exec"], self._config.directory)
                return self._cached[0]
        return None

    def renew(self) -> bool:
        """After a 401: drop a plugin's token; True if a new one may be had."""
        if not self.runs_plugin:
            return False
        with self._lock:
            self._cached = None
        return True


def run_exec_plugin(spec: dict[str, Any], directory: Path) -> tuple[str, float]:
    """Run a client-go exec credential plugin; (its token, when it expires as a Unix time,
    infinity without expirationTimestamp). Raises ClientError saying why it failed."""
    command = str(spec.get("command") or "")
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    if not command:
        raise ClientError("the kubeconfig user's exec has no command")
    if os.sep in command and not os.path.isabs(command):
        command = str(directory / command)
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item["name"])] = str(item["value"])
    request = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(request)
    argv = [command, *(str(a) for a in spec.get("args") or [])]
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        hint = spec.get("installHint")
        raise ClientError(
            f"credential plugin {command!r} did not run: {e}" + (f"\n{hint}" if hint else "")
        ) from None
    if done.returncode != 0:
        raise ClientError(
            f"credential plugin {command!r} exited {done.returncode}: {done.stderr.strip()[:500]}"
        )
    try:
        answer = json.loads(done.stdout)
        status = answer["status"]
        token = status["token"]
    except (ValueError, KeyError, TypeError):
        raise ClientError(
            f"credential plugin {command!r} printed no ExecCredential with status.token"
        ) from None
    if answer.get("apiVersion") != api_version or answer.get("kind") != "ExecCredential":
        raise ClientError(
            f"credential plugin {command!r} answered {answer.get('kind')} "
            f"{answer.get('apiVersion')}, not ExecCredential {api_version}"
        )
    expires = status.get("expirationTimestamp")
    until = float("inf")
    if expires:
        try:
            until = datetime.fromisoformat(str(expires).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ClientError(
                f"credential plugin {command!r}: expirationTimestamp {expires!r} is not RFC 3339"
            ) from None
    return str(token), until

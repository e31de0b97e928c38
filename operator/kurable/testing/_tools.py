"""Locating the control-plane binaries (kube-apiserver, etcd, kubectl, helm)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class ToolNotFound(FileNotFoundError):
    """A binary the local control plane needs is neither configured nor installed."""


def tools_dir() -> Path:
    """Where ``hack/tools.sh`` (``make tools``) caches the binaries it builds.

    ``$KURABLE_TOOLS_DIR`` if set, else ``${XDG_CACHE_HOME:-~/.cache}/kurable/tools``.
    """
    configured = os.environ.get("KURABLE_TOOLS_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "kurable" / "tools"


def tool_env_var(name: str) -> str:
    """The environment variable that overrides the path of a tool: ``kube-apiserver`` →
    ``KURABLE_KUBE_APISERVER``."""
    return "KURABLE_" + name.upper().replace("-", "_")


def find_tool(name: str) -> str:
    """Return the path of the binary ``name`` (e.g. ``"kube-apiserver"``, ``"etcd"``).

    Looked up, first match wins:

    1. the environment variable ``KURABLE_<NAME>`` (``-`` becomes ``_``), taken as is;
    2. ``<tools dir>/bin/<name>``, where ``make tools`` puts the pinned versions;
    3. ``<name>`` on ``PATH``.

    Raises :class:`ToolNotFound` with what to do when none of these exists.
    """
    variable = tool_env_var(name)
    configured = os.environ.get(variable)
    if configured:
        # An explicit setting is obeyed even if wrong, so that a typo surfaces as an
        # error instead of silently falling back to another version.
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ToolNotFound(f"{variable}={configured} is not an executable file")
        return str(path)
    cached = tools_dir() / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise ToolNotFound(
        f"{name} not found: run `make tools` (hack/tools.sh) to build the pinned version "
        f"into {tools_dir() / 'bin'}, or set {variable} to the path of the binary"
    )

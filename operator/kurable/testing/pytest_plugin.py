"""pytest fixtures for tests against a real local control plane.

Registered as the ``kurable`` pytest plugin (entry point ``pytest11``):

- ``control_plane`` (session): one :class:`~kurable.testing.ControlPlane` per pytest
  process (each pytest-xdist worker gets its own), with the CRDs of the directory in
  ``$KURABLE_CRDS_DIR``, or else ``<rootdir>/crds``, installed.
- ``namespace`` (function): the name of a new, empty namespace for one test.

A missing binary fails the tests that use these fixtures with the message saying how to
get it; nothing is skipped silently.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kurable.testing import ControlPlane


def _crds_dir(config: pytest.Config) -> Path | None:
    configured = os.environ.get("KURABLE_CRDS_DIR")
    directory = Path(configured) if configured else config.rootpath / "crds"
    if configured and not directory.is_dir():
        raise pytest.UsageError(f"KURABLE_CRDS_DIR={configured} is not a directory")
    if not directory.is_dir():
        return None
    has_yaml = any(p.suffix in (".yaml", ".yml") for p in directory.iterdir())
    return directory if has_yaml else None


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A running local control plane (etcd + kube-apiserver) with Kurable's CRDs."""
    # Imported here so that merely loading the plugin (every pytest run, unit tests
    # included) stays cheap.
    from kurable.testing import ControlPlane, ToolNotFound

    plane = ControlPlane(crds=_crds_dir(request.config))
    missing: ToolNotFound | None = None
    try:
        plane.start()
    except ToolNotFound as e:
        missing = e
    if missing is not None:
        # Outside the except block, so that the report shows the message alone.
        pytest.fail(str(missing), pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """The name of a new namespace (``test-<random>``) for one test.

    It is not deleted afterwards: without a controller manager nothing would finalise
    the deletion, and the control plane is thrown away at the end of the session.
    """
    from kubernetes import client

    name = f"test-{secrets.token_hex(4)}"
    with control_plane.api_client() as api:
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        client.CoreV1Api(api).create_namespace(body)
    return name

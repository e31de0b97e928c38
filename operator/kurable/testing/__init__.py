"""A real local Kubernetes control plane for tests and for ``kurable dev``.

:class:`ControlPlane` starts etcd and kube-apiserver on free loopback ports (the
envtest approach of controller-runtime: real storage, validation, RBAC and watches;
no kubelet, scheduler or controller manager) and installs CRDs::

    from kurable.testing import ControlPlane

    with ControlPlane(crds="crds") as cp:
        cp.kubectl("apply", "-f", "examples/hello.yaml")

The binaries come from :func:`find_tool` (``make tools`` builds the pinned versions).
:class:`OperatorProcess` and :class:`EndpointProcess` run `kurable operator` and
`kurable endpoint` as child processes. :class:`FreezableProxy` sits between a client and
the API server and can freeze the connections open at a moment (a watch that goes silent
without closing). :class:`EtcdCluster` starts a secured etcd cluster (TLS, client
certificates, authentication) for the operator, the way production runs it.

Installing Kurable also registers a pytest plugin with the fixtures ``control_plane``
(one per test process) and ``namespace`` (a fresh namespace per test).
"""

from kurable.testing._controlplane import ControlPlane, ControlPlaneError, KubectlError
from kurable.testing._endpoint import EndpointProcess
from kurable.testing._etcd import EtcdCluster, EtcdClusterError
from kurable.testing._operator import OperatorProcess
from kurable.testing._proxy import FreezableProxy
from kurable.testing._tools import ToolNotFound, find_tool

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "EndpointProcess",
    "EtcdCluster",
    "EtcdClusterError",
    "FreezableProxy",
    "KubectlError",
    "OperatorProcess",
    "ToolNotFound",
    "find_tool",
]

"""An operator with metrics (and, when asked, traces) and an endpoint on one namespace and
etcd prefix of their own: what the metrics, trace and console tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess

from .conftest import Isolated
from .endpoint_http import admin_token, call


class Stack:
    def __init__(self, cp: ControlPlane, logs: Path, name: str, env: dict[str, str]) -> None:
        self.cp = cp
        self.logs = logs
        self.space = Isolated(cp, logs, name)
        self.namespace = self.space.namespace
        self.env = {**cp.env(), **env}
        self.operator = self.new_operator()
        self.endpoint = EndpointProcess(
            cp.env(), logs / "endpoint.log", etcd_prefix=self.space.prefix
        )
        self.token = ""

    def new_operator(self) -> OperatorProcess:
        """An operator of this stack (the same executor id: a restarted container)."""
        return OperatorProcess(
            self.env,
            self.logs / "operator.log",
            namespaces=[self.namespace],
            etcd_prefix=self.space.prefix,
            extra_args=["--executor-id", "observed"],
            metrics=True,
        )

    def v1(self, path: str) -> str:
        return f"{self.endpoint.url}/v1/namespaces/{self.namespace}/{path}"

    def operator_metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        assert self.operator.metrics_url is not None
        return scrape(self.operator.metrics_url)

    def endpoint_metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(f"{self.endpoint.url}/metrics")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    answer = call(url)
    assert answer.status == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def stack(
    cp: ControlPlane, logs: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Start the stack's operator and endpoint; stop them after."""
    up = Stack(cp, logs, name, env or {})
    up.operator.start()
    up.endpoint.start()
    try:
        up.token = admin_token(cp, up.namespace)
        yield up
    finally:
        up.operator.stop()
        up.endpoint.stop()

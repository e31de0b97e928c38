"""Prometheus metrics of the operator and the endpoint move with the runs they count,
and their label sets stay bounded however many runs there are."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurable.testing import ControlPlane

from .conftest import eventually, journal, journal_revisions, wait_phase
from .endpoint_http import call
from .observe_stack import Stack, stack, value
from .service import Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def up(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs: Path = tmp_path_factory.mktemp("metrics")
    with stack(control_plane, logs, "metrics") as running:
        yield running


def template(name: str, steps: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }


def test_each_metric_moves_with_a_three_step_run_with_a_retry(up: Stack) -> None:
    with Service(failures=1) as service:
        up.cp.kubectl(
            "apply",
            "-n",
            up.namespace,
            "-f",
            "-",
            input=json.dumps(
                template(
                    "three",
                    [
                        {"name": "a", "set": {"x": 1}},
                        {
                            "name": "b",
                            "http": {"url": service.url("/b")},
                            "retry": {"maxAttempts": 3, "backoff": {"initial": "1s"}},
                        },
                        {"name": "c", "set": {"y": 2}},
                    ],
                )
            ),
        )
        operator_before = up.operator_metrics()
        endpoint_before = up.endpoint_metrics()
        started = call(
            up.v1("workflows"),
            "POST",
            up.token,
            {"templateRef": {"name": "three"}, "name": "counted"},
        )
        assert started.status == 201, started.text
        wait_phase(up.cp, up.namespace, "counted", ("Succeeded",))
        assert sum(service.keys.values()) == 2  # the retry happened

    ns = up.namespace

    def moved(name: str, **labels: str) -> float:
        return value(up.operator_metrics(), name, **labels) - value(operator_before, name, **labels)

    finished = {"namespace": ns, "template": "three", "phase": "Succeeded"}
    eventually(
        lambda: moved("kurable_workflow_runs_finished_total", **finished),
        lambda n: n == 1,
        what="the finished run counted",
    )
    assert moved("kurable_workflow_runs_started_total", namespace=ns, template="three") == 1
    assert moved("kurable_workflow_step_retries_total", kind="http") == 1
    duration = "kurable_workflow_step_duration_seconds_count"
    assert moved(duration, kind="set", outcome="succeeded") == 2
    assert moved(duration, kind="http", outcome="retrying") == 1
    assert moved(duration, kind="http", outcome="succeeded") == 1
    # the retry waited about its backoff (1 s): the retried attempt's sum shows real time
    assert (
        moved("kurable_workflow_step_duration_seconds_sum", kind="http", outcome="succeeded") < 30
    )
    # One observation per journal transaction (records that follow at once share one).
    uid = json.loads(up.cp.kubectl("get", "workflow", "counted", "-n", ns, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    transactions = len(set(journal_revisions(up.cp, uid, up.space.prefix)))
    assert transactions < len(journal(up.cp, uid, up.space.prefix))
    assert moved("kurable_journal_commit_duration_seconds_count") == transactions
    assert value(up.operator_metrics(), "kurable_workflow_runs_in_flight") == 0

    route = "/v1/namespaces/{namespace}/workflows"
    after = up.endpoint_metrics()
    key = {"route": route, "method": "POST", "code": "201"}
    assert (
        value(after, "kurable_endpoint_requests_total", **key)
        - value(endpoint_before, "kurable_endpoint_requests_total", **key)
        == 1
    )
    assert (
        value(after, "kurable_endpoint_request_duration_seconds_count", route=route, method="POST")
        >= 1
    )
    missing = call(up.v1("workflows/no-such-run"), token=up.token)
    assert missing.status == 404
    assert (
        value(
            up.endpoint_metrics(),
            "kurable_endpoint_requests_total",
            route="/v1/namespaces/{namespace}/workflows/{name}",
            method="GET",
            code="404",
        )
        >= 1
    )


def test_label_sets_stay_bounded_over_200_runs(up: Stack) -> None:
    """200 runs add no series: the labels name namespaces, templates, kinds and phases,
    never a run."""
    up.cp.kubectl(
        "apply",
        "-n",
        up.namespace,
        "-f",
        "-",
        input=json.dumps(template("tiny", [{"name": "only", "set": {"x": 1}}])),
    )

    def runs(first: int, count: int) -> None:
        items = [
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": f"many-{i}"},
                "spec": {"templateRef": {"name": "tiny"}},
            }
            for i in range(first, first + count)
        ]
        up.cp.kubectl(
            "apply",
            "-n",
            up.namespace,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        finished = {"namespace": up.namespace, "template": "tiny", "phase": "Succeeded"}
        eventually(
            lambda: value(
                up.operator_metrics(), "kurable_workflow_runs_finished_total", **finished
            ),
            lambda n: n >= first + count,
            timeout=180,
            what=f"{first + count} runs finished",
        )

    runs(0, 10)
    call(up.v1("workflows/many-3"), token=up.token)
    series_after_10 = set(up.operator_metrics()) | set(up.endpoint_metrics())
    runs(10, 190)
    for i in (7, 150, 199):
        call(up.v1(f"workflows/many-{i}"), token=up.token)
        call(up.v1(f"workflows/many-{i}/history"), token=up.token)
    operator_series = up.operator_metrics()
    series_after_200 = set(operator_series) | set(up.endpoint_metrics())
    new = {name for name, _ in series_after_200 - series_after_10}
    # Only routes first requested after the tenth run (history; a probe or a scrape the
    # fixtures happened not to make before) may add series: about 20 per route (buckets,
    # sum, count, created, total). A label that carried a run would add at least 190.
    assert len(series_after_200 - series_after_10) <= 60, new
    labels = " ".join(v for _, pairs in series_after_200 for _, v in pairs)
    assert not re.search(r"many-\d", labels), "a label carries a run's name"
    uids = [
        item["metadata"]["uid"]
        for item in json.loads(
            up.cp.kubectl("get", "workflows", "-n", up.namespace, "-o", "json").stdout
        )["items"][:20]
    ]
    assert not any(uid in labels for uid in uids), "a label carries a run's uid"
    assert (
        value(
            operator_series,
            "kurable_workflow_runs_started_total",
            namespace=up.namespace,
            template="tiny",
        )
        == 200
    )


def test_schedule_ticks_started_and_skipped_are_counted(up: Stack) -> None:
    """Every second a tick; Forbid skips those that find the first run still waiting."""
    ns = up.namespace
    up.cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(template("forever", [{"name": "w", "wait": {"signal": "never"}}])),
    )
    schedule = {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "ticking"},
        "spec": {"every": "1s", "templateRef": {"name": "forever"}, "concurrencyPolicy": "Forbid"},
    }
    up.cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(schedule))

    def counted() -> tuple[float, float]:
        samples = up.operator_metrics()
        started = value(
            samples, "kurable_schedule_ticks_started_total", namespace=ns, schedule="ticking"
        )
        skipped = sum(
            v
            for (name, labels), v in samples.items()
            if name == "kurable_schedule_ticks_skipped_total" and ("schedule", "ticking") in labels
        )
        return started, skipped

    try:
        started, _ = eventually(
            counted, lambda c: c[0] >= 1 and c[1] >= 1, what="a tick started and one skipped"
        )
    finally:
        up.cp.kubectl("delete", "schedule", "ticking", "-n", ns)
    listed = json.loads(up.cp.kubectl("get", "workflows", "-n", ns, "-o", "json").stdout)
    assert started == sum(
        1 for w in listed["items"] if w["spec"].get("templateRef", {}).get("name") == "forever"
    )

"""The endpoint's schedule routes (trigger, backfill) on the real control plane, with a real
operator: the same decisions as `kurable schedule trigger|backfill`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kurable.testing import ControlPlane, EndpointProcess, OperatorProcess

from .conftest import apply, eventually, get
from .endpoint_http import admin_token, call
from .test_schedules import LONG, QUICK, runs, schedule, tick_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EndpointProcess]:
    log: Path = tmp_path_factory.mktemp("endpoint") / "endpoint.log"
    with EndpointProcess(control_plane.env(), log) as process:
        yield process


def url(endpoint: EndpointProcess, namespace: str, path: str) -> str:
    return f"{endpoint.url}/v1/namespaces/{namespace}/schedules/{path}"


def test_trigger_starts_one_run_and_backfill_each_tick_exactly_once(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    token = admin_token(cp, namespace)
    apply(cp, namespace, QUICK)
    apply(cp, namespace, schedule("hourly", cron="0 * * * *", successfulRunsHistoryLimit=100))

    triggered = call(url(endpoint, namespace, "hourly/trigger"), "POST", token)
    assert triggered.status == 201, triggered.text
    name = triggered.body["name"]
    assert "-manual-" in name and triggered.body["labels"]["kurable.dev/trigger"] == "manual"
    assert triggered.headers["location"] == f"/v1/namespaces/{namespace}/workflows/{name}"
    eventually(
        lambda: get(cp, namespace, f"workflow/{name}"),
        lambda w: (w.get("status") or {}).get("phase") == "Succeeded",
        30,
        "the triggered run to succeed",
    )

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(hours=3), now - timedelta(hours=1)
    span = {"from": start.isoformat(), "to": end.isoformat().replace("+00:00", "Z")}
    first = call(url(endpoint, namespace, "hourly/backfill"), "POST", token, body=span)
    assert first.status == 200, first.text
    wanted = [start, start + timedelta(hours=1), end]
    started = [r["name"] for r in first.body["started"]]
    assert len(started) == 3 and first.body["existing"] == [] and first.body["skipped"] == []
    again = call(url(endpoint, namespace, "hourly/backfill"), "POST", token, body=span)
    assert again.status == 200, again.text
    assert again.body["started"] == [] and again.body["existing"] == started
    backfilled = [r for r in runs(cp, namespace, "hourly") if r["metadata"]["name"] in started]
    assert [tick_of(r) for r in backfilled] == wanted
    assert all(r["metadata"]["labels"]["kurable.dev/trigger"] == "backfill" for r in backfilled)
    assert len(runs(cp, namespace, "hourly")) == 4


@pytest.mark.parametrize(
    ("body", "pointer", "words"),
    [
        ({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, "/from", "is not a time"),
        ({"from": "2026-01-01T00:00:00", "to": "2026-01-01T00:00:00Z"}, "/from", "no UTC offset"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "/to", "before from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z"}, "/to", "future"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2021-01-01T00:00:00Z"}, "/to", "1000 ticks"),
        ({"from": "2026-01-01T00:00:00Z"}, "/to", "required"),
    ],
)
def test_a_bad_range_is_422_with_the_field(
    control_plane: ControlPlane,
    endpoint: EndpointProcess,
    namespace: str,
    body: dict[str, Any],
    pointer: str,
    words: str,
) -> None:
    token = admin_token(control_plane, namespace)
    apply(control_plane, namespace, schedule("hourly", cron="0 * * * *"))
    answer = call(url(endpoint, namespace, "hourly/backfill"), "POST", token, body=body)
    assert answer.status == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    (error,) = answer.body["errors"]
    assert error["pointer"] == pointer and words in error["detail"], answer.body


def test_unknown_schedule_is_404_and_an_invalid_one_422_naming_its_field(
    control_plane: ControlPlane, endpoint: EndpointProcess, namespace: str
) -> None:
    token = admin_token(control_plane, namespace)
    span = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T05:00:00Z"}
    for path, body in (("nope/trigger", None), ("nope/backfill", span)):
        answer = call(url(endpoint, namespace, path), "POST", token, body=body)
        assert answer.status == 404, answer.text
        assert 'Schedule "nope" does not exist' in answer.body["detail"]
    apply(control_plane, namespace, schedule("mars", cron="0 * * * *", timeZone="Mars/Olympus"))
    answer = call(url(endpoint, namespace, "mars/trigger"), "POST", token)
    assert answer.status == 422, answer.text
    assert answer.body["errors"][0]["field"] == "spec.timeZone", answer.body
    assert get(control_plane, namespace, "workflows").get("items", []) == []


def test_forbid_skips_a_trigger_and_the_backfilled_ticks_while_a_run_is_active(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    endpoint: EndpointProcess,
    namespace: str,
) -> None:
    cp = control_plane
    token = admin_token(cp, namespace)
    apply(cp, namespace, LONG)
    apply(
        cp,
        namespace,
        schedule(
            "nightly", cron="0 3 * * *", templateRef={"name": "long"}, concurrencyPolicy="Forbid"
        ),
    )
    first = call(url(endpoint, namespace, "nightly/trigger"), "POST", token)
    assert first.status == 201, first.text
    second = call(url(endpoint, namespace, "nightly/trigger"), "POST", token)
    assert second.status == 409, second.text
    assert "concurrencyPolicy Forbid" in second.body["detail"]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    span = {"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()}
    answer = call(url(endpoint, namespace, "nightly/backfill"), "POST", token, body=span)
    assert answer.status == 200, answer.text
    assert answer.body["started"] == []
    assert [s["tick"][:10] for s in answer.body["skipped"]] == [
        (today - timedelta(days=d)).date().isoformat() for d in (2, 1)
    ]
    assert all("a run is active" in s["reason"] for s in answer.body["skipped"])
    assert [r["metadata"]["name"] for r in runs(cp, namespace, "nightly")] == [first.body["name"]]

"""Start requests: ?wait durations, run names from Idempotency-Keys, request digests."""

from __future__ import annotations

import pytest

from kurable.endpoint._models import StartRun
from kurable.endpoint._problems import Problem
from kurable.endpoint._runs import (
    DIGEST_ANNOTATION,
    KEY_ANNOTATION,
    TEMPLATE_LABEL,
    request_digest,
    run_name,
    run_view,
    wait_seconds,
    workflow_object,
)


def start(**fields: object) -> StartRun:
    return StartRun.model_validate({"templateRef": {"name": "order"}, **fields})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1m30s", 90), ("45", 45), ("0.5s", 0.5)]
)
def test_wait_reads_seconds_and_minutes(text: str, seconds: float) -> None:
    assert wait_seconds(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30h", "-1s", "10m"])
def test_wait_refuses_other_text_and_waits_over_the_cap(text: str) -> None:
    with pytest.raises(Problem) as caught:
        wait_seconds(text)
    assert caught.value.status == 400


def test_no_wait_is_none() -> None:
    assert wait_seconds(None) is None


def test_the_same_key_names_the_same_run_and_a_name_wins() -> None:
    assert run_name(start(), "order-7") == run_name(start(input={"x": 1}), "order-7")
    assert run_name(start(), "Order 7/€") != run_name(start(), "order-7")
    assert run_name(start(name="mine"), "order-7") == "mine"
    assert run_name(start(), None) is None


def test_a_name_kubernetes_refuses_is_422() -> None:
    with pytest.raises(Problem) as caught:
        run_name(start(name="Not_A_Name"), None)
    assert caught.value.status == 422
    assert caught.value.errors[0]["pointer"] == "/name"


def test_the_digest_differs_with_the_body_and_ignores_key_order() -> None:
    one = request_digest(start(input={"a": 1, "b": 2}))
    assert one == request_digest(
        StartRun.model_validate({"input": {"b": 2, "a": 1}, "templateRef": {"name": "order"}})
    )
    assert one != request_digest(start(input={"a": 1, "b": 3}))


def test_the_workflow_carries_the_key_the_digest_and_the_template_label() -> None:
    body = start(input={"a": 1}, labels={"team": "shop"})
    obj = workflow_object(body, "order-7", "order-7")
    meta = obj["metadata"]
    assert meta["name"] == "order-7"
    assert meta["labels"] == {"team": "shop", TEMPLATE_LABEL: "order"}
    assert meta["annotations"] == {
        DIGEST_ANNOTATION: request_digest(body),
        KEY_ANNOTATION: "order-7",
    }
    assert obj["spec"] == {"templateRef": {"name": "order"}, "input": {"a": 1}}


def test_without_name_or_key_the_api_server_generates_one() -> None:
    meta = workflow_object(start(), None, None)["metadata"]
    assert "name" not in meta
    assert meta["generateName"] == "order-"


def test_the_run_view_shows_status_and_spec_flags() -> None:
    run = run_view(
        {
            "metadata": {"namespace": "n", "name": "r", "uid": "u"},
            "spec": {"templateRef": {"name": "t"}, "suspend": True},
            "status": {"phase": "Succeeded", "output": {"ok": True}, "currentStep": "s"},
        }
    )
    assert (run.template, run.suspend, run.phase, run.output) == (
        "t",
        True,
        "Succeeded",
        {"ok": True},
    )
    assert run.model_dump(by_alias=True)["currentStep"] == "s"

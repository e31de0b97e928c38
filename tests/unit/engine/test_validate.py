"""The eager definition validator: every problem, at any depth, each with its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine import entities, validate
from kurable.engine.validate import Problem, template_problems, workflow_problems
from tests.conftest import ROOT


def run(*steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"steps": list(steps), **spec}


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


FAN = {
    "name": "fan",
    "parallel": {
        "branches": [
            {"name": "a", "steps": [{"name": "nap", "sleep": {"duration": "1s"}}]},
            {"name": "b", "steps": [{"name": "calc", "set": {"x": "${ 1 + 1 }"}}]},
        ]
    },
}


def test_a_valid_definition_has_no_problems() -> None:
    spec = run(
        {"name": "first", "set": {"n": "${ input.n }"}, "when": "input.n > 0"},
        FAN,
        {
            "name": "each",
            "forEach": {"items": "${ input.items }"},
            "http": {"url": "http://x/${ item }", "body": {"i": "${ index }"}},
            "compensate": {"http": {"url": "http://x/undo", "method": "DELETE"}},
        },
        {"name": "later", "sleep": {"until": "${ input.at }"}, "next": "first"},
        output="${ vars.n }",
    )
    assert workflow_problems(spec) == []


def test_every_example_workflow_and_template_is_valid() -> None:
    checked = 0
    for path in sorted(Path(ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in ("Workflow", "WorkflowTemplate"):
                continue
            check = workflow_problems if doc["kind"] == "Workflow" else template_problems
            assert check(doc["spec"]) == [], path
            checked += 1
    assert checked > 0


def test_a_typo_nested_in_a_parallel_branch_names_its_path() -> None:
    fan = {
        "name": "fan",
        "parallel": {
            "branches": [{"name": "a", "steps": [{"name": "nap", "sleep": {"durationn": "1s"}}]}]
        },
    }
    spec = run({"name": "a", "set": {}}, {"name": "b", "set": {}}, fan)
    assert messages(workflow_problems(spec)) == [
        "spec.steps[2].parallel.branches[0].steps[0].sleep: unknown field durationn"
    ]


def test_a_typo_in_a_compensation_and_a_missing_field_are_both_reported() -> None:
    spec = run(
        {"name": "a", "set": {}, "compensate": {"sleep": {"duraton": "1s"}}},
        {"name": "b", "wait": {}},
    )
    assert messages(workflow_problems(spec)) == [
        "spec.steps[0].compensate.sleep: unknown field duraton",
        "spec.steps[1].wait: missing field signal",
    ]


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (FAN | {"when": "input.x >"}, "spec.steps[0].when"),
        (
            {
                "name": "fan",
                "parallel": {
                    "branches": [{"name": "a", "steps": [{"name": "s", "set": {"v": "${ 1 + }"}}]}]
                },
            },
            "spec.steps[0].parallel.branches[0].steps[0].set.v",
        ),
        (
            {"name": "each", "forEach": {"items": "${ input.items[ }"}, "set": {}},
            "spec.steps[0].forEach.items",
        ),
        ({"name": "nap", "sleep": {"until": "${ input.at + }"}}, "spec.steps[0].sleep.until"),
        (
            {
                "name": "call",
                "http": {"url": "http://x", "headers": [{"name": "A", "value": "${ ) }"}]},
            },
            "spec.steps[0].http.headers[0].value",
        ),
        (
            {"name": "cmd", "entity": {"name": "${ vars. }", "command": "go"}},
            "spec.steps[0].entity.name",
        ),
        (
            {"name": "a", "set": {}, "compensate": {"http": {"url": "http://x/${ ( }"}}},
            "spec.steps[0].compensate.http.url",
        ),
    ],
)
def test_a_bad_expression_is_reported_naming_its_field(step: dict[str, Any], path: str) -> None:
    problems = workflow_problems(run(step))
    assert len(problems) == 1, problems
    assert problems[0].path == path
    assert problems[0].message.startswith("expression ")


def test_a_bad_output_expression_is_reported() -> None:
    problems = workflow_problems(run({"name": "a", "set": {}}, output={"total": "${ 1 + }"}))
    assert [p.path for p in problems] == ["spec.output.total"]


def test_for_each_items_must_be_an_expression() -> None:
    problems = workflow_problems(run({"name": "e", "forEach": {"items": "input.items"}, "set": {}}))
    assert [p.path for p in problems] == ["spec.steps[0].forEach.items"]
    assert "expression giving a list" in problems[0].message


def test_next_to_a_missing_step_is_reported_for_an_inline_run() -> None:
    problems = workflow_problems(run({"name": "a", "set": {}, "next": "nowhere"}))
    assert messages(problems) == [
        "spec.steps[0].next: no step named 'nowhere' in the run's steps "
        "(a jump stays within its list of steps)"
    ]


def test_on_failure_targets_are_checked_in_their_own_scope() -> None:
    fan = {
        "name": "fan",
        "parallel": {
            "branches": [
                {
                    "name": "a",
                    "steps": [
                        {"name": "try", "http": {"url": "http://x"}, "onFailure": {"goto": "ok"}},
                        {"name": "ok", "set": {}},
                        # `after` is a step of the run, not of this branch: not reachable.
                        {"name": "out", "set": {}, "onFailure": {"goto": "after"}},
                    ],
                }
            ]
        },
    }
    spec = run(fan, {"name": "after", "set": {}, "onFailure": {"goto": "ok"}})
    assert [p.path for p in workflow_problems(spec)] == [
        "spec.steps[0].parallel.branches[0].steps[2].onFailure.goto",
        "spec.steps[1].onFailure.goto",
    ]


@pytest.mark.parametrize("kind", ["job"])
def test_step_kinds_nothing_performs_are_refused(kind: str) -> None:
    body = {
        "view": {"name": "v"},
        "job": {"template": {}},
    }[kind]
    problems = workflow_problems(run({"name": "s", kind: body}))
    assert [p.path for p in problems] == [f"spec.steps[0].{kind}"]
    assert "not performed by this operator version" in problems[0].message


def test_a_nested_step_needs_exactly_one_action() -> None:
    fan = {
        "name": "fan",
        "parallel": {
            "branches": [
                {
                    "name": "a",
                    "steps": [
                        {"name": "none"},
                        {"name": "two", "set": {}, "sleep": {"duration": "1s"}},
                    ],
                }
            ]
        },
    }
    problems = workflow_problems(run(fan))
    assert [p.path for p in problems] == [
        "spec.steps[0].parallel.branches[0].steps[0]",
        "spec.steps[0].parallel.branches[0].steps[1]",
    ]
    assert "found none" in problems[0].message and "found set, sleep" in problems[1].message


def test_what_the_crd_cannot_see_in_nested_steps_is_checked() -> None:
    branch = [
        {"name": "nap", "sleep": {"duration": "5 minutes"}},
        {"name": "nap", "sleep": {"duration": "1s", "until": "2030-01-01T00:00:00Z"}},
        {"name": "local", "sleep": {"until": "2030-01-01T00:00:00"}},
    ]
    fan = {"name": "fan", "parallel": {"branches": [{"name": "a", "steps": branch}]}}
    problems = workflow_problems(run(fan))
    assert [p.path for p in problems] == [
        "spec.steps[0].parallel.branches[0].steps[1].name",
        "spec.steps[0].parallel.branches[0].steps[0].sleep.duration",
        "spec.steps[0].parallel.branches[0].steps[1].sleep",
        "spec.steps[0].parallel.branches[0].steps[2].sleep.until",
    ]
    assert "no UTC offset" in problems[3].message


def test_fields_that_do_nothing_are_refused() -> None:
    spec = run(
        {
            "name": "a",
            "set": {},
            "compensate": {"name": "undo", "when": "true", "next": "a", "set": {}},
        },
        FAN | {"forEach": {"items": "${ [1, 2] }"}},
    )
    assert [p.path for p in workflow_problems(spec)] == [
        "spec.steps[0].compensate.name",
        "spec.steps[0].compensate.when",
        "spec.steps[0].compensate.next",
        "spec.steps[1].forEach",
    ]


def test_a_parallel_compensation_is_refused() -> None:
    spec = run(
        {"name": "a", "set": {}, "compensate": {k: v for k, v in FAN.items() if k != "name"}}
    )
    assert [p.path for p in workflow_problems(spec)] == ["spec.steps[0].compensate.parallel"]


def test_yaml11_boolean_keys_are_refused_saying_to_quote_them() -> None:
    spec = run(
        {"name": "a", "set": {"false": 1, "ok": {"true": 2}}},
        {"name": "b", "entity": {"name": "e", "command": "go", "input": {"false": 1}}},
        input={"true": 1},
        output={"false": "${ vars.ok }"},
    )
    problems = workflow_problems(spec)
    assert [p.path for p in problems] == [
        "spec.steps[0].set.false",
        "spec.steps[0].set.ok.true",
        "spec.steps[1].entity.input.false",
        "spec.input.true",
        "spec.output.false",
    ]
    assert "YAML 1.1" in problems[0].message and "n, no or off" in problems[0].message
    assert "quote the key" in problems[0].message
    assert "y, yes or on" in problems[1].message


def test_yaml11_boolean_keys_in_a_template_input_schema_are_refused() -> None:
    spec = run(
        {"name": "a", "set": {}},
        inputSchema={
            "type": "object",
            "properties": {"false": {"type": "string"}, "m": {"properties": {"true": {}}}},
            "required": [False],
        },
    )
    assert [p.path for p in template_problems(spec)] == [
        "spec.inputSchema.properties.false",
        "spec.inputSchema.properties.m.properties.true",
        "spec.inputSchema.required[0]",
    ]


def test_several_problems_are_reported_at_once() -> None:
    spec = run(
        {"name": "a", "set": {"x": "${ 1 + }"}, "next": "gone"},
        {"name": "b", "job": {"template": {}}},
        {"name": "c", "forEach": {"items": "${ ] }"}, "set": {}},
        output="${ ( }",
    )
    problems = workflow_problems(spec)
    assert [p.path for p in problems] == [
        "spec.steps[0].next",
        "spec.steps[0].set.x",
        "spec.steps[1].job",
        "spec.steps[2].forEach.items",
        "spec.output",
    ]
    message = validate.describe(problems)
    assert message.count("; ") == 4 and message.startswith("spec.steps[0].next: ")


def test_parse_workflow_returns_the_parsed_nested_steps_or_raises_every_problem() -> None:
    definition = validate.parse_workflow(run(FAN))
    assert definition.steps is not None and definition.steps[0].parallel is not None
    nested = definition.steps[0].parallel.branches[0].steps[0]
    assert nested.sleep is not None and nested.sleep.duration == "1s"
    with pytest.raises(validate.InvalidDefinition) as raised:
        validate.parse_workflow(run({"name": "a", "set": {}, "next": "x", "when": "("}))
    assert len(raised.value.problems) == 2
    assert str(raised.value) == validate.describe(raised.value.problems)


def test_a_long_list_of_problems_is_shortened_in_the_message() -> None:
    spec = run(*({"name": f"s{i}", "set": {}, "next": "gone"} for i in range(60)))
    problems = workflow_problems(spec)
    assert len(problems) == 60
    assert validate.describe(problems).endswith("; and 10 more")


def test_entity_type_snapshot_every_is_refused_because_it_does_nothing() -> None:
    spec = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
    assert not [p for p in entities.definition_problems(EntityTypeSpec.model_validate(spec))]
    problems = entities.definition_problems(
        EntityTypeSpec.model_validate(spec | {"snapshotEvery": 10})
    )
    assert len(problems) == 1 and problems[0].startswith("spec.snapshotEvery: does nothing")


def test_entity_type_boolean_keys_are_refused() -> None:
    spec = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
    spec["stateSchema"] = {"type": "object", "properties": {"false": {"type": "integer"}}}
    problems = entities.definition_problems(EntityTypeSpec.model_validate(spec))
    assert any(p.startswith("spec.stateSchema.properties.false: ") for p in problems), problems


def test_yaml11_boolean_keys_are_refused_in_every_free_form_value_of_a_workflow() -> None:
    undo = {"http": {"url": "http://svc/undo", "method": "POST", "body": {"true": 1}}}
    branch = {"name": "b", "steps": [{"name": "in", "set": {"v": {"false": 1}}}]}
    spec = run(
        {"name": "call", "http": {"url": "http://svc", "method": "POST", "body": {"false": 1}}},
        {"name": "child", "workflow": {"templateRef": {"name": "t"}, "input": {"true": 1}}},
        {"name": "pay", "set": {}, "compensate": undo},
        {"name": "fan", "parallel": {"branches": [branch]}},
    )
    assert [p.path for p in workflow_problems(spec)] == [
        "spec.steps[0].http.body.false",
        "spec.steps[1].workflow.input.true",
        "spec.steps[2].compensate.http.body.true",
        "spec.steps[3].parallel.branches[0].steps[0].set.v.false",
    ]


def test_yaml11_boolean_keys_are_refused_in_every_free_form_value_of_an_entity_type() -> None:
    spec = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
    command = next(iter(spec["commands"]))
    spec["commands"][command]["reply"] = {"true": 1}
    spec["commands"][command]["emit"] = [{"type": "E", "data": {"false": 1}}]
    problems = entities.definition_problems(EntityTypeSpec.model_validate(spec))
    assert sorted(p.split(": ")[0] for p in problems if "YAML 1.1" in p) == [
        f"spec.commands.{command}.emit[0].data.false",
        f"spec.commands.{command}.reply.true",
    ], problems


# --- what the CRD checks at the top level, checked at every depth (issue 10, §4, §9)

SIGNAL_WHY = "kurable.dev/signal.NAME"


def _everywhere(step: dict[str, Any]) -> dict[str, Any]:
    """`step` at the top level, in a parallel branch, as a compensation, and with forEach."""
    undo = {k: v for k, v in step.items() if k != "name"}
    fan = {"name": "fan", "parallel": {"branches": [{"name": "a", "steps": [step]}]}}
    return run(
        step,
        fan,
        {"name": "pay", "set": {}, "compensate": undo},
        step | {"name": "each", "forEach": {"items": "${ [1, 2] }"}},
    )


EVERYWHERE = [
    "spec.steps[0]",
    "spec.steps[1].parallel.branches[0].steps[0]",
    "spec.steps[2].compensate",
    "spec.steps[3]",
]


@pytest.mark.parametrize(
    "signal",
    ["done_", "done-", "9lives", "-x", "a.b", "A" * 57, "ok\n"],
    ids=["trailing-underscore", "trailing-dash", "digit-first", "dash-first", "dot", "57", "nl"],
)
def test_signal_names_no_annotation_can_carry_are_refused_at_every_depth(signal: str) -> None:
    problems = workflow_problems(_everywhere({"name": "w", "wait": {"signal": signal}}))
    assert [p.path for p in problems] == [f"{at}.wait.signal" for at in EVERYWHERE]
    for p in problems:
        assert SIGNAL_WHY in p.message and "at most 56 characters" in p.message
        assert repr(signal) in p.message


@pytest.mark.parametrize("signal", ["APPROVE", "_a-b_c1", "x", "A" * 55 + "9"])
def test_signal_names_an_annotation_can_carry_are_accepted_at_every_depth(signal: str) -> None:
    assert workflow_problems(_everywhere({"name": "w", "wait": {"signal": signal}})) == []


@pytest.mark.parametrize(
    ("until", "why"),
    [
        ("2030-01-02T15:04:05", "no UTC offset"),
        ("2030-01-02", "no UTC offset"),
        ("2030-01-02 15:04:05+02:00", "RFC 3339 timestamp with a UTC offset"),
        ("2030-01-02T15:04+02:00", "RFC 3339 timestamp with a UTC offset"),
        ("20300102T150405Z", "RFC 3339 timestamp with a UTC offset"),
        ("2030-02-30T15:04:05Z", "is not an RFC 3339 timestamp"),
    ],
    ids=["no-offset", "date-only", "space", "no-seconds", "basic-format", "no-such-day"],
)
def test_sleep_until_is_held_to_the_crds_rule_at_every_depth(until: str, why: str) -> None:
    problems = workflow_problems(_everywhere({"name": "s", "sleep": {"until": until}}))
    assert [p.path for p in problems] == [f"{at}.sleep.until" for at in EVERYWHERE]
    assert all(why in p.message for p in problems)


@pytest.mark.parametrize(
    "until", ["2030-01-02T15:04:05Z", "2030-01-02t17:04:05.250+02:00", "${ input.at }"]
)
def test_sleep_until_with_an_offset_or_an_expression_is_accepted_at_every_depth(
    until: str,
) -> None:
    assert workflow_problems(_everywhere({"name": "s", "sleep": {"until": until}})) == []


def test_steps_that_parse_are_checked_whole_beside_one_that_does_not() -> None:
    """Field report: one unparsable nested step hid every other problem of the run."""
    spec = run(
        {"name": "a", "set": {"x": "${ 1 + }"}},
        {
            "name": "b",
            "parallel": {
                "branches": [
                    {"name": "p", "steps": [{"name": "s", "sleep": {"durationn": "1s"}}]},
                ]
            },
        },
        {"name": "c", "set": {}, "next": "nope"},
        {"name": "d", "set": {}, "next": "b"},
    )
    assert [p.path for p in workflow_problems(spec)] == [
        "spec.steps[1].parallel.branches[0].steps[0].sleep",
        "spec.steps[0].set.x",
        "spec.steps[2].next",
    ]
    assert [p.path for p in template_problems(spec)] == [
        "spec.steps[1].parallel.branches[0].steps[0].sleep",
        "spec.steps[0].set.x",
        "spec.steps[2].next",
    ]

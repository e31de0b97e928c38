"""Entity commands decided purely: events, new state, reply, or a rejection naming the rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine import entities as E
from kurable.engine.entities import CommandRejected, Event, Snapshot
from tests.conftest import ROOT

WALLET_SPEC: dict[str, Any] = yaml.safe_load(
    (ROOT / "examples/transfer/00-wallet.yaml").read_text()
)["spec"]


def wallet(**changes: Any) -> EntityTypeSpec:
    spec = copy.deepcopy(WALLET_SPEC)
    spec.update(changes)
    return EntityTypeSpec.model_validate(spec)


WALLET = wallet()


def rejection(spec: EntityTypeSpec, state: dict[str, Any], command: str, input: Any) -> Any:
    with pytest.raises(CommandRejected) as caught:
        E.decide(spec, state, command, input)
    return caught.value


def test_an_accepted_command_gives_events_new_state_and_a_reply_over_the_new_state() -> None:
    decision = E.decide(WALLET, {"balance": 100}, "withdraw", {"amount": 10})
    assert decision.events == (Event("Withdrawn", {"amount": 10}),)
    assert decision.state == {"balance": 90}
    assert decision.reply == 90


def test_the_example_wallet_definition_has_no_problems() -> None:
    assert E.definition_problems(WALLET) == []


def test_an_unknown_command_is_rejected_listing_the_known_ones() -> None:
    error = rejection(WALLET, {"balance": 1}, "steal", {})
    assert error.reason == "UnknownCommand"
    assert error.message == "no command 'steal' (known: deposit, withdraw)"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"amount": 0}, "input.amount: must be >= 1, got 0"),
        ({}, "input.amount: required"),
        ({"amount": "x"}, 'input.amount: must be an integer, got "x"'),
        ({"amount": True}, "input.amount: must be an integer, got true"),
        ({"amount": 1, "memo": "hi"}, "input.memo: unknown field (known: amount)"),
        ([1], "input: must be an object, got [1]"),
        (None, "input.amount: required"),
    ],
)
def test_input_outside_the_input_schema_is_rejected_naming_the_field(
    payload: Any, problem: str
) -> None:
    error = rejection(WALLET, {"balance": 100}, "withdraw", payload)
    assert error.reason == "InvalidInput"
    assert problem in error.message


def test_a_false_guard_rejects_with_its_number_rule_and_message_expression() -> None:
    error = rejection(WALLET, {"balance": 5}, "withdraw", {"amount": 10})
    assert error.reason == "GuardFailed"
    assert error.message == "guard 1 (state.balance >= input.amount): insufficient funds: 5 < 10"


def test_guards_are_checked_in_order_and_a_plain_message_is_used() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["withdraw"]["guards"] = [
        {"rule": "input.amount < 1000", "message": "too large for one withdrawal"},
        {"rule": "${ state.balance >= input.amount }", "message": "insufficient funds"},
    ]
    typed = EntityTypeSpec.model_validate(spec)
    assert rejection(typed, {"balance": 5}, "withdraw", {"amount": 5000}).message == (
        "guard 1 (input.amount < 1000): too large for one withdrawal"
    )
    assert rejection(typed, {"balance": 5}, "withdraw", {"amount": 10}).message == (
        "guard 2 (${ state.balance >= input.amount }): insufficient funds"
    )


def test_a_guard_that_cannot_be_evaluated_is_a_handler_error_naming_the_guard() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["withdraw"]["guards"] = [{"rule": "state.limit > 0"}]
    error = rejection(
        EntityTypeSpec.model_validate(spec), {"balance": 5}, "withdraw", {"amount": 1}
    )
    assert error.reason == "HandlerError"
    assert error.message.startswith("guard 1 (state.limit > 0):")


def test_a_new_state_outside_the_state_schema_is_rejected() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    del spec["commands"]["withdraw"]["guards"]
    error = rejection(
        EntityTypeSpec.model_validate(spec), {"balance": 5}, "withdraw", {"amount": 6}
    )
    assert error.reason == "InvalidState"
    assert error.message == (
        "command 'withdraw' would leave the state invalid: state.balance: must be >= 0, got -1"
    )


def test_an_event_handler_that_fails_is_a_handler_error_naming_the_event_field() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["events"]["Withdrawn"]["set"]["balance"] = "${ state.balance - event.nope }"
    error = rejection(
        EntityTypeSpec.model_validate(spec), {"balance": 5}, "withdraw", {"amount": 1}
    )
    assert error.reason == "HandlerError"
    assert "events.Withdrawn.set.balance" in error.message


def test_event_handlers_see_the_state_before_the_event_for_every_field() -> None:
    spec = EntityTypeSpec.model_validate(
        {
            "stateSchema": {"type": "object"},
            "commands": {"swap": {"emit": [{"type": "Swapped"}], "reply": "${ state }"}},
            "events": {"Swapped": {"set": {"a": "${ state.b }", "b": "${ state.a }"}}},
        }
    )
    assert E.decide(spec, {"a": 1, "b": 2}, "swap", None).reply == {"a": 2, "b": 1}


def test_several_events_apply_in_order_and_the_reply_sees_their_sum() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["deposit"]["emit"] = [
        {"type": "Deposited", "data": {"amount": "${ input.amount }"}},
        {"type": "Deposited", "data": {"amount": 1}},
    ]
    decision = E.decide(
        EntityTypeSpec.model_validate(spec), {"balance": 0}, "deposit", {"amount": 5}
    )
    assert [e.data for e in decision.events] == [{"amount": 5}, {"amount": 1}]
    assert decision.reply == 6


def _audited() -> EntityTypeSpec:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["audit"] = {
        "handler": {"http": {"url": "http://auditor/"}},
        "inputSchema": {"type": "object", "properties": {"fee": {"type": "integer"}}},
    }
    return EntityTypeSpec.model_validate(spec)


def test_a_command_with_an_http_handler_is_decided_by_its_answer() -> None:
    typed = _audited()
    assert E.definition_problems(typed) == []
    assert E.handler_of(typed, "audit") == "http://auditor/"
    assert E.handler_of(typed, "deposit") is None
    answer = {"events": [{"type": "Withdrawn", "data": {"amount": 3}}], "reply": "fee taken"}
    decision = E.decide_answered(typed, {"balance": 10}, "audit", answer)
    assert decision.state == {"balance": 7}
    assert decision.reply == "fee taken"
    assert [e.type for e in decision.events] == ["Withdrawn"]


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ({"error": "not today"}, "refused: not today"),
        ([1, 2], "not an object"),
        ({"events": [{"data": 1}]}, "events must be"),
        ({"events": [{"type": "Nope"}]}, "no handler"),
        ({"events": [{"type": "Withdrawn", "data": {"amount": 99}}]}, "state invalid"),
    ],
)
def test_a_bad_or_refusing_handler_answer_changes_nothing(answer: Any, text: str) -> None:
    with pytest.raises(CommandRejected, match=text):
        E.decide_answered(_audited(), {"balance": 10}, "audit", answer)


def test_the_input_of_a_handled_command_is_checked_before_asking() -> None:
    with pytest.raises(CommandRejected, match="fee"):
        E.checked_input(_audited(), "audit", {"fee": "lots"})


def test_definition_problems_name_the_command_and_field() -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["withdraw"]["emit"][0]["type"] = "Withdrew"
    spec["commands"]["withdraw"]["guards"][0]["rule"] = "state.balance >="
    spec["commands"]["deposit"]["inputSchema"]["properties"]["amount"]["type"] = "int"
    spec["events"]["Deposited"]["set"]["balance"] = "${ state.balance + }"
    spec["stateSchema"]["oneOf"] = []
    problems = E.definition_problems(EntityTypeSpec.model_validate(spec))
    text = "\n".join(problems)
    assert "spec.stateSchema: unsupported schema keyword(s) oneOf" in text
    assert "spec.commands.withdraw.emit[0].type: event type 'Withdrew' has no handler" in text
    assert "spec.commands.withdraw.guards[0].rule" in text
    assert "spec.commands.deposit.inputSchema.properties.amount.type: must be one of" in text
    assert "spec.events.Deposited.set.balance" in text
    assert len(problems) == 5


def test_a_state_schema_that_is_not_an_object_schema_is_a_definition_problem() -> None:
    assert E.definition_problems(wallet(stateSchema={"type": "integer"})) == [
        "spec.stateSchema.type: the state must be an object"
    ]


def test_the_initial_state_must_fit_the_state_schema() -> None:
    assert E.initial_state(WALLET, {"balance": 3}) == {"balance": 3}
    with pytest.raises(CommandRejected) as caught:
        E.initial_state(WALLET, {"balance": -3})
    assert caught.value.reason == "InvalidState"
    assert "spec.initialState.balance: must be >= 0, got -3" in caught.value.message
    with pytest.raises(CommandRejected, match=r"spec\.initialState\.balance: required"):
        E.initial_state(WALLET, None)


def test_a_rejection_survives_its_round_trip_through_a_dedup_record() -> None:
    error = rejection(WALLET, {"balance": 5}, "withdraw", {"amount": 10})
    again = CommandRejected.from_json(error.to_json())
    assert (again.reason, again.message) == (error.reason, error.message)


def test_a_small_state_is_shown_whole_and_a_large_one_keeps_the_fields_that_fit() -> None:
    assert E.status_state({"balance": 1}) == ({"balance": 1}, False)
    state, truncated = E.status_state({"memo": "x" * 5000, "balance": 1, "tags": ["a"]})
    assert truncated and state == {"balance": 1, "tags": ["a"]}
    assert E.status_state("y" * 5000) == (None, True)


def test_status_projection_shows_version_last_event_and_ready() -> None:
    snapshot = Snapshot({"balance": 9}, 3, {"type": "Withdrawn", "at": "t", "version": 3})
    status = E.project_status(snapshot, generation=2, previous_conditions=None, now="now")
    assert status["state"] == {"balance": 9} and status["stateTruncated"] is False
    assert (status["version"], status["lastEvent"]["type"]) == (3, "Withdrawn")
    assert status["phase"] == "Ready" and status["observedGeneration"] == 2
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["lastTransitionTime"]) == ("Ready", "True", "now")
    later = E.project_status(snapshot, generation=2, previous_conditions=[ready], now="later")
    assert later["conditions"][0]["lastTransitionTime"] == "now"


def test_the_status_merge_patch_removes_keys_the_state_lost_and_leaves_other_fields() -> None:
    old = {"state": {"a": 1, "b": {"c": 1, "d": 2}}, "kopf": {"x": 1}, "version": 1}
    new = {"state": {"b": {"c": 2}}, "version": 2}
    assert E.status_merge_patch(old, new) == {
        "state": {"a": None, "b": {"c": 2, "d": None}},
        "version": 2,
    }


COMMANDS = st.lists(
    st.tuples(st.sampled_from(["withdraw", "deposit"]), st.integers(min_value=-5, max_value=60)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(min_value=0, max_value=100), commands=COMMANDS)
def test_replaying_the_events_gives_the_state_reached_command_by_command(
    start: int, commands: list[tuple[str, int]]
) -> None:
    state: dict[str, Any] = {"balance": start}
    log: list[Event] = []
    accepted = 0
    for name, amount in commands:
        try:
            decision = E.decide(WALLET, state, name, {"amount": amount})
        except CommandRejected as e:
            assert e.reason in ("InvalidInput", "GuardFailed")
            continue
        accepted += 1
        log.extend(decision.events)
        state = decision.state
        assert decision.reply == state["balance"]
    assert E.replay(WALLET, {"balance": start}, log) == state
    assert len(log) == accepted
    assert state["balance"] >= 0
    withdrawn = sum(e.data["amount"] for e in log if e.type == "Withdrawn")
    deposited = sum(e.data["amount"] for e in log if e.type == "Deposited")
    assert state["balance"] == start - withdrawn + deposited


def test_replay_refuses_an_event_without_a_handler() -> None:
    with pytest.raises(E.EventNotApplicable, match="'Vanished' has no handler"):
        E.replay(WALLET, {"balance": 1}, [Event("Vanished", {})])


# -- command ids: one id, one request ------------------------------------------------------


def test_the_fingerprint_is_the_same_for_the_same_command_and_input_in_any_key_order() -> None:
    a = E.command_fingerprint("withdraw", {"amount": 10, "note": {"x": 1, "y": [1, 2]}})
    b = E.command_fingerprint("withdraw", {"note": {"y": [1, 2], "x": 1}, "amount": 10.0})
    assert a == b
    assert E.command_fingerprint("withdraw", None) == E.command_fingerprint("withdraw", {})


def test_the_fingerprint_differs_for_another_input_or_another_command() -> None:
    first = E.command_fingerprint("withdraw", {"amount": 10})
    assert first != E.command_fingerprint("withdraw", {"amount": 50})
    assert first != E.command_fingerprint("deposit", {"amount": 10})


def record_of(command: str, input: Any) -> dict[str, Any]:
    return {
        "command": command,
        "fingerprint": E.command_fingerprint(command, input),
        "reply": {"balance": 90},
        "version": 1,
    }


def test_reusing_an_id_with_another_input_is_a_conflict_naming_the_id() -> None:
    with pytest.raises(E.CommandConflict) as caught:
        E.check_same_command(
            record_of("withdraw", {"amount": 10}), "pay-1", "withdraw", {"amount": 50}
        )
    assert caught.value.differs == ("input",)
    assert caught.value.command_id == "pay-1"
    assert "'pay-1'" in str(caught.value) and "different input" in str(caught.value)


def test_reusing_an_id_with_another_command_is_a_conflict_naming_both_commands() -> None:
    with pytest.raises(E.CommandConflict) as caught:
        E.check_same_command(
            record_of("withdraw", {"amount": 10}), "pay-1", "deposit", {"amount": 10}
        )
    assert caught.value.differs == ("command",)
    assert "'withdraw'" in str(caught.value) and "'deposit'" in str(caught.value)


def test_the_same_command_and_input_under_the_same_id_is_a_retry() -> None:
    E.check_same_command(record_of("withdraw", {"amount": 10}), "pay-1", "withdraw", {"amount": 10})


def test_a_record_without_a_fingerprint_answers_as_before_for_its_command() -> None:
    old = {"command": "withdraw", "reply": {"balance": 90}, "version": 1}
    E.check_same_command(old, "pay-1", "withdraw", {"amount": 50})
    with pytest.raises(E.CommandConflict):
        E.check_same_command(old, "pay-1", "deposit", {"amount": 10})


# -- which EntityTypes commands may run against --------------------------------------------


def type_object(phase: str | None, generation: int = 2, observed: int = 2, **spec: Any) -> Any:
    obj: dict[str, Any] = {
        "kind": "EntityType",
        "metadata": {"name": "wallet", "generation": generation},
        "spec": {**copy.deepcopy(WALLET_SPEC), **spec},
    }
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "message": "spec.x: broken",
            "observedGeneration": observed,
        }
    return obj


def test_an_entity_type_whose_status_says_invalid_refuses_commands_saying_why() -> None:
    with pytest.raises(CommandRejected) as caught:
        E.usable_type(type_object("Invalid"))
    assert caught.value.reason == "TypeInvalid"
    assert "EntityType wallet is Invalid: spec.x: broken" in caught.value.message


def test_a_broken_definition_is_refused_before_status_catches_up() -> None:
    broken = {"Withdrawn": {"set": {"balance": "${ state.balance - input.amount }"}}}
    for obj in (
        type_object("Valid", generation=3, observed=2, events=broken),
        type_object(None, events=broken),
    ):
        with pytest.raises(CommandRejected) as caught:
            E.usable_type(obj)
        assert caught.value.reason == "TypeInvalid"
        assert "input.amount" in caught.value.message


def test_a_valid_entity_type_is_usable() -> None:
    assert E.usable_type(type_object("Valid")).commands.keys() == WALLET.commands.keys()
    assert E.usable_type(WALLET) is WALLET


# -- references that can never work --------------------------------------------------------


def test_an_event_handler_reading_a_field_no_command_emits_is_a_definition_problem() -> None:
    events = {"Withdrawn": {"set": {"balance": "${ state.balance - event.data.amount }"}}}
    problems = E.definition_problems(wallet(events={**WALLET_SPEC["events"], **events}))
    assert any(
        "spec.events.Withdrawn.set.balance" in p
        and "event has no field 'data'" in p
        and "event.amount" in p
        for p in problems
    ), problems


@pytest.mark.parametrize(
    ("place", "change", "name"),
    [
        (
            "events",
            {"Withdrawn": {"set": {"balance": "${ state.balance - input.amount }"}}},
            "input",
        ),
        ("reply", {"balance": "${ event.balance }"}, "event"),
        ("guard", "balance >= input.amount", "balance"),
    ],
)
def test_an_expression_reading_a_variable_its_place_does_not_have_is_a_definition_problem(
    place: str, change: Any, name: str
) -> None:
    spec = copy.deepcopy(WALLET_SPEC)
    if place == "events":
        spec["events"].update(change)
    elif place == "reply":
        spec["commands"]["withdraw"]["reply"] = change
    else:
        spec["commands"]["withdraw"]["guards"] = [{"rule": change, "message": "m"}]
    problems = E.definition_problems(EntityTypeSpec.model_validate(spec))
    assert any(
        f"undeclared reference to '{name}" in p and "can be used here" in p for p in problems
    ), problems


def test_reading_an_input_field_a_closed_input_schema_never_allows_is_a_definition_problem() -> (
    None
):
    spec = copy.deepcopy(WALLET_SPEC)
    spec["commands"]["withdraw"]["inputSchema"]["additionalProperties"] = False
    spec["commands"]["withdraw"]["reply"] = {"x": "${ input.amout }"}
    problems = E.definition_problems(EntityTypeSpec.model_validate(spec))
    assert any("input has no field 'amout'" in p for p in problems), problems


def test_every_example_entity_type_has_no_definition_problems() -> None:
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "EntityType":
                spec = EntityTypeSpec.model_validate(doc["spec"])
                assert E.definition_problems(spec) == [], path

"""engine.views: plans, rows from stream items, parameter binding."""

from __future__ import annotations

import pytest

from kurable.engine.views import ViewError, bind, from_sql, plan, problems, row_of

WALLETS = {
    "source": {"entityType": "wallet"},
    "where": "${ state.balance > 0 }",
    "columns": {
        "owner": {"type": "string", "value": "${ entity.name }"},
        "balance": {"type": "integer", "value": "${ state.balance }"},
        "tier": {"type": "string", "value": "${ state.balance >= 1000 ? 'gold' : 'plain' }"},
    },
    "indexes": [["balance"], ["tier", "balance"]],
    "queries": {
        "richest": {
            "sql": "SELECT owner, balance FROM wallets WHERE balance >= :min "
            "ORDER BY balance DESC LIMIT :limit",
            "params": {
                "min": {"type": "integer"},
                "limit": {"type": "integer", "default": 100, "maximum": 1000},
            },
        }
    },
}


def item(balance: int, version: int = 1) -> dict:
    return {
        "entity": {"name": "alice", "uid": "u1"},
        "state": {"balance": balance},
        "version": version,
    }


def test_a_row_is_computed_from_the_state_and_where_false_means_no_row() -> None:
    view = plan("ns", "wallets", WALLETS)
    assert row_of(view, item(1500)) == {"owner": "alice", "balance": 1500, "tier": "gold"}
    assert row_of(view, item(0)) is None


def test_the_digest_follows_the_rows_not_the_queries() -> None:
    a = plan("ns", "wallets", WALLETS)
    b = plan("ns", "wallets", {**WALLETS, "queries": {"x": {"sql": "SELECT 1"}}})
    c = plan("ns", "wallets", {**WALLETS, "where": None})
    assert a.digest == b.digest != c.digest


def test_a_bad_column_expression_is_named() -> None:
    spec = {
        **WALLETS,
        "columns": {"owner": {"type": "string", "value": "${ run.name }"}},
        "indexes": [],
    }
    found = problems(plan("ns", "wallets", spec))
    assert [p.path for p in found] == ["spec.columns.owner.value"]
    assert "run" in found[0].message
    assert str(found[0]).count("spec.columns.owner.value") == 1, str(found[0])


def test_params_are_converted_defaulted_and_bounded() -> None:
    query = plan("ns", "wallets", WALLETS).queries["richest"]
    assert bind(query, {"min": "10"}) == {"min": 10, "limit": 100}
    with pytest.raises(ViewError, match=r"params\.min: query richest needs parameter min"):
        bind(query, {})
    with pytest.raises(ViewError, match=r"params\.limit: must be at most 1000"):
        bind(query, {"min": 1, "limit": 5000})
    with pytest.raises(ViewError, match=r"params\.min: must be an integer"):
        bind(query, {"min": "ten"})
    with pytest.raises(ViewError, match=r"params\.max: query richest has no such parameter"):
        bind(query, {"min": 1, "max": 2})


def test_a_parameter_named_like_the_endpoints_own_query_names_is_refused() -> None:
    richest = WALLETS["queries"]["richest"]
    for name in ("continue", "minOffset"):
        sql = f"SELECT owner FROM wallets WHERE balance >= :{name}"
        spec = {
            **WALLETS,
            "queries": {"q": {"sql": sql, "params": {name: {"type": "integer"}}}, "r": richest},
        }
        found = problems(plan("ns", "wallets", spec))
        assert [p.path for p in found] == [f"spec.queries.q.params.{name}"]
        assert "rename the parameter" in found[0].message


def test_a_blob_in_a_result_row_is_its_base64_text() -> None:
    view = plan("ns", "wallets", WALLETS)
    row = from_sql(view, ["owner", "b", "empty"], ("alice", b"\xff\x00kur", b""))
    assert row == {"owner": "alice", "b": "/wBrdXI=", "empty": ""}

"""executor.view_db: exactly-once application, the authorizer, budgets and caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from kurable.engine.views import ViewError, bind, plan
from kurable.executor.view_db import Change, ViewDatabase, check

from ..engine.test_views import WALLETS


def wallet(name: str, balance: int, version: int) -> dict:
    return {
        "entity": {"name": name, "uid": name},
        "state": {"balance": balance},
        "version": version,
    }


def test_rows_follow_items_once_and_where_false_deletes(tmp_path: Path) -> None:
    view = plan("ns", "wallets", WALLETS)
    db = ViewDatabase(view, tmp_path / "w.sqlite")
    db.apply([Change("a", 5, wallet("a", 10, 1)), Change("b", 5, wallet("b", 20, 1))], 5)
    db.apply([Change("a", 6, wallet("a", 30, 2))], 6)
    # The same revision read again after a restart changes nothing; an older version neither.
    db.apply([Change("a", 6, wallet("a", 30, 2)), Change("a", 5, wallet("a", 10, 1))], 6)
    page = db.query(view.queries["richest"], bind(view.queries["richest"], {"min": 0}))
    assert page.rows == [{"owner": "a", "balance": 30}, {"owner": "b", "balance": 20}]
    db.apply([Change("b", 7, wallet("b", 0, 2))], 7)
    assert db.rows() == 1 and db.offset() == 7
    db.close()
    again = ViewDatabase(view, tmp_path / "w.sqlite")
    assert again.offset() == 7 and again.rows() == 1


def test_a_resume_forgets_the_sources_that_are_gone_with_its_changes(tmp_path: Path) -> None:
    view = plan("ns", "wallets", WALLETS)
    db = ViewDatabase(view, tmp_path / "w.sqlite")
    # c has no row (balance 0 fails `where`) but a version: it is forgotten too.
    db.apply([Change(k, 5, wallet(k, b, 1)) for k, b in (("a", 10), ("b", 20), ("c", 0))], 5)
    # b and c were deleted while no process followed; a changed meanwhile.
    db.apply([Change("a", 9, wallet("a", 40, 2))], 9, retain=frozenset({"a", "d"}))
    page = db.query(view.queries["richest"], bind(view.queries["richest"], {"min": 0}))
    assert page.rows == [{"owner": "a", "balance": 40}] and db.offset() == 9
    # A source forgotten comes back as new when it shows up again (version 1 applies).
    db.apply([Change("c", 10, wallet("c", 3, 1))], 10)
    assert db.rows() == 2


def test_sources_whose_expressions_fail_are_counted_until_a_later_version_computes(
    tmp_path: Path,
) -> None:
    view = plan("ns", "wallets", WALLETS)
    db = ViewDatabase(view, tmp_path / "w.sqlite")
    broken = {**wallet("a", 10, 1), "state": {"balance": "ten"}}  # `balance > 0` fails
    db.apply([Change("a", 5, broken), Change("b", 5, wallet("b", 20, 1))], 5)
    count, problem = db.failures()
    assert (count, db.rows()) == (1, 1) and problem.startswith("entity a: "), problem
    db.apply([Change("a", 6, wallet("a", 30, 2))], 6)
    assert db.failures() == (0, "") and db.rows() == 2
    db.apply([Change("b", 7, {**wallet("b", 1, 2), "state": {}})], 7)
    assert db.failures()[0] == 1
    db.apply([Change("b", 8, None)], 8)  # deleted: nothing left to fix
    assert db.failures() == (0, "")


def test_pages_stop_at_the_cap(tmp_path: Path) -> None:
    view = plan("ns", "wallets", WALLETS)
    db = ViewDatabase(view, tmp_path / "w.sqlite")
    db.apply([Change(f"w{i}", 1, wallet(f"w{i}", i + 1, 1)) for i in range(5)], 1)
    query = view.queries["richest"]
    first = db.query(query, bind(query, {"min": 0}), cap=2)
    rest = db.query(query, bind(query, {"min": 0}), skip=4, cap=2)
    assert [r["balance"] for r in first.rows] == [5, 4] and first.more
    assert [r["balance"] for r in rest.rows] == [1] and not rest.more


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("DELETE FROM wallets", "may only SELECT from its own view's table"),
        ("SELECT * FROM sqlite_master", "may only SELECT from its own view's table"),
        ("SELECT key FROM _kurable_sources", "may only SELECT from its own view's table"),
        ("SELECT colour FROM wallets", "no such column: colour"),
    ],
)
def test_queries_that_write_read_elsewhere_or_name_no_column_are_refused(
    sql: str, says: str
) -> None:
    spec = {**WALLETS, "queries": {"bad": {"sql": sql}}}
    found = check(plan("ns", "wallets", spec))
    assert [p.path for p in found] == ["spec.queries.bad.sql"]
    assert says in found[0].message


def test_a_valid_view_has_no_problems() -> None:
    assert check(plan("ns", "wallets", WALLETS)) == []


def test_a_query_past_its_budget_is_interrupted(tmp_path: Path) -> None:
    spec = {
        **WALLETS,
        "queries": {
            "slow": {
                "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) AS n FROM c, wallets"
            }
        },
    }
    view = plan("ns", "wallets", spec)
    db = ViewDatabase(view, tmp_path / "w.sqlite")
    db.apply([Change("a", 1, wallet("a", 1, 1))], 1)
    with pytest.raises(ViewError, match="longer than its budget"):
        db.query(view.queries["slow"], {}, budget=0.05)

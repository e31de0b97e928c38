"""One View's rows in SQLite (the standard library's sqlite3): the table, applying stream
items exactly once, and read-only queries.

Each generation of a View's rows (one `engine.views.Plan.digest`) is one database file,
`<state dir>/<namespace>/<view>-<digest>.sqlite`, holding:

    "<view>"            the rows: `_key` (the source's uid), `_version`, the columns
    _kurable_sources    key -> the version last applied (also for sources without a row)
    _kurable_failures   key -> why its row could not be computed (an expression failed on
                        its last version): what status shows as `failed`
    _kurable_meta       offset (the stream offset applied), built (1 once caught up)

A batch of stream items commits in ONE SQLite transaction together with the offset it
reaches, so a crash loses the whole batch or nothing; a restart resumes from the stored
offset. An item whose source already has this version or a newer one is skipped, so
reading the last revision again is harmless.

Queries run on a second connection whose authorizer allows only SELECT and reads of the
view's own table (and SQLite's functions): a write, a schema change, an ATTACH or another
table is refused by SQLite itself, not by parsing the text. Parameters are bound; a
progress handler stops a query past its time budget; at most `row cap + 1` rows are
fetched.

Every call blocks: use a database from one thread (kurable.executor.views gives each its
own worker thread).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kurable.engine import expressions
from kurable.engine.views import (
    SQL_TYPES,
    Plan,
    Query,
    ViewError,
    from_sql,
    row_of,
    source_name,
    version_of,
)

DEFAULT_BUDGET_SECONDS = 2.0
"""How long one query may run before SQLite interrupts it."""
DEFAULT_ROW_CAP = 1000
"""The most rows one page of a query returns."""

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


@dataclass(frozen=True)
class Change:
    """One stream item, as the materializer gives it: the source's key (uid), the item's
    offset, and its value (None: the source is gone)."""

    key: str
    offset: int
    value: Mapping[str, Any] | None


@dataclass(frozen=True)
class Page:
    """One page of a query's rows; `more` when rows follow (ask with `skip=skip+len`)."""

    rows: list[dict[str, Any]]
    more: bool


def quote(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def schema(view: Plan) -> list[str]:
    """The statements creating the view's table, indexes and Kurable's bookkeeping."""
    table = quote(view.name)
    columns = ", ".join(f"{quote(c.name)} {SQL_TYPES[c.type]}" for c in view.columns)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} (_key TEXT PRIMARY KEY, _version INTEGER, {columns})",
        "CREATE TABLE IF NOT EXISTS _kurable_sources (key TEXT PRIMARY KEY, version INTEGER)",
        "CREATE TABLE IF NOT EXISTS _kurable_failures (key TEXT PRIMARY KEY, problem TEXT)",
        "CREATE TABLE IF NOT EXISTS _kurable_meta (name TEXT PRIMARY KEY, value INTEGER)",
    ]
    for i, index in enumerate(view.indexes):
        cols = ", ".join(quote(c) for c in index)
        statements.append(f"CREATE INDEX IF NOT EXISTS {quote(f'_i{i}')} ON {table} ({cols})")
    return statements


def check(view: Plan) -> list[ViewError]:
    """Prepare every query against an empty in-memory copy of the table, under the same
    authorizer the queries run with: a query that writes, reads another table, names an
    unknown column or uses an undeclared parameter is a problem naming the query."""
    found: list[ViewError] = []
    db = sqlite3.connect(":memory:")
    try:
        for statement in schema(view):
            db.execute(statement)
        _guard(db, view.name)
        for query in view.queries.values():
            at = f"spec.queries.{query.name}.sql"
            try:
                cursor = db.execute(f"EXPLAIN {query.sql}", _nulls(query))
                cursor.fetchall()
            except sqlite3.DatabaseError as e:
                found.append(ViewError(at, _problem(view, e)))
                continue
            except sqlite3.ProgrammingError as e:
                found.append(ViewError(at, str(e)))
                continue
            for p in query.params:
                if f":{p.name}" not in query.sql:
                    found.append(
                        ViewError(f"spec.queries.{query.name}.params.{p.name}", "not used by sql")
                    )
    finally:
        db.close()
    return found


def _nulls(query: Query) -> dict[str, Any]:
    return {p.name: None for p in query.params}


def _problem(view: Plan, error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "not authorized" in text or "prohibited" in text:
        return f"a query may only SELECT from its own view's table {view.name!r} ({text})"
    return text


def _guard(db: sqlite3.Connection, table: str) -> None:
    """Allow only reading: SELECT, functions, and reads of `table` (or of a name that is
    no table of the file: a common table expression of the query)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    others = tables - {table}

    def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_READ:
            other = arg1 in others or (arg1 or "").lower().startswith("sqlite_")
            return sqlite3.SQLITE_DENY if other else sqlite3.SQLITE_OK
        return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY

    db.set_authorizer(authorize)


class ViewDatabase:
    """One generation of a View's rows in one SQLite file (blocking; one thread)."""

    def __init__(self, view: Plan, path: Path) -> None:
        self.view = view
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in schema(view):
            self._db.execute(statement)
        self._reader = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        _guard(self._reader, view.name)
        self._deadline = 0.0
        self._reader.set_progress_handler(self._over_budget, 10_000)

    def close(self) -> None:
        self._reader.close()
        self._db.close()

    def _over_budget(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def offset(self) -> int:
        """The stream offset the rows include (0: nothing applied yet)."""
        return self._meta("offset")

    def built(self) -> bool:
        """Whether this generation caught up with its stream once."""
        return self._meta("built") == 1

    def _meta(self, name: str) -> int:
        found = self._db.execute("SELECT value FROM _kurable_meta WHERE name = ?", (name,))
        row = found.fetchone()
        return int(row[0]) if row else 0

    def mark_built(self) -> None:
        self._db.execute("INSERT OR REPLACE INTO _kurable_meta VALUES ('built', 1)")

    def rows(self) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM {quote(self.view.name)}").fetchone()[0])

    def apply(
        self, changes: Iterable[Change], offset: int, retain: frozenset[str] | None = None
    ) -> list[str]:
        """Apply `changes` and store `offset`, in ONE transaction. A change whose source
                already has its version (or a newer one) is skipped. With `retain`, first forget
                every source whose key is not in it (its row and its version): the sources that
                were deleted while nothing followed the stream. Returns the problems of sources
                whose expressions failed (they are left without a row, and counted by `failures`
        until a later version of theirs computes)."""
        table = quote(self.view.name)
        names = [c.name for c in self.view.columns]
        insert = (
            f"INSERT OR REPLACE INTO {table} (_key, _version, {', '.join(map(quote, names))}) "
            f"VALUES (?, ?, {', '.join('?' for _ in names)})"
        )
        failed: list[str] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if retain is not None:
                self._forget_all_but(retain)
            for change in changes:
                if change.value is None:
                    db.execute(f"DELETE FROM {table} WHERE _key = ?", (change.key,))
                    db.execute("DELETE FROM _kurable_sources WHERE key = ?", (change.key,))
                    db.execute("DELETE FROM _kurable_failures WHERE key = ?", (change.key,))
                    continue
                version = version_of(self.view, change.value)
                seen = db.execute(
                    "SELECT version FROM _kurable_sources WHERE key = ?", (change.key,)
                ).fetchone()
                if seen is not None and seen[0] >= version:
                    continue
                try:
                    row = row_of(self.view, change.value)
                except expressions.ExpressionError as e:
                    failed.append(f"{change.key}: {e}")
                    who = source_name(self.view, change.value) or change.key
                    db.execute(
                        "INSERT OR REPLACE INTO _kurable_failures VALUES (?, ?)",
                        (change.key, f"{who}: {e}"),
                    )
                    row = None
                else:
                    db.execute("DELETE FROM _kurable_failures WHERE key = ?", (change.key,))
                if row is None:
                    db.execute(f"DELETE FROM {table} WHERE _key = ?", (change.key,))
                else:
                    db.execute(insert, (change.key, version, *(row[n] for n in names)))
                db.execute(
                    "INSERT OR REPLACE INTO _kurable_sources VALUES (?, ?)", (change.key, version)
                )
            db.execute("INSERT OR REPLACE INTO _kurable_meta VALUES ('offset', ?)", (offset,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return failed

    def _forget_all_but(self, retain: frozenset[str]) -> None:
        table = quote(self.view.name)
        db = self._db
        gone = [
            key
            for (key,) in db.execute("SELECT key FROM _kurable_sources").fetchall()
            if key not in retain
        ]
        db.executemany(f"DELETE FROM {table} WHERE _key = ?", [(k,) for k in gone])
        db.executemany("DELETE FROM _kurable_sources WHERE key = ?", [(k,) for k in gone])
        db.executemany("DELETE FROM _kurable_failures WHERE key = ?", [(k,) for k in gone])

    def failures(self) -> tuple[int, str]:
        """How many sources have no row because an expression failed on their last
        version, and the problem of the first of them (by key; "" when none), as
        `<entity|run> <name>: <what failed>`."""
        count = int(self._db.execute("SELECT count(*) FROM _kurable_failures").fetchone()[0])
        first = self._db.execute(
            "SELECT problem FROM _kurable_failures ORDER BY key LIMIT 1"
        ).fetchone()
        return count, str(first[0]) if first else ""

    def query(
        self,
        query: Query,
        params: Mapping[str, Any],
        skip: int = 0,
        cap: int = DEFAULT_ROW_CAP,
        budget: float = DEFAULT_BUDGET_SECONDS,
    ) -> Page:
        """One page of `query` (params already bound by `engine.views.bind`): rows
        `skip` .. `skip + cap`. Raises ViewError when SQLite refuses or interrupts it."""
        sql = f"SELECT * FROM ({query.sql}) LIMIT :_kurable_cap OFFSET :_kurable_skip"
        bound = {**params, "_kurable_cap": cap + 1, "_kurable_skip": skip}
        self._deadline = time.monotonic() + budget
        try:
            cursor = self._reader.execute(sql, bound)
            names = [d[0] for d in cursor.description]
            fetched = cursor.fetchmany(cap + 1)
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise ViewError(
                    f"queries.{query.name}", f"took longer than its budget of {budget:g}s"
                ) from None
            raise ViewError(f"queries.{query.name}", _problem(self.view, e)) from None
        except sqlite3.DatabaseError as e:
            raise ViewError(f"queries.{query.name}", _problem(self.view, e)) from None
        rows = [from_sql(self.view, names, values) for values in fetched[:cap]]
        return Page(rows, len(fetched) > cap)

"""The write path's hot statements, compiled by SQLAlchemy once and run on the driver's cursor.

A feed message or an API write runs about ten small statements. Through `Connection.execute`
each one pays SQLAlchemy's per-execution bookkeeping (parameter processing, execution context,
result set-up, event dispatch): profiled over a backlog replay on SQLite that was about a fifth
of the server's CPU, against about 1 % spent in SQLite itself. So for the statements in
`whiteboard.store.statements`, SQLAlchemy still writes the SQL, names the parameters and
supplies each column type's bind and result processors (JSON, booleans), once per dialect and
parameter shape; `run` then hands the values straight to the DBAPI cursor of the connection's
current transaction.

Anything this cannot run exactly as SQLAlchemy would (a non-positional parameter style,
expanding IN lists, Python-side column defaults) goes through `Connection.execute` instead.
Driver errors are raised as SQLAlchemy's (`IntegrityError`, ...) with parameters hidden, as
`Connection.execute` would raise them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Rows", "as_one", "run", "run_as_one", "run_together"]

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]
Steps = Sequence[tuple[Executable, Params]]


@dataclass(frozen=True, slots=True)
class Rows:
    """What a statement returned: plain tuples, the column names, and the affected row count."""

    keys: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rowcount: int

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def mapping(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.keys, row, strict=True))


@dataclass(frozen=True, slots=True)
class _Plan:
    statement: Executable  # held so its id() in the plan cache is never reused
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the SQL takes them
    constants: dict[str, Any]  # values bound in the statement itself (LIMIT 1)
    binds: tuple[Processor, ...]
    keys: tuple[str, ...]
    results: tuple[Processor, ...]


#: Per dialect object (an engine's, configured with its JSON serialiser), per statement,
#: parameter names and one-or-many: the statement (held, so its id() is never reused) and its
#: plan, or None for "through SQLAlchemy".
_plans: WeakKeyDictionary[
    Dialect, dict[tuple[int, tuple[str, ...], bool], tuple[Executable, _Plan | None]]
] = WeakKeyDictionary()


def run(conn: Connection, statement: Executable, params: Params | Sequence[Params] | None = None) -> Rows:
    """Execute `statement` (one parameter set, or several for an executemany) in `conn`'s
    transaction and return its rows."""
    many = isinstance(params, Sequence)
    sets: Sequence[Params] = params if isinstance(params, Sequence) else [params or {}]
    plan = _plan(conn.dialect, statement, sets[0] if sets else {}, many)
    if plan is None:
        return _through_sqlalchemy(conn, statement, params)
    return _execute(conn, plan, [_bound(plan, p) for p in sets], many)


def run_together(conn: Connection, steps: Sequence[tuple[Executable, Params]]) -> None:
    """Execute single-row writes (no rows wanted back) in order, in one round trip where the
    database allows it.

    On PostgreSQL, writes that touch distinct rows are sent as one statement, all but the last
    as data-modifying CTEs: `WITH w1 AS (UPDATE …), w2 AS (INSERT …) UPDATE …`. They see one
    snapshot and run as one, so the caller must not name one row in two steps; foreign keys are
    checked at the end of the statement, as for separate statements at the end of each. One
    round trip instead of three or four is most of what an API write waits on and pays for.
    Elsewhere (SQLite, a step SQLAlchemy must run, a single step) each runs on its own."""
    if not run_as_one(conn, steps):
        for statement, params in steps:
            run(conn, statement, params)


def run_as_one(conn: Connection, steps: Sequence[tuple[Executable, Params]]) -> bool:
    """`run_together`'s one statement, or nothing at all: False (and nothing run) where the
    steps cannot be one statement."""
    one = _as_one(conn.dialect, steps)
    if one is None:
        return False
    plan, values = one
    _execute(conn, plan, [values], False)
    return True


def as_one(dialect: Dialect, steps: Steps) -> tuple[str, tuple[Any, ...]] | None:
    """The steps as `run_together`'s one statement, SQL and bound values ready for the driver
    (asyncpg), or None where they cannot be one. Outside a transaction that one statement is
    still atomic, which the write path's one-round-trip writes rely on
    (`Repository._write_at_once`, sent by `engine.execute_on_driver`)."""
    one = _as_one(dialect, steps)
    return None if one is None else (one[0].sql, one[1])


def _as_one(dialect: Dialect, steps: Steps) -> tuple[_Plan, tuple[Any, ...]] | None:
    if len(steps) < 2 or dialect.paramstyle != "numeric_dollar":
        return None
    plans = [_plan(dialect, statement, params, False) for statement, params in steps]
    known = [p for p in plans if p is not None]
    together = _combine(dialect, known) if len(known) == len(plans) else None
    if together is None:
        return None
    values: list[Any] = []
    for plan, (_statement, params) in zip(known, steps, strict=True):
        values.extend(_bound(plan, params))
    return together, tuple(values)


def _plan(dialect: Dialect, statement: Executable, first: Params, many: bool) -> _Plan | None:
    plans = _plans.get(dialect)
    if plans is None:
        plans = _plans[dialect] = {}
    key = (id(statement), tuple(sorted(first)), many)
    held = plans.get(key)
    if held is None:
        held = plans[key] = (statement, _compile(statement, dialect, key[1], many))
    return held[1]


#: Per dialect, per tuple of step plans: the combined plan, or None where it cannot be made.
_combined: WeakKeyDictionary[Dialect, dict[tuple[int, ...], _Plan | None]] = WeakKeyDictionary()
_DOLLAR = re.compile(r"\$(\d+)")


def _combine(dialect: Dialect, plans: list[_Plan]) -> _Plan | None:
    cache = _combined.get(dialect)
    if cache is None:
        cache = _combined[dialect] = {}
    key = tuple(id(p) for p in plans)
    if key in cache:
        return cache[key]
    combined: _Plan | None = None
    if all(
        not p.keys  # writes only: nothing to hand back
        and "'" not in p.sql  # no literal a renumbering could reach into
        and not p.sql.lstrip().upper().startswith(("WITH", "SELECT"))
        for p in plans
    ):
        parts: list[str] = []
        names: list[str] = []
        binds: list[Processor] = []
        offset = 0
        for i, p in enumerate(plans):
            parts.append(_DOLLAR.sub(lambda m, o=offset: f"${int(m.group(1)) + o}", p.sql))  # type: ignore[misc]
            names.extend(f"{i}.{n}" for n in p.names)
            binds.extend(p.binds)
            offset += len(p.names)
        *ctes, last = parts
        sql = "WITH " + ", ".join(f"w{i} AS ({c})" for i, c in enumerate(ctes)) + " " + last
        combined = _Plan(plans[0].statement, sql, tuple(names), {}, tuple(binds), (), ())
    cache[key] = combined
    return combined


def _bound(plan: _Plan, params: Params) -> tuple[Any, ...]:
    try:
        return _values(plan, params)
    except Exception as error:  # a missing parameter, a value its column type refuses
        raise exc.StatementError(
            "a parameter could not be bound", plan.sql, None, error, hide_parameters=True
        ) from error


def _execute(conn: Connection, plan: _Plan, values: list[tuple[Any, ...]], many: bool) -> Rows:
    dialect = conn.dialect
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        if many:
            cursor.executemany(plan.sql, values)
        else:
            cursor.execute(plan.sql, values[0])
        fetched = cursor.fetchall() if cursor.description is not None else []
        rowcount = cursor.rowcount
    except dialect.loaded_dbapi.Error as error:
        # As Connection.execute would: a connection the database has dropped is not reused.
        lost = dialect.is_disconnect(error, dbapi_connection, cursor)
        if lost:
            conn.invalidate(error)
        raise exc.DBAPIError.instance(
            plan.sql,
            None,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error
    finally:
        cursor.close()
    if fetched and any(plan.results):
        fetched = [
            tuple(v if f is None else f(v) for f, v in zip(plan.results, row, strict=True)) for row in fetched
        ]
    return Rows(plan.keys, [tuple(row) for row in fetched], rowcount)


def _values(plan: _Plan, params: Params) -> tuple[Any, ...]:
    out = []
    for name, process in zip(plan.names, plan.binds, strict=True):
        value = params[name] if name in params else plan.constants[name]
        out.append(value if process is None else process(value))
    return tuple(out)


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...], many: bool) -> _Plan | None:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=many)
    assert isinstance(compiled, SQLCompiler)
    sql = compiled.string
    names = compiled.positiontup
    if (
        names is None  # a named parameter style: leave it to SQLAlchemy
        or "POSTCOMPILE" in sql  # expanding IN: SQLAlchemy writes the list per execution
        or compiled.insert_prefetch  # Python-side column defaults SQLAlchemy would fill in
        or compiled.update_prefetch
        or (many and compiled.effective_returning)  # SQLAlchemy's "insertmanyvalues" batches
        or any(name not in keys and compiled.binds[name].required for name in names)
    ):
        return None
    binds = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    constants = {name: compiled.binds[name].effective_value for name in names if name not in keys}
    columns = list(getattr(statement, "selected_columns", ()))
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    return _Plan(statement, sql, tuple(names), constants, binds, tuple(c.key for c in columns), results)


def _through_sqlalchemy(
    conn: Connection, statement: Executable, params: Params | Sequence[Params] | None
) -> Rows:
    result = conn.execute(statement, params)
    if not result.returns_rows:
        return Rows((), [], result.rowcount)
    keys = tuple(result.keys())
    return Rows(keys, [tuple(row) for row in result], result.rowcount)

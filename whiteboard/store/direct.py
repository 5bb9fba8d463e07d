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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Rows", "run"]

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]


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
    first = sets[0] if sets else {}
    dialect = conn.dialect
    plans = _plans.get(dialect)
    if plans is None:
        plans = _plans[dialect] = {}
    key = (id(statement), tuple(sorted(first)), many)
    held = plans.get(key)
    if held is None:
        held = plans[key] = (statement, _compile(statement, dialect, key[1], many))
    plan = held[1]
    if plan is None:
        return _through_sqlalchemy(conn, statement, params)
    try:
        values = [_values(plan, p) for p in sets]
    except Exception as error:  # a missing parameter, a value its column type refuses
        raise exc.StatementError(
            "a parameter could not be bound", plan.sql, None, error, hide_parameters=True
        ) from error
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

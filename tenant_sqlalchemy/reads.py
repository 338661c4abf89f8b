"""Which compiled statements only read: those a session may run before its savepoint is taken.

A session's savepoint exists so that `session.rollback()` undoes the session's work; a statement
that cannot change anything needs none, so the savepoint is taken just before the session's first
statement that might (lent.py). Anything not known to be a plain read counts as a write: text(),
literal_column(), DML, DDL, `FOR UPDATE`/`FOR SHARE` (row locks a rollback to a savepoint would release), CTEs (a
data-modifying one looks like a read), and calls of functions outside READ_ONLY_FUNCTIONS (a
function may write). The answer is kept on the compiled object, which SQLAlchemy caches, so each
statement is examined once per process.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql import visitors
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.elements import ColumnClause, TextClause
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import CTE, CompoundSelect, GenerativeSelect, Select

# built-in functions that change nothing (aggregates, comparisons, string and time functions)
READ_ONLY_FUNCTIONS = frozenset({
    "count", "sum", "min", "max", "avg", "array_agg", "string_agg", "json_agg", "jsonb_agg", "bool_and",
    "bool_or", "coalesce", "nullif", "greatest", "least", "lower", "upper", "length", "char_length",
    "concat", "trim", "substring", "abs", "round", "floor", "ceil", "now", "current_timestamp",
    "current_date", "localtimestamp", "date_trunc", "extract", "cast", "row_number", "rank", "dense_rank",
})

_ATTRIBUTE = "_tp_reads_only"


def _element_reads_only(element: Any) -> bool:
    if isinstance(element, (TextClause, CTE)):
        return False
    if isinstance(element, ColumnClause) and element.is_literal and element.name != "*":  # literal_column(): SQL text
        return False
    if isinstance(element, GenerativeSelect) and element._for_update_arg is not None:
        return False
    if isinstance(element, FunctionElement):
        return not getattr(element, "packagenames", ()) and str(getattr(element, "name", "")).lower() in READ_ONLY_FUNCTIONS
    return True


def reads_only(compiled: Compiled | None) -> bool:
    """True when `compiled` (a statement SQLAlchemy compiled) is a SELECT that changes nothing."""
    if compiled is None:  # exec_driver_sql(): a string we know nothing about
        return False
    known = compiled.__dict__.get(_ATTRIBUTE)
    if known is None:
        statement = compiled.statement
        known = isinstance(statement, (Select, CompoundSelect)) and all(
            _element_reads_only(element) for element in visitors.iterate(statement))
        compiled.__dict__[_ATTRIBUTE] = known
    return known

"""Which statements a session runs before taking its savepoint: plain SELECTs only; anything that
might change something (or that we cannot see into) takes the savepoint first."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects import postgresql

from examples.litestar_sqlalchemy_app import Project
from tenant_sqlalchemy.reads import reads_only

READS = {
    "orm select": select(Project).order_by(Project.id),
    "count": select(func.count()).select_from(Project),
    "aggregates and now()": select(func.max(Project.id), func.lower(Project.name)).where(Project.created_at < func.now()),
    "union": select(Project.id).union(select(Project.id)),
    "subquery": select(Project).where(Project.id.in_(select(Project.id).where(Project.name == "x"))),
}
WRITES = {
    "text": text("SELECT 1"),
    "insert": insert(Project).values(name="x"),
    "update": update(Project).values(name="x"),
    "delete": delete(Project),
    "for update": select(Project).with_for_update(),
    "for share in a subquery": select(Project).where(Project.id.in_(select(Project.id).with_for_update(read=True))),
    "a function that may write": select(func.my_audit_write(Project.id)),
    "a schema-qualified function": select(func.app.count(Project.id)),
    "a cte": select(select(Project.id).cte("ids")),
    "a literal column": select(literal_column("nextval('s')")),
}


@pytest.mark.parametrize("name", READS)
def test_plain_selects_run_before_the_savepoint(name):
    assert reads_only(READS[name].compile(dialect=postgresql.dialect()))


@pytest.mark.parametrize("name", WRITES)
def test_anything_else_takes_the_savepoint_first(name):
    assert not reads_only(WRITES[name].compile(dialect=postgresql.dialect()))


def test_no_compiled_statement_is_a_write_and_the_answer_is_kept():
    assert not reads_only(None)
    compiled = select(Project).compile(dialect=postgresql.dialect())
    assert reads_only(compiled) and compiled.__dict__["_tp_reads_only"] is True

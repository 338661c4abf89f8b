from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import identifiers
from contracts.identifiers import InvalidIdentifier, quote, quote_literal


@given(st.uuids())
def test_names_derive_from_the_id_and_are_valid(tid: uuid.UUID):
    for name in (identifiers.tenant_database(tid), identifiers.tenant_role(tid), identifiers.tenant_schema(tid)):
        assert name.startswith(identifiers.PREFIX)
        assert tid.hex in name
        assert len(name) <= 63
        assert quote(name) == f'"{name}"'


@given(st.text(max_size=80))
def test_quote_accepts_only_the_safe_alphabet(text: str):
    try:
        quoted = quote(text)
    except InvalidIdentifier:
        return
    assert quoted == f'"{text}"'
    assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text)


@pytest.mark.parametrize("bad", ['x"; DROP DATABASE x; --', "Upper", "", "a" * 64, "a b", "a\x00", "1abc", "é"])
def test_quote_refuses(bad: str):
    with pytest.raises(InvalidIdentifier):
        quote(bad)


def test_literals_double_quotes_and_refuse_nul():
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(InvalidIdentifier):
        quote_literal("a\x00b")


@given(st.uuids())
def test_spare_names_are_valid_and_never_a_tenant_name(key: uuid.UUID):
    name = identifiers.spare_database(key)
    assert name.startswith(identifiers.SPARE_PREFIX) and len(name) <= 63
    assert quote(name) == f'"{name}"'
    assert not name.startswith(identifiers.tenant_database(key)[:len(identifiers.PREFIX) + 3])


@given(st.uuids())
def test_restore_role_names_derive_from_the_operation_and_are_no_tenant_role(op: uuid.UUID):
    name = identifiers.restore_role(op)
    assert name == identifiers.restore_role(str(op))  # a rerun finds the same role
    assert name.startswith(identifiers.RESTORE_ROLE_PREFIX) and op.hex in name and len(name) <= 63
    assert quote(name) == f'"{name}"'
    assert not name.startswith(identifiers.tenant_role(op)[:len(identifiers.PREFIX) + 5])

from __future__ import annotations

import pytest

from contracts.placement import TenantStatus as S
from control_plane.catalog.states import ADMIN_SETTABLE, TRANSITIONS, can_transition


def test_every_status_has_a_row():
    assert set(TRANSITIONS) == set(S)


def test_deleted_comes_back_only_by_a_restore():
    """A deleted tenant becomes `provisioning` again only when restored from one of its backups."""
    assert [target for target in S if can_transition(S.deleted, target)] == [S.provisioning]


@pytest.mark.parametrize(("current", "target", "allowed"), [
    (S.provisioning, S.active, True),
    (S.active, S.suspended, True),
    (S.suspended, S.active, True),
    (S.active, S.deleting, True),
    (S.suspended, S.deleting, True),
    (S.deleting, S.deleted, True),
    (S.provisioning, S.suspended, False),
    (S.deleting, S.active, False),
    (S.maintenance, S.suspended, False),
])
def test_transitions(current, target, allowed):
    assert can_transition(current, target) is allowed


def test_admins_may_only_suspend_and_resume():
    assert ADMIN_SETTABLE == {S.active, S.suspended}

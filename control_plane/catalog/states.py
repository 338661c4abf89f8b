"""The tenant status machine as data: which status may follow which."""

from __future__ import annotations

from contracts.placement import TenantStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.provisioning: frozenset({S.active, S.failed, S.deleting}),
    S.active: frozenset({S.suspended, S.maintenance, S.deleting}),
    S.suspended: frozenset({S.active, S.deleting}),
    S.maintenance: frozenset({S.active, S.failed}),
    S.deleting: frozenset({S.deleted, S.failed}),
    S.failed: frozenset({S.provisioning, S.deleting, S.active}),
    S.deleted: frozenset({S.provisioning}),  # only by a restore from one of its backups (not once erased)
}

# what an admin may ask for directly with PATCH; the rest are driven by operations
ADMIN_SETTABLE: frozenset[S] = frozenset({S.active, S.suspended})


def can_transition(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]

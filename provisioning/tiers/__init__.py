"""One object per tier (base.TierManager): what the tier does on a server. A tier is a module here
plus its layout in contracts/tiers.py."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.placement import Tier
from provisioning.tiers.base import TierManager
from provisioning.tiers.dedicated import DEDICATED
from provisioning.tiers.schema import SCHEMA
from provisioning.tiers.shared import SHARED

TIERS: Mapping[Tier, TierManager] = {tier.layout.tier: tier for tier in (DEDICATED, SCHEMA, SHARED)}


def tier_manager(tier: Tier | str) -> TierManager:
    """The tier's manager, by enum or by its name (the catalog stores the name)."""
    return TIERS[Tier(tier)]

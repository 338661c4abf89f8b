"""Plans, a tenant's plan and billing status, and per-tenant feature overrides.

Each use case is one catalog transaction (write + audit row). Whatever changes what a router
admits (features, rate limit, billing status) is announced on Redis after the commit, so routers
drop the tenant's cached placement at once instead of waiting for their TTL.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
from sqlalchemy import delete, func, null, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.models import Plan, Tenant, TenantFeatureOverride
from control_plane.schemas import (
    FeatureOverrideOut,
    PlanBackup,
    PlanList,
    PlanOut,
    PutPlan,
    SetBillingStatus,
    SetFeature,
    SetTenantPlan,
    TenantFeatures,
    TenantOut,
)
from control_plane.services import audit, notify
from control_plane.services.lookup import find_tenant
from control_plane.services.tenants import _tenant_query, _to_out
from provisioning.schedules import InvalidSchedule, check_schedule

_NAME = re.compile(r"[a-z][a-z0-9_]{1,62}")
_PRICE = re.compile(r"(?:price|plan)_[A-Za-z0-9_]{1,250}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LIVE = Tenant.status != TenantStatus.deleted.value


def invalid(key: str, source: str, message: str) -> errors.Unprocessable:
    """The same shape as a validation failure the framework reports (422 validation_failed)."""
    return errors.Unprocessable("the request did not pass validation",
                                errors=[{"key": key, "source": source, "message": message}])


def check_name(value: str, key: str, source: str) -> str:
    # fullmatch: msgspec's pattern check uses re.search, where '$' also matches before a final '\n'
    if not _NAME.fullmatch(value):
        raise invalid(key, source, "expected lowercase letters, digits and '_', starting with a letter (2-63)")
    return value


def check_text(value: str, key: str) -> str:
    if _CONTROL.search(value):
        raise invalid(key, "body", "control characters are not allowed")
    return value


async def _tenant_out(session: AsyncSession, tenant_id: uuid.UUID) -> TenantOut:
    return _to_out((await session.execute(_tenant_query().where(Tenant.id == tenant_id))).one())


def _plan_out(plan: Plan, tenant_count: int) -> PlanOut:
    return PlanOut(name=plan.name, description=plan.description, features=list(plan.features),
                   rate_limit_per_minute=plan.rate_limit_per_minute, stripe_price_ids=list(plan.stripe_price_ids),
                   tier=plan.tier, tier_on_leave=plan.tier_on_leave, tenant_count=tenant_count,
                   backup=PlanBackup(**plan.backup) if plan.backup else None,
                   created_at=plan.created_at, updated_at=plan.updated_at)


def _tenant_count():
    return (select(func.count()).select_from(Tenant).where(Tenant.plan == Plan.name, _LIVE)
            .correlate(Plan).scalar_subquery())


class PlanService:
    def __init__(self, sessions: async_sessionmaker, redis: Any = None) -> None:
        self.sessions = sessions
        self.redis = redis

    # --- plans ---

    async def list(self) -> PlanList:
        async with self.sessions() as session:
            rows = (await session.execute(select(Plan, _tenant_count()).order_by(Plan.name))).all()
        return PlanList(items=[_plan_out(plan, count) for plan, count in rows])

    async def get(self, name: str) -> PlanOut:
        async with self.sessions() as session:
            return await self._get(session, name)

    async def _get(self, session: AsyncSession, name: str) -> PlanOut:
        row = None
        if _NAME.fullmatch(name):
            row = (await session.execute(select(Plan, _tenant_count()).where(Plan.name == name))).first()
        if row is None:
            raise errors.PlanNotFound(f"no plan {name!r}")
        return _plan_out(*row)

    async def put(self, actor: str, name: str, body: PutPlan) -> PlanOut:
        """Create or replace a plan. Tenants on it see the new features and limit at once."""
        check_name(name, "name", "path")
        for feature in body.features:
            check_name(feature, "features", "body")
        check_text(body.description, "description")
        for price in body.stripe_price_ids:
            if not _PRICE.fullmatch(price):
                raise invalid("stripe_price_ids", "body", "expected Stripe price ids (price_...)")
        if body.backup is not None and body.backup.schedule != "off":
            try:
                check_schedule(body.backup.schedule)
            except InvalidSchedule as exc:
                raise invalid("backup.schedule", "body", f"{exc} (or \"off\")") from None
        features = sorted(set(body.features))
        prices = list(dict.fromkeys(body.stripe_price_ids))  # order kept: the first is what checkout sells
        async with self.sessions() as session, session.begin():
            before = (await session.execute(
                select(Plan.features, Plan.rate_limit_per_minute).where(Plan.name == name).with_for_update())).first()
            if prices:
                await self._refuse_taken_prices(session, name, prices)
            values = {"description": body.description, "features": features,
                      "rate_limit_per_minute": body.rate_limit_per_minute, "stripe_price_ids": prices,
                      "tier": body.tier.value if body.tier else None,
                      "tier_on_leave": body.tier_on_leave.value if body.tier_on_leave else None,
                      "backup": msgspec.to_builtins(body.backup) if body.backup else None}
            # SQL NULL, not JSON null, for "no policy of its own"
            stored = {**values, "backup": values["backup"] if values["backup"] is not None else null()}
            await session.execute(insert(Plan).values(name=name, **stored).on_conflict_do_update(
                index_elements=[Plan.name], set_={**stored, "updated_at": func.now()}))
            changed = before is None or sorted(before[0]) != features or before[1] != body.rate_limit_per_minute
            audit.record(session, actor, "plan.put", "plan", name, created=before is None, **values)
            affected = []
            if changed:
                affected = list(await session.scalars(select(Tenant.id).where(Tenant.plan == name, _LIVE)))
            noted = await notify.note(self.redis, session, affected)
            out = await self._get(session, name)
        await notify.placements_changed(self.redis, affected, noted)
        return out

    async def _refuse_taken_prices(self, session: AsyncSession, name: str, prices: list[str]) -> None:
        """A Stripe price belongs to one plan: a subscription to it must name one plan. Plan writes
        that sell prices take turns (a table lock that only they take), so two concurrent PUTs
        cannot both claim the same price."""
        await session.execute(text("LOCK TABLE plans IN SHARE ROW EXCLUSIVE MODE"))
        price = func.unnest(Plan.stripe_price_ids).table_valued("price").alias("price")
        taken = (await session.execute(select(Plan.name, price.c.price).select_from(Plan).join(price, true())
                                       .where(Plan.name != name, price.c.price.in_(prices))
                                       .order_by(Plan.name).limit(1))).first()
        if taken is not None:
            raise errors.StripePriceTaken(f"plan {taken[0]!r} already sells Stripe price {taken[1]!r}",
                                          plan=taken[0], price=taken[1])

    async def delete(self, actor: str, name: str) -> None:
        async with self.sessions() as session, session.begin():
            exists = _NAME.fullmatch(name) and await session.scalar(
                select(Plan.name).where(Plan.name == name).with_for_update())
            if not exists:
                raise errors.PlanNotFound(f"no plan {name!r}")
            in_use = await session.scalar(select(func.count()).select_from(Tenant).where(Tenant.plan == name, _LIVE))
            if in_use:
                raise errors.PlanInUse(f"{in_use} tenant(s) are on plan {name!r}; move them first",
                                       tenant_count=in_use)
            # deleted tenants keep no claim on a plan
            await session.execute(update(Tenant).where(Tenant.plan == name, ~_LIVE).values(plan=None)
                                  .execution_options(synchronize_session=False))
            try:
                await session.execute(delete(Plan).where(Plan.name == name))
            except IntegrityError:  # a tenant was moved onto it meanwhile
                raise errors.PlanInUse(f"tenants are on plan {name!r}; move them first") from None
            audit.record(session, actor, "plan.delete", "plan", name)

    # --- a tenant's plan and billing status ---

    async def set_tenant_plan(self, actor: str, key: str, body: SetTenantPlan) -> TenantOut:
        if body.plan is not None:
            check_name(body.plan, "plan", "body")
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            previous = tenant.plan
            if body.plan is not None and await session.scalar(select(Plan.name).where(Plan.name == body.plan)) is None:
                raise errors.UnknownPlan(f"no plan named {body.plan!r}")
            if body.plan != previous:
                try:
                    await session.execute(update(Tenant).where(Tenant.id == tenant.id)
                                          .values(plan=body.plan, updated_at=func.now()))
                except IntegrityError:  # the plan was deleted meanwhile
                    raise errors.UnknownPlan(f"no plan named {body.plan!r}") from None
            audit.record(session, actor, "tenant.plan", "tenant", tenant.id, plan=body.plan, previous=previous)
            noted = await notify.note(self.redis, session, [tenant.id]) if body.plan != previous else []
            out = await _tenant_out(session, tenant.id)
        if body.plan != previous:
            await notify.placement_changed(self.redis, tenant.id, noted=noted)
        return out

    async def set_billing(self, actor: str, key: str, body: SetBillingStatus) -> TenantOut:
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            previous = tenant.billing_status
            if body.billing_status != previous:
                await session.execute(update(Tenant).where(Tenant.id == tenant.id)
                                      .values(billing_status=body.billing_status, updated_at=func.now(),
                                              billing_grace_until=None))  # by hand: no grace, 402 at once
            audit.record(session, actor, "tenant.billing", "tenant", tenant.id,
                         billing_status=body.billing_status, previous=previous)
            noted = await notify.note(self.redis, session, [tenant.id]) if body.billing_status != previous else []
            out = await _tenant_out(session, tenant.id)
        if body.billing_status != previous:
            await notify.placement_changed(self.redis, tenant.id, noted=noted)
        return out

    # --- feature overrides ---

    async def features(self, key: str) -> TenantFeatures:
        async with self.sessions() as session:
            return await self._features(session, await find_tenant(session, key))

    @staticmethod
    async def _features(session: AsyncSession, tenant: Tenant) -> TenantFeatures:
        plan_features: list[str] = []
        if tenant.plan is not None:
            plan_features = sorted(await session.scalar(select(Plan.features).where(Plan.name == tenant.plan)) or [])
        overrides = (await session.execute(
            select(TenantFeatureOverride.feature, TenantFeatureOverride.enabled)
            .where(TenantFeatureOverride.tenant_id == tenant.id).order_by(TenantFeatureOverride.feature))).all()
        # the same rule as the router's directory query: an override wins over the plan
        effective = (set(plan_features) - {f for f, on in overrides if not on}) | {f for f, on in overrides if on}
        return TenantFeatures(tenant_id=tenant.id, plan=tenant.plan, plan_features=plan_features,
                              overrides=[FeatureOverrideOut(feature=f, enabled=on) for f, on in overrides],
                              features=sorted(effective))

    async def set_feature(self, actor: str, key: str, feature: str, body: SetFeature) -> TenantFeatures:
        check_name(feature, "feature", "path")
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            previous = await session.scalar(select(TenantFeatureOverride.enabled).where(
                TenantFeatureOverride.tenant_id == tenant.id, TenantFeatureOverride.feature == feature))
            await session.execute(insert(TenantFeatureOverride)
                                  .values(tenant_id=tenant.id, feature=feature, enabled=body.enabled)
                                  .on_conflict_do_update(index_elements=["tenant_id", "feature"],
                                                         set_={"enabled": body.enabled}))
            audit.record(session, actor, "tenant.feature.set", "tenant", tenant.id, feature=feature,
                         enabled=body.enabled, previous=previous)
            noted = await notify.note(self.redis, session, [tenant.id]) if previous != body.enabled else []
            out = await self._features(session, tenant)
        if previous != body.enabled:
            await notify.placement_changed(self.redis, tenant.id, noted=noted)
        return out

    async def unset_feature(self, actor: str, key: str, feature: str) -> None:
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            previous = None
            if _NAME.fullmatch(feature):
                previous = await session.scalar(delete(TenantFeatureOverride).where(
                    TenantFeatureOverride.tenant_id == tenant.id, TenantFeatureOverride.feature == feature)
                    .returning(TenantFeatureOverride.enabled))
            if previous is None:
                raise errors.OverrideNotFound(f"tenant {key!r} has no override for {feature!r}")
            audit.record(session, actor, "tenant.feature.unset", "tenant", tenant.id, feature=feature,
                         previous=previous)
            noted = await notify.note(self.redis, session, [tenant.id])
        await notify.placement_changed(self.redis, tenant.id, noted=noted)

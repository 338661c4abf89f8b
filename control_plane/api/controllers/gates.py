"""Thin controllers for what the router's gates read: plans, a tenant's plan, billing status and
feature overrides, users and memberships."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import KeyParam, actor
from control_plane.schemas import (
    CreateUser,
    MembershipList,
    MembershipOut,
    PlanList,
    PlanOut,
    PutMembership,
    PutPlan,
    SetBillingStatus,
    SetFeature,
    SetTenantPlan,
    TenantFeatures,
    TenantOut,
    UserOut,
    UserPage,
)
from control_plane.services.memberships import MembershipService
from control_plane.services.plans import PlanService

NameParam = Annotated[str, Parameter(max_length=100, description="plan name")]
FeatureParam = Annotated[str, Parameter(max_length=100, description="feature name")]
UserParam = Annotated[str, Parameter(max_length=100, description="user id")]


class PlanController(Controller):
    path = "/v1/plans"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["plans"]

    @get("/", summary="List plans")
    async def list_plans(self, plans: NamedDependency[PlanService]) -> PlanList:
        return await plans.list()

    @get("/{name:str}", summary="Get a plan")
    async def get_plan(self, name: NameParam, plans: NamedDependency[PlanService]) -> PlanOut:
        return await plans.get(name)

    @put("/{name:str}", status_code=200, summary="Create or replace a plan")
    async def put_plan(self, request: Request, name: NameParam, data: JSONBody[PutPlan],
                       plans: NamedDependency[PlanService]) -> PlanOut:
        return await plans.put(actor(request), name, data)

    @delete("/{name:str}", summary="Delete a plan no tenant is on")
    async def delete_plan(self, request: Request, name: NameParam, plans: NamedDependency[PlanService]) -> None:
        await plans.delete(actor(request), name)


class TenantGatesController(Controller):
    path = "/v1/tenants/{key:str}"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["tenants"]

    @put("/plan", status_code=200, summary="Put a tenant on a plan (or none)")
    async def set_plan(self, request: Request, key: KeyParam, data: JSONBody[SetTenantPlan],
                       plans: NamedDependency[PlanService]) -> TenantOut:
        return await plans.set_tenant_plan(actor(request), key, data)

    @put("/billing", status_code=200, summary="Set a tenant's billing status")
    async def set_billing(self, request: Request, key: KeyParam, data: JSONBody[SetBillingStatus],
                          plans: NamedDependency[PlanService]) -> TenantOut:
        return await plans.set_billing(actor(request), key, data)

    @get("/features", summary="A tenant's effective features and overrides")
    async def get_features(self, key: KeyParam, plans: NamedDependency[PlanService]) -> TenantFeatures:
        return await plans.features(key)

    @put("/features/{feature:str}", status_code=200, summary="Grant or withhold one feature for a tenant")
    async def set_feature(self, request: Request, key: KeyParam, feature: FeatureParam, data: JSONBody[SetFeature],
                          plans: NamedDependency[PlanService]) -> TenantFeatures:
        return await plans.set_feature(actor(request), key, feature, data)

    @delete("/features/{feature:str}", summary="Remove a feature override (the plan decides again)")
    async def unset_feature(self, request: Request, key: KeyParam, feature: FeatureParam,
                            plans: NamedDependency[PlanService]) -> None:
        await plans.unset_feature(actor(request), key, feature)

    @get("/memberships", summary="A tenant's members")
    async def list_memberships(self, key: KeyParam, memberships: NamedDependency[MembershipService]) -> MembershipList:
        return await memberships.tenant_memberships(key)

    @put("/memberships/{user_id:str}", status_code=200, summary="Add a user to a tenant, or change their role")
    async def put_membership(self, request: Request, key: KeyParam, user_id: UserParam,
                             data: JSONBody[PutMembership],
                             memberships: NamedDependency[MembershipService]) -> MembershipOut:
        return await memberships.put(actor(request), key, user_id, data)

    @delete("/memberships/{user_id:str}", summary="Remove a user from a tenant")
    async def delete_membership(self, request: Request, key: KeyParam, user_id: UserParam,
                                memberships: NamedDependency[MembershipService]) -> None:
        await memberships.delete(actor(request), key, user_id)


class UserController(Controller):
    path = "/v1/users"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["users"]

    @post("/", status_code=201, summary="Create a user")
    async def create_user(self, request: Request, data: JSONBody[CreateUser],
                          memberships: NamedDependency[MembershipService]) -> UserOut:
        return await memberships.create_user(actor(request), data)

    @get("/", summary="Users, newest first; `email` narrows to addresses starting with it")
    async def list_users(
        self, memberships: NamedDependency[MembershipService],
        email: Annotated[str | None, Parameter(max_length=320, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> UserPage:
        return await memberships.list_users(email=email, limit=limit, cursor=cursor)

    @get("/{user_id:str}", summary="Get a user")
    async def get_user(self, user_id: UserParam, memberships: NamedDependency[MembershipService]) -> UserOut:
        return await memberships.get_user(user_id)

    @get("/{user_id:str}/memberships", summary="The tenants a user belongs to")
    async def user_memberships(self, user_id: UserParam,
                               memberships: NamedDependency[MembershipService]) -> MembershipList:
        return await memberships.user_memberships(user_id)

"""Typed errors with stable codes, answered as RFC 9457 problem details (contracts/problems.py);
services raise them and know nothing of HTTP beyond the status."""

from __future__ import annotations

from contracts.problems import ProblemError


class ControlPlaneError(ProblemError):
    pass


class Unauthorized(ControlPlaneError):
    status, code, title = 401, "unauthorized", "Missing or invalid admin token"
    headers = {"WWW-Authenticate": 'Bearer realm="tenantplane"'}


class InsufficientScope(ControlPlaneError):
    status, code, title = 403, "insufficient_scope", "The admin key lacks the scope this needs"


class NotFound(ControlPlaneError):
    status, code, title = 404, "not_found", "Not found"


class TenantNotFound(NotFound):
    code, title = "tenant_not_found", "Tenant not found"


class OperationNotFound(NotFound):
    code, title = "operation_not_found", "Operation not found"


class Conflict(ControlPlaneError):
    status, code, title = 409, "conflict", "Conflict"


class SlugTaken(Conflict):
    code, title = "slug_taken", "Slug already in use"


class ServerNameTaken(Conflict):
    code, title = "server_name_taken", "Server name already in use"


class InvalidTransition(Conflict):
    code, title = "invalid_transition", "Status change not allowed"


class OperationInProgress(Conflict):
    code, title = "operation_in_progress", "Another operation is running for this tenant"


class Unprocessable(ControlPlaneError):
    status, code, title = 422, "validation_failed", "Invalid request"


class SlugReserved(Unprocessable):
    code, title = "slug_reserved", "Slug is reserved"


class UnknownServer(Unprocessable):
    code, title = "unknown_server", "Unknown database server"


class InvalidDsn(Unprocessable):
    code, title = "invalid_dsn", "Invalid database server DSN"


class ServerUnreachable(Unprocessable):
    code, title = "server_unreachable", "Database server could not be used"


class InvalidCursor(Unprocessable):
    code, title = "invalid_cursor", "Invalid pagination cursor"


# --- plans, features, users and memberships (the admin side of the router's gates) ---


class PlanNotFound(NotFound):
    code, title = "plan_not_found", "Plan not found"


class UserNotFound(NotFound):
    code, title = "user_not_found", "User not found"


class MembershipNotFound(NotFound):
    code, title = "membership_not_found", "Membership not found"


class OverrideNotFound(NotFound):
    code, title = "override_not_found", "Feature override not found"


class PlanInUse(Conflict):
    code, title = "plan_in_use", "Plan is assigned to tenants"


class StripePriceTaken(Conflict):
    code, title = "stripe_price_taken", "Stripe price already sold by another plan"


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already in use"


class UnknownPlan(Unprocessable):
    code, title = "unknown_plan", "Unknown plan"


class DomainInvalid(Unprocessable):
    code, title = "domain_invalid", "Not a usable custom domain"


class DomainTaken(Conflict):
    code, title = "domain_taken", "Domain already routes to a tenant"


class DomainNotFound(NotFound):
    code, title = "domain_not_found", "Domain not found"


class OperationNotRetryable(Conflict):
    code, title = "operation_not_retryable", "Only a failed operation can be retried"


class OperationFinished(Conflict):
    code, title = "operation_finished", "Only a queued or running operation can be cancelled"


class UnknownRevision(Unprocessable):
    code, title = "unknown_revision", "Unknown tenant revision"


class MigrationRunNotFound(NotFound):
    code, title = "migration_run_not_found", "Migration run not found"


class DowngradeNotSupported(Unprocessable):
    code, title = "downgrade_not_supported", "Tenant databases are never migrated down"


class AdminKeyNotFound(NotFound):
    code, title = "admin_key_not_found", "Admin key not found"


class AdminKeyNameTaken(Conflict):
    code, title = "admin_key_name_taken", "Admin key name already in use"


class NothingToMove(Conflict):
    code, title = "nothing_to_move", "The tenant is already there"


class ServerNotFound(NotFound):
    code, title = "server_not_found", "Database server not found"


class ServerHostNotAllowed(Unprocessable):
    code, title = "server_host_not_allowed", "Database server host not allowed"


class TooManyFailedAttempts(ControlPlaneError):
    """Too many failed admin authentications from one client address; `retry_after` in seconds
    (sent as the Retry-After header)."""

    status, code, title = 429, "too_many_failed_attempts", "Too many failed authentication attempts"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


# --- backups ---


class BackupNotFound(NotFound):
    code, title = "backup_not_found", "Backup not found"


class UnknownBackup(Unprocessable):
    code, title = "unknown_backup", "Unknown backup"


class BackupOfOtherTenant(Unprocessable):
    code, title = "backup_of_other_tenant", "The backup belongs to another tenant"


class BackupNotRestorable(Unprocessable):
    code, title = "backup_not_restorable", "The backup cannot be restored"


class BackupTooNew(Unprocessable):
    code, title = "backup_revision_too_new", "The backup is at a revision newer than this code knows"


class BackupKeysDestroyed(Conflict):
    code, title = "backup_keys_destroyed", "The tenant's backup keys were destroyed"


class TenantErased(Conflict):
    code, title = "tenant_erased", "The tenant was erased and cannot be restored"


class SubscriptionNotCancelled(Conflict):
    code, title = "subscription_not_cancelled", "The deleted tenant's Stripe subscription is not cancelled yet"


class KeyServiceUnavailable(ControlPlaneError):
    """KMS could not be reached or refused the call (the cause is in the API's log)."""

    status, code, title = 503, "key_service_unavailable", "The key management service is not available"


class TenantNotDeleted(Conflict):
    code, title = "tenant_not_deleted", "Only a deleted tenant can be erased; delete it first"


class ErasureNotFound(NotFound):
    code, title = "erasure_not_found", "No erasure was requested for this tenant"


class DomainNotVerified(Conflict):
    """The TXT challenge was not found; `extra` says what the lookup found instead."""

    code, title = "domain_not_verified", "Domain ownership not proved yet"


# --- lifecycle events ---
class EventNotFound(NotFound):
    code, title = "event_not_found", "No such event"


class EventNotAbandoned(Conflict):
    code, title = "event_not_abandoned", "Only an event whose delivery was given up can be sent again"

"""Billing's typed errors (stable codes; mapped to problem details with every ControlPlaneError)."""

from __future__ import annotations

from control_plane.errors import Conflict, ControlPlaneError, NotFound, Unprocessable


class InvalidSignature(ControlPlaneError):
    status, code, title = 400, "invalid_signature", "Missing, forged or stale Stripe signature"


class InvalidEvent(ControlPlaneError):
    status, code, title = 400, "invalid_event", "Not a Stripe event"


class WebhookNotConfigured(ControlPlaneError):
    status, code, title = 503, "webhook_not_configured", "No Stripe webhook secret is configured"


class BillingNotConfigured(ControlPlaneError):
    status, code, title = 503, "billing_not_configured", "No Stripe API key is configured"


class StripeUnavailable(ControlPlaneError):
    status, code, title = 502, "stripe_unavailable", "Stripe did not answer as expected"


class BillingEventNotFound(NotFound):
    code, title = "billing_event_not_found", "Billing event not found"


class EventNotReplayable(Conflict):
    code, title = "event_not_replayable", "Only a parked or failed event can be replayed"


class PlanNotForSale(Unprocessable):
    code, title = "plan_not_for_sale", "The plan has no Stripe price"

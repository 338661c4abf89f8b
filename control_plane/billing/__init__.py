"""Stripe billing: one customer and one subscription per tenant, events applied once and in order.

stripe_client.py is the only module that imports the Stripe SDK; events.py maps an event to a
catalog change without I/O; service.py records and applies events and makes the outbound calls."""

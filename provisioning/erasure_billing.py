"""The erasure saga's billing step (erasure.py runs it after the Stripe customer is deleted):
`scrub_billing_records` removes the personal data the catalog kept of the tenant's billing.

- Recorded Stripe events (`billing_events.payload`: the customer's email, name, address, phone) of
  the tenant, and those naming its customer or the tenant without being linked to it (parked: they
  arrived before the tenant knew its customer, or named another tenant's object), keep their id,
  type, created time and state; the payload becomes `{"id", "type", "erased": true}`. One still
  waiting to be applied is `ignored` instead (`effect.reason`: `tenant_erased`): its payload is
  gone, and a tombstone must not be billed again.
- Its dunning notices (`dunning_outbox`, provisioning/outbox.py), sent or not, are deleted.
- Its announcement outbox rows (provisioning/announcement_outbox.py) lose the slug and domain
  names they carry for the routers' caches; a broadcast takes their place.

The customer's id comes from the inventory (take_inventory keeps it in the operation's params,
since delete_stripe_customer makes the tenant forget it), from the tenant row (no STRIPE_API_KEY:
not forgotten) and from the tenant's own events. Everything happens in one transaction, with the
report's entry (counts added to those of an earlier run, so a rerun after a crash or a second
erasure run reports every event scrubbed once) and the customer id dropped from the params.
"""

from __future__ import annotations

from typing import Any

import msgspec

from provisioning import announcement_outbox, outbox, queue
from provisioning.context import StepContext

PLACE = "billing_records"
CUSTOMER_PARAM = "stripe_customer_id"  # take_inventory's note of the customer, dropped by this step

# an event's object (`o`) names a customer: it is one, or its `customer` is an id or an expanded object
_CUSTOMER_OF = ("CASE WHEN o->>'object' = 'customer' THEN o->>'id' "
                "WHEN jsonb_typeof(o->'customer') = 'object' THEN o->'customer'->>'id' "
                "WHEN jsonb_typeof(o->'customer') = 'string' THEN o->>'customer' END")
_CUSTOMERS = (
    f"SELECT DISTINCT c FROM (SELECT {_CUSTOMER_OF} AS c FROM billing_events, "
    "  LATERAL (SELECT payload->'data'->'object' AS o) x WHERE tenant_id = $1 "
    "  UNION ALL SELECT stripe_customer_id FROM tenants WHERE id = $1) found WHERE c IS NOT NULL")
_STUB = "jsonb_build_object('id', id, 'type', type, 'erased', true)"
_SCRUB = (
    f"WITH scrubbed AS (UPDATE billing_events SET payload = {_STUB}, "
    "  state = CASE WHEN state = 'received' THEN 'ignored' ELSE state END, "
    "  effect = CASE WHEN state = 'received' THEN '{\"reason\": \"tenant_erased\"}'::jsonb ELSE effect END "
    "  WHERE id IN (SELECT id FROM billing_events, LATERAL (SELECT payload->'data'->'object' AS o) x "
    "    WHERE NOT payload ? 'erased' AND (tenant_id = $1 "
    f"      OR ({_CUSTOMER_OF}) = ANY($2::text[]) "
    "      OR o->>'client_reference_id' = $1::text OR o->'metadata'->>'tenant_id' = $1::text)) "
    "  RETURNING 1) "
    "SELECT count(*) FROM scrubbed")
_EARLIER = "SELECT places->$2::text FROM tenant_erasures WHERE tenant_id = $1 FOR UPDATE"
_RECORD = ("UPDATE tenant_erasures SET places = places || jsonb_build_object($2::text, "
           "  $3::jsonb || jsonb_build_object('at', now())) WHERE tenant_id = $1")

REMAINS = ("the events' ids, types, times and states, and what applying them did (`effect`: Stripe ids, "
           "statuses, the plan); Stripe keeps the events themselves (30 days for listing)")


def customer_note(customer_id: str | None) -> dict[str, Any]:
    """What take_inventory adds to the operation's params for this step."""
    return {CUSTOMER_PARAM: customer_id}


async def scrub_billing_records(ctx: StepContext) -> None:
    tid = ctx.tenant_id
    async with ctx.catalog.acquire() as conn, conn.transaction():
        earlier = await conn.fetchval(_EARLIER, tid, PLACE)
        before: dict[str, Any] = msgspec.json.decode(earlier) if isinstance(earlier, str) else (earlier or {})
        customers = {r["c"] for r in await conn.fetch(_CUSTOMERS, tid)}
        if ctx.params.get(CUSTOMER_PARAM):
            customers.add(ctx.params[CUSTOMER_PARAM])
        scrubbed = int(await conn.fetchval(_SCRUB, tid, sorted(customers)))
        notices = await outbox.forget_dunning_notices(conn, tid)
        announcements = await announcement_outbox.forget_aliases(conn, tid)
        entry = {
            "billing_events_scrubbed": scrubbed + int(before.get("billing_events_scrubbed", 0)),
            "dunning_notices_removed": notices + int(before.get("dunning_notices_removed", 0)),
            "announcements_without_aliases": announcements + int(before.get("announcements_without_aliases", 0)),
            "kept": ["id", "type", "created", "state"],
            "remains": REMAINS,
        }
        await conn.execute(_RECORD, tid, PLACE, msgspec.json.encode(entry).decode())
        await queue.forget_params(conn, ctx.operation_id, [CUSTOMER_PARAM])

"""Router benchmarks (`make bench`, or `python -m bench [names...]`); not part of the test suite.

Each benchmark starts its own embedded PostgreSQL (fsync off) and Valkey in a temporary folder,
builds its own fleet of dedicated tenants (bench/fleet.py says how), measures a baseline in the
same process, and stops everything at the end, also when it fails. Figures are printed as they
come, then as a table, and written by name to bench/results.json. A missed target is reported,
never an error: the process exits non-zero only when a benchmark crashed.

Why an in-process ASGI transport (httpx.ASGITransport) and not uvicorn + httpx over loopback:
this machine has 2 cores, one of which PostgreSQL needs. With uvicorn, the same Python process
(or a second one competing for the same 2 cores) would also parse and write HTTP on both ends for
every request; that cost is the same for the routed and the fixed variant, so it would only dilute
the ratio and add kernel and scheduling noise. Through the ASGI transport both variants run the
identical Litestar stack and the identical handler on the same event loop, and the only difference
left is the router's own work (resolve, directory, gates, pool registry, transaction, reset): the
ratio is the strictest one we can measure here. Absolute figures are therefore higher than a
deployed app would show behind a real HTTP server.
"""

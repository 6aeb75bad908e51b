"""The HTTP surface and the timer trigger's body: what `function_app.py` calls.

`request_routes` (our stored requests: submit, read, callbacks), `upgrade_routes` (Partner Center
views: eligibility, upgrade status), `responses` (JSON and problem+json answers), `timer_trigger` (one
timer run), `caller_auth` (who is calling: Entra bearer tokens, `@requires(Role...)` per route, the
host auth level from CALLER_AUTH) and `signing_keys` (Entra's signing keys, cached, refresh
rate-limited). Handlers validate input first, then use `shared.runtime`; they may import every layer
below (runtime, webhooks, upgrade_requests, partner_center, foundation), never `shared.cli`.
"""

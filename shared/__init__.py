"""All of the function app's logic; `function_app.py` only wires triggers to it.

Layers, each importing only those below it (enforced by `lint-imports`, see docs/architecture.md):

- `cli`: the operator CLI (`python -m shared.cli`).
- `api`: the HTTP handlers per route group, their responses, the timer trigger's body, and caller
  sign-in (Entra ID bearer tokens, one app role per route).
- `runtime`: the composition root: builds each client once per process from `settings`.
- `webhooks`: outgoing completion callbacks (with their SSRF guard) and inbound signature checks.
- `upgrade_requests`: durable requests: the record and its state machine, the Table Storage
  store, intake (idempotency, one active request per customer), the processor and the timer run.
- `partner_center`: Partner Center access: the HTTP client and retry policy, App+User tokens,
  Key Vault secrets, and the exactly-once rules around the create call.
- foundation: `validation` (input values), `correlation`, `local_settings`, `settings`,
  `deadlines` (the answer's deadline and each outbound call's share of it), `errors`, `identifiers`.
"""

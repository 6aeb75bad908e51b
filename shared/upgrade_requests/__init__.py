"""Durable upgrade requests: accepted, stored, submitted and followed until final.

`record` (the stored request and its state machine), `store` (Azure Table Storage with ETag
concurrency), `intake` (accepting a request: idempotency keys, one active request per customer and
family), `processor` (one step of one request: submit, resolve, poll; claims under a lease),
`timer_run` (a bounded, concurrent run over what is due), `flow` (accept-then-submit and refresh,
shared by the HTTP API and the CLI). Imports `partner_center` and the foundation; callbacks are
reached through the `CallbackDelivery` protocol so that `webhooks` can sit above.
"""

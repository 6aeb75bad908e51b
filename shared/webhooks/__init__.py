"""Webhooks in both directions.

`callbacks` (the final record POSTed, signed the Standard Webhooks way, retried and recorded),
`callback_urls` (the SSRF guard: which callback URLs and addresses are allowed), and
`inbound_signatures` (verifying signed inbound webhooks). Imports `upgrade_requests` (the record),
`partner_center` (Key Vault secrets) and the foundation.
"""

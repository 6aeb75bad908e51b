"""Partner Center access: everything that talks to Partner Center, Entra ID or Key Vault.

`client` (paths, headers, error mapping, Location parsing), `retry_policy` (urllib3 Retry that
honours Retry-After within a bound), `tokens` (MSAL App+User tokens and refresh-token write-back),
`key_vault_secrets` (cached Key Vault reads and writes), `customers` (the partner's customer
list, streamed page by page), `exactly_once` (the rules that keep a
create from happening twice: eligibility first after any ambiguous outcome, the same MS-RequestId
on every resend). Imports only the foundation (`settings`, `errors`, `validation`, `correlation`,
`identifiers`); knows nothing of stored requests.
"""

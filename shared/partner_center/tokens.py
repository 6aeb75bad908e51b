"""App+User access tokens for Partner Center (the secure application model).

The partner app's id, secret and a refresh token obtained once through admin consent live in Key
Vault. MSAL redeems the refresh token for an access token and keeps both in its token cache, so a
warm instance makes no Entra call while the access token is valid and renews it from the cached
refresh token when it is not.

Entra returns a new refresh token with every grant and the old one ages out (90 days of
inactivity). Every time MSAL's cache holds a refresh token different from the one in Key Vault, it
is written back, so the secret never goes stale while the app is in use.

The write-back never overwrites a refresh token this instance did not write. Each instance
remembers the vault value its token chain started from (the one it redeemed, or last wrote).
Before writing, it re-reads the secret (uncached); if the vault holds something else, an
operator re-consented or another instance rotated: that token is adopted (this instance's MSAL
chain is dropped, so its next grant redeems the vault's token) and nothing is written. So an
operator's re-consent is never replaced by an older chain that may then be withdrawn, and two
instances rotating at once converge on one chain, every token written being one Entra issued.
Key Vault has no conditional write, so a re-consent stored in the instant between that re-read
and the write can still be overwritten; the operator's new version stays in the secret's
history, and the next re-consent check (any `invalid_grant`) re-reads the vault.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from shared.deadlines import held
from shared.errors import CredentialsUnavailable, ReconsentRequired
from shared.partner_center.key_vault_secrets import SecretStore
from shared.settings import Settings

if TYPE_CHECKING:
    import msal
    import requests

log = logging.getLogger(__name__)

MSAL_HTTP_TIMEOUT_SECONDS = 15


class PartnerCenterTokens:
    """Gives a valid Partner Center access token; thread-safe, one Entra call at a time."""

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        http_client: requests.Session | None = None,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._http_client = http_client
        self._scopes = [settings.partner_center_scope]
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_credentials: tuple[str, str] | None = None
        # The vault value this instance's token chain started from: the refresh token it
        # redeemed, or the rotation it last wrote. Anything else in the vault was written by
        # someone else and is adopted, never overwritten.
        self._refresh_token_in_vault: str | None = None

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A bearer token for Partner Center; `force_refresh` after Partner Center answered 401.

        The lock is waited for no longer than the caller's deadline allows (`held`): behind
        another thread's slow token chain (a timer claim's Entra grant), an inline answer gets
        `DeadlineExceeded` in time, not after that chain."""
        with held(self._lock, "the Partner Center token"):
            app = self._application()
            result = self._from_cache(app, force_refresh)
            if result is None:
                result = self._redeem_vault_refresh_token(app)
            self._write_back_rotated_refresh_token(app)
            return str(result["access_token"])

    def _from_cache(self, app: msal.ConfidentialClientApplication, force_refresh: bool) -> dict[str, Any] | None:
        try:
            accounts = app.get_accounts()
            if not accounts:
                return None
            result = app.acquire_token_silent_with_error(self._scopes, account=accounts[0], force_refresh=force_refresh)
        except Exception as error:  # MsalServiceError (Entra 5xx), network errors: never a 500
            raise CredentialsUnavailable(f"Entra ID could not renew the token ({type(error).__name__})") from None
        if result and "access_token" in result:
            return dict(result)
        if result:  # the cached refresh token was refused; start again from the vault's
            log.warning("token.cached_refresh_token_refused error=%s", result.get("error"))
            for account in accounts:
                app.remove_account(account)
        return None

    def _redeem_vault_refresh_token(self, app: msal.ConfidentialClientApplication) -> dict[str, Any]:
        name = self._settings.refresh_token_secret_name
        refresh_token = self._secrets.get(name)
        result = self._redeem(app, refresh_token)
        if result.get("error") == "invalid_grant":
            # Maybe an operator re-consented, or another instance rotated it: re-read once, uncached.
            latest = self._secrets.get(name, fresh=True)
            if latest != refresh_token:
                refresh_token, result = latest, self._redeem(app, latest)
        self._refresh_token_in_vault = refresh_token
        if "access_token" not in result:
            raise _token_error(result, self._settings)
        log.info("token.redeemed_refresh_token source=key_vault")
        return result

    def _redeem(self, app: msal.ConfidentialClientApplication, refresh_token: str) -> dict[str, Any]:
        try:
            return dict(app.acquire_token_by_refresh_token(refresh_token, scopes=self._scopes))
        except Exception as error:  # requests/msal network failures; never let a token reach a log
            raise CredentialsUnavailable(
                f"Entra ID could not be reached for a token ({type(error).__name__})"
            ) from None

    def _write_back_rotated_refresh_token(self, app: msal.ConfidentialClientApplication) -> None:
        import msal

        # list(): MSAL's search is a generator that holds the cache's lock while paused; draining it
        # first means no lock is held during the Key Vault write below (or forever, if it fails).
        cached = list(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))
        latest = next((item["secret"] for item in cached if item.get("secret")), None)
        if latest and latest != self._refresh_token_in_vault:
            name = self._settings.refresh_token_secret_name
            try:
                current = self._secrets.get(name, fresh=True)
            except CredentialsUnavailable as error:  # not fatal, as a failed write below
                log.error("token.refresh_token_write_back_failed secret_name=%s detail=%s", name, error.detail)
                return
            if current != self._refresh_token_in_vault:
                self._adopt(app, current)
                return
            try:
                self._secrets.set(name, latest)
            except CredentialsUnavailable as error:
                # Not fatal: Entra keeps the previous refresh token valid, we hold a good access
                # token, and the write is tried again after the next grant. Loud, so it is fixed.
                log.error("token.refresh_token_write_back_failed secret_name=%s detail=%s", name, error.detail)
                return
            self._refresh_token_in_vault = latest
            log.info("token.refresh_token_rotated secret_name=%s", name)

    def _adopt(self, app: msal.ConfidentialClientApplication, refresh_token: str) -> None:
        """Someone else wrote the vault's refresh token (an operator's re-consent, another
        instance's rotation): drop our chain so the next grant redeems theirs; write nothing."""
        for account in app.get_accounts():
            app.remove_account(account)
        self._refresh_token_in_vault = refresh_token
        log.warning(
            "token.refresh_token_adopted secret_name=%s reason=newer_version_in_key_vault",
            self._settings.refresh_token_secret_name,
        )

    def _application(self) -> msal.ConfidentialClientApplication:
        """The MSAL app for the current credentials; rebuilt (fresh cache) if they changed."""
        credentials = (
            self._secrets.get(self._settings.app_id_secret_name),
            self._secrets.get(self._settings.app_secret_secret_name),
        )
        if self._app is None or credentials != self._app_credentials:
            self._app = self._build_application(*credentials)
            self._app_credentials = credentials
        return self._app

    def _build_application(self, client_id: str, client_secret: str) -> msal.ConfidentialClientApplication:
        import msal

        settings = self._settings
        # Instance discovery asks login.microsoftonline.com about the authority; off for other hosts
        # (sovereign clouds MSAL does not know, a local sandbox) so the configured host is used as is.
        discovery = None if settings.authority_is_known_microsoft_cloud else False
        try:
            return msal.ConfidentialClientApplication(
                client_id,
                client_credential=client_secret,
                authority=settings.authority,
                instance_discovery=discovery,
                http_client=self._http_client,
                timeout=MSAL_HTTP_TIMEOUT_SECONDS,
                token_cache=msal.TokenCache(),
            )
        except ValueError:
            raise CredentialsUnavailable(
                f"Entra ID authority {settings.authority} could not be discovered "
                "(check AZURE_AUTHORITY_HOST and PARTNER_TENANT_ID)"
            ) from None
        except Exception as error:
            raise CredentialsUnavailable(f"Entra ID could not be reached ({type(error).__name__})") from None


def _token_error(result: dict[str, Any], settings: Settings) -> Exception:
    """Turn an MSAL error result into a specific, safe error (AADSTS code, never the token)."""
    error = str(result.get("error") or "unknown_error")
    codes = result.get("error_codes") or []
    aadsts = f" (AADSTS{codes[0]})" if codes else ""
    if error == "invalid_grant":
        return ReconsentRequired(
            f"Entra ID refused the refresh token in Key Vault secret '{settings.refresh_token_secret_name}'"
            f"{aadsts}: it expired, was revoked, or consent was withdrawn. An admin agent must repeat the "
            "secure application model consent and store the new refresh token in that secret."
        )
    if error in {"invalid_client", "unauthorized_client"}:
        return CredentialsUnavailable(
            f"Entra ID refused the partner app's credentials{aadsts}: check Key Vault secrets "
            f"'{settings.app_id_secret_name}' and '{settings.app_secret_secret_name}'"
        )
    return CredentialsUnavailable(f"Entra ID did not issue a token: {error}{aadsts}")

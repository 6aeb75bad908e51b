"""Hand-made mutants of the modules that carry the exactly-once and SSRF rules.

Each is a small, realistic bug (the kind a refactor or a hurried fix introduces): the file, the
exact original snippet (it must occur exactly once, so a mutant never silently stops applying
after the code changes: the runner reports it as "stale" and the slow test fails), its
replacement, the rule it breaks, and the tests that must catch it. Mutants 1-5 are the five an
outside mutation run found that the suite let through (issue 13). The block headed
"campaign routes, cancel/retry, CLI" holds survivors of the second outside run (issue 22).
"""

from __future__ import annotations

from dataclasses import dataclass

HTTP = "tests/test_upgrade_http.py"
REQUESTS = "tests/test_requests.py"
WEBHOOKS = "tests/test_webhooks.py"
TABLES = "tests/test_behaviour_tables.py"
BUG_TESTS = (
    "tests/test_chaos.py::test_bug_a_unresolved_ambiguous_create_is_never_resent_blind",
    "tests/test_chaos.py::test_bug_b_request_is_not_failed_while_its_upgrade_exists",
    "tests/test_chaos.py::test_bug_c_upgrade_in_place_is_not_rejected_on_a_transient_eligibility_error",
)

CLIENT = "shared/partner_center/client.py"
EXACTLY_ONCE = "shared/partner_center/exactly_once.py"
RETRY_POLICY = "shared/partner_center/retry_policy.py"
PROCESSOR = "shared/upgrade_requests/processor.py"
INTAKE = "shared/upgrade_requests/intake.py"
STORE = "shared/upgrade_requests/store/moves.py"
LISTING = "shared/upgrade_requests/store/listing.py"
RETENTION = "shared/upgrade_requests/store/retention.py"
STORE_PINS = "tests/test_store_pins.py"
STORE_RACES = "tests/test_store_races.py"
OURS_LOCK = (
    "        ours = lock is not None and lock.request_id == record.request_id and lock_pk(record.customer_id) == pk\n"
)
CALLBACK_URLS = "shared/webhooks/callback_urls.py"
CAMPAIGN_ROUTES = "shared/api/campaign_routes.py"
CAMPAIGN = "shared/upgrade_requests/campaign.py"
CLI_EXIT_CODES = "shared/cli/exit_codes.py"
CLI_MAIN = "shared/cli/__main__.py"
CLI_CAMPAIGN = "shared/cli/campaign.py"
CAMPAIGN_TESTS = "tests/test_campaign.py"
CLI_TESTS = "tests/test_cli.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    rule: str
    tests: tuple[str, ...]


MUTANTS: tuple[Mutant, ...] = (
    # --- the five the outside run found -----------------------------------------------------
    Mutant(
        "upgrade-exists-code-dropped",
        CLIENT,
        "if code in UPGRADE_EXISTS_CODES or status == 409:",
        "if status == 409:",
        "an 'upgrade exists' code on a 400 (900110 completed) is a conflict to resolve, not a final rejection",
        (TABLES, HTTP, *BUG_TESTS),
    ),
    Mutant(
        "900108-not-a-not-eligible-code",
        CLIENT,
        '"900105", "900107", "900108", "900119"',
        '"900105", "900107", "900119"',
        "403/900108 (no Azure subscription) means not eligible, not access denied",
        (TABLES, HTTP),
    ),
    Mutant(
        "ipv4-mapped-unwrap-deleted",
        CALLBACK_URLS,
        "    if ip.ipv4_mapped is not None:\n        return ip.ipv4_mapped\n",
        "",
        "::ffff:100.64.0.1 and ::ffff:224.0.0.1 are judged as the IPv4 addresses they carry",
        (WEBHOOKS,),
    ),
    Mutant(
        "inline-retry-after-threshold-x10",
        RETRY_POLICY,
        "longest = self.retry_after_max if left is None else min(self.retry_after_max, left / 2)",
        "longest = self.retry_after_max * 10 if left is None else min(self.retry_after_max * 10, left / 2)",
        "a Retry-After past the inline maximum is handed back at once, not waited for",
        (TABLES, HTTP),
    ),
    Mutant(
        "fresh-request-id-on-401-resend",
        CLIENT,
        "response = self._send(path, body, context, self._token(force_refresh=True))",
        "response = self._send(path, body, context.next_operation(), self._token(force_refresh=True))",
        "the resend after a 401 is the same operation: same MS-RequestId",
        (HTTP,),
    ),
    # --- Partner Center client: what is ambiguous, what is final ------------------------------
    Mutant(
        "504-not-ambiguous",
        CLIENT,
        "if response.status_code in (500, 502, 504):",
        "if response.status_code in (500, 502):",
        "a 504 on create may have created the upgrade: resolve before any resend",
        (HTTP,),
    ),
    Mutant(
        "every-connection-error-never-sent",
        CLIENT,
        "return isinstance(error, requests.ConnectionError) and isinstance(reason, "
        "(NewConnectionError, ConnectTimeoutError))",
        "return isinstance(error, requests.ConnectionError)",
        "a reset after sending is ambiguous, not 'Partner Center saw nothing'",
        (HTTP,),
    ),
    Mutant(
        "throttling-after-codes",
        CLIENT,
        "    if status in (429, 503):\n        retry_after = _retry_after_seconds(response)",
        "    if status in (429,):\n        retry_after = _retry_after_seconds(response)",
        "503 is throttling (retry later with its Retry-After), not an upstream failure",
        (TABLES, HTTP),
    ),
    # --- exactly-once rules -------------------------------------------------------------------
    Mutant(
        "resend-with-fresh-request-id",
        EXACTLY_ONCE,
        "        try:  # same context, same MS-RequestId: Partner Center deduplicates it\n"
        "            upgrade_id = self._pc.create_upgrade(target.customer_id, target.product_family, context)",
        "        try:  # same context, same MS-RequestId: Partner Center deduplicates it\n"
        "            upgrade_id = self._pc.create_upgrade(\n"
        "                target.customer_id, target.product_family, context.next_operation()\n"
        "            )",
        "the resend after an ambiguous create carries the first call's MS-RequestId",
        (HTTP,),
    ),
    Mutant(
        "resend-when-not-eligible",
        EXACTLY_ONCE,
        "        if not eligibility.is_eligible:\n            raise unknown\n",
        "",
        "after an ambiguous create, 'not eligible' without an upgrade id is unknown: no resend",
        (HTTP,),
    ),
    Mutant(
        "in-place-upgrade-needs-eligible",
        EXACTLY_ONCE,
        "        if eligibility.upgrade_id:\n"
        '            self._log_submitted(target, context, eligibility.upgrade_id, "resolved")',
        "        if eligibility.upgrade_id and eligibility.is_eligible:\n"
        '            self._log_submitted(target, context, eligibility.upgrade_id, "resolved")',
        "an upgrade id in eligibility resolves an ambiguous create, whatever isEligible says",
        (HTTP,),
    ),
    Mutant(
        "conflict-without-id-is-final",
        EXACTLY_ONCE,
        "            if isinstance(refusal, UpstreamConflict):",
        "            if isinstance(refusal, UpstreamError):",
        "an upgrade in place whose id could not be read is retried later, never rejected",
        (HTTP, *BUG_TESTS),
    ),
    Mutant(
        "final-state-case-sensitive",
        EXACTLY_ONCE,
        'value = (upgrade_status or "").strip().casefold()',
        'value = (upgrade_status or "").strip()',
        "Partner Center's 'Completed' is final",
        (TABLES, REQUESTS),
    ),
    Mutant(
        "cancelled-not-final",
        EXACTLY_ONCE,
        'FAILURE_STATUSES = frozenset({"failed", "failure", "cancelled", "canceled", "error"})',
        'FAILURE_STATUSES = frozenset({"failed", "failure", "error"})',
        "a cancelled upgrade is final (failed): polling it forever holds the customer's lock",
        (TABLES,),
    ),
    # --- the processor ------------------------------------------------------------------------
    Mutant(
        "claim-leaves-pending",
        PROCESSOR,
        "        if record.state == PENDING:\n"
        "            record = record.evolve(state=SUBMITTING, create_may_have_been_sent=True)\n",
        "",
        "a claimed request is 'submitting': a crash after the create is resolved, not resent blind",
        (REQUESTS,),
    ),
    Mutant(
        "submitting-gives-up",
        PROCESSOR,
        "if attempts >= self.policy.max_attempts and state != SUBMITTING:",
        "if attempts >= self.policy.max_attempts:",
        "a request whose create may have landed is never failed (bug B)",
        (REQUESTS, *BUG_TESTS),
    ),
    Mutant(
        "unknown-outcome-back-to-pending",
        PROCESSOR,
        "            return self._retry_later(record, error, attempts, SUBMITTING)",
        "            return self._retry_later(record, error, attempts, PENDING)",
        "an unknown create outcome stays 'submitting' so the next worker resolves first (bug A)",
        (HTTP, *BUG_TESTS),
    ),
    Mutant(
        "throttled-poll-ignores-retry-after",
        PROCESSOR,
        "        delay = max(self.policy.poll_interval_seconds, error.retry_after or 0)",
        "        delay = self.policy.poll_interval_seconds",
        "a throttled status poll waits as long as Partner Center asked",
        (REQUESTS,),
    ),
    Mutant(
        "final-keeps-the-lock",
        STORE,
        OURS_LOCK,
        "        ours = False\n",
        "a final request releases the customer's lock",
        (REQUESTS,),
    ),
    # --- the store's moves, lists and retention (issue 22 survivors; issue 18 races) ------------
    Mutant(
        "move-releases-any-lock",
        STORE,
        OURS_LOCK,
        "        ours = lock is not None and lock_pk(record.customer_id) == pk\n",
        "a move releases the customer's lock only if it names the request moved",
        (STORE_PINS,),
    ),
    Mutant(
        "final-copy-over-a-newer-revision",
        STORE,
        "                if revision_of(existing) < revision:",
        "                if revision_of(existing) != revision:",
        "a final copy is written only over an older revision (a stale repair never rolls one back)",
        (STORE_RACES,),
    ),
    Mutant(
        "customer-list-shows-both-copies",
        LISTING,
        '            return [from_entity(entity) for entity in entities if entity["RowKey"] not in active]',
        "            return [from_entity(entity) for entity in entities]",
        "a list by customer holds each request once, as GET returns it",
        (STORE_RACES,),
    ),
    Mutant(
        "stale-list-entry-listed",
        LISTING,
        "            elif stored.record.state == source.state:",
        "            elif stored.record.state:",
        "a list by state shows a request only under the state it is in",
        (STORE_PINS,),
    ),
    Mutant(
        "token-under-other-filters",
        LISTING,
        '    if body.get("v") != TOKEN_VERSION or body.get("q") != selection.fingerprint():',
        '    if body.get("v") != TOKEN_VERSION:',
        "a continuation token continues only the listing whose filters made it",
        (STORE_PINS,),
    ),
    Mutant(
        "full-retention-batch-rests",
        RETENTION,
        "        if at_most_every is not None and caught_up:",
        "        if at_most_every is not None:",
        "a retention run that stopped at its batch lets the next run go on at once",
        (STORE_PINS,),
    ),
    Mutant(
        "retention-cutoff-a-day-late",
        RETENTION,
        "        if (record.finished_at or record.updated_at) >= cutoff or",
        "        if (record.finished_at or record.updated_at) >= cutoff + timedelta(days=1) or",
        "retention deletes exactly what was created and finished before the cutoff, not a day early",
        (STORE_PINS,),
    ),
    Mutant(
        "retention-keeps-the-key",
        RETENTION,
        "        if record.idempotency_key_hash:\n",
        "        if False:\n",
        "an idempotency key lives exactly as long as its request",
        (STORE_RACES,),
    ),
    Mutant(
        "retention-ignores-pending-callbacks",
        RETENTION,
        "        if (record.finished_at or record.updated_at) >= cutoff or record.callback_state == CALLBACK_PENDING:",
        "        if (record.finished_at or record.updated_at) >= cutoff:",
        "retention never deletes a request whose callback is still pending",
        (STORE_RACES,),
    ),
    Mutant(
        "retention-by-creation-alone",
        RETENTION,
        "        if (record.finished_at or record.updated_at) >= cutoff or record.callback_state == CALLBACK_PENDING:",
        "        if record.callback_state == CALLBACK_PENDING:",
        "a request retried (finished again) after the cutoff is kept",
        (STORE_RACES,),
    ),
    # --- intake -------------------------------------------------------------------------------
    Mutant(
        "idempotency-key-ignores-body",
        INTAKE,
        "        if pointer.fingerprint != fingerprint:",
        "        if pointer.fingerprint != fingerprint and False:",
        "an Idempotency-Key replayed with another body is refused (422)",
        (REQUESTS,),
    ),
    Mutant(
        "final-holder-keeps-lock",
        INTAKE,
        "        if holder is not None and not holder.record.is_final:",
        "        if holder is not None:",
        "a lock left by a final request is stale: a new request is accepted",
        (REQUESTS,),
    ),
    Mutant(
        "inline-request-stored-pending",
        INTAKE,
        "                state=PENDING if queue else SUBMITTING,",
        "                state=PENDING,",
        "an inline request is stored 'submitting' under a lease before the create is sent",
        (REQUESTS, HTTP),
    ),
    # --- the SSRF guard -----------------------------------------------------------------------
    Mutant(
        "multicast-allowed",
        CALLBACK_URLS,
        "    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private or ip.is_unspecified)",
        "    return ip.is_global and not (ip.is_reserved or ip.is_private or ip.is_unspecified)",
        "multicast addresses never receive callbacks",
        (WEBHOOKS,),
    ),
    Mutant(
        "first-address-only",
        CALLBACK_URLS,
        "        for address in addresses:",
        "        for address in addresses[:1]:",
        "every address a host resolves to must be public (DNS rebinding)",
        (WEBHOOKS,),
    ),
    Mutant(
        "http-allowed-in-production",
        CALLBACK_URLS,
        'allowed_schemes = ("https", "http") if allow_private_networks else ("https",)',
        'allowed_schemes = ("https", "http")',
        "callbacks use https unless private networks are allowed (local development)",
        (WEBHOOKS,),
    ),
    Mutant(
        "user-info-allowed",
        CALLBACK_URLS,
        'if "@" in parts.netloc or "%" in parts.netloc or parts.fragment or "#" in url:',
        'if "%" in parts.netloc or parts.fragment or "#" in url:',
        "no credentials in a callback URL",
        (WEBHOOKS,),
    ),
    # signing keys, caller sign-in, deadlines ---------------------------------------------------
    # (issue 22's survivors in these modules, and the bounded waits of issue 18)
    Mutant(
        "signing-keys-max-age-refresh-dropped",
        "shared/api/signing_keys.py",
        "        if self._loaded_at is None or now - self._loaded_at >= self._max_age:",
        "        if self._loaded_at is None:",
        "the key set is re-read after its max age: a key Entra withdrew stops being accepted",
        ("tests/test_caller_auth.py::test_a_withdrawn_key_is_refused_once_the_set_is_older_than_its_max_age",),
    ),
    Mutant(
        "signing-keys-http-jwks-uri-accepted",
        "shared/api/signing_keys.py",
        'urlsplit(jwks_uri).scheme != "https"',
        'urlsplit(jwks_uri).scheme not in ("https", "http")',
        "signing keys are read over https only",
        ("tests/test_caller_auth.py::test_a_key_set_at_a_plain_http_jwks_uri_is_never_read",),
    ),
    Mutant(
        "signing-keys-enc-keys-accepted",
        "shared/api/signing_keys.py",
        ' or entry.get("use", "sig") != "sig":',
        ":",
        "an encryption key (use: enc) is not a signing key",
        ("tests/test_caller_auth.py::test_an_encryption_key_is_not_a_signing_key",),
    ),
    Mutant(
        "signing-keys-refresh-stamped-only-on-success",
        "shared/api/signing_keys.py",
        "        self._attempted_at = started",
        "        self._attempted_at = self._loaded_at",
        "a failed refresh counts for the throttle: an Entra outage is asked once a minute, not per request",
        ("tests/test_caller_auth.py::test_an_entra_outage_is_asked_once_a_minute_not_on_every_request",),
    ),
    Mutant(
        "signing-keys-known-kid-waits-for-the-refresh",
        "shared/api/signing_keys.py",
        "        if known is not None:\n            return known  # a known kid never waits on the network\n",
        "",
        "a known kid never waits for a refresh (one made-up kid must not stall every caller)",
        ("tests/test_bounded_waits.py::test_an_unknown_kid_refresh_never_makes_a_known_kid_wait",),
    ),
    Mutant(
        "signing-keys-no-single-flight",
        "shared/api/signing_keys.py",
        "            flight = self._flight\n",
        "            flight = None\n",
        "callers arriving during a refresh wait for it (one read), not refused or reading again",
        ("tests/test_bounded_waits.py::test_cold_callers_arriving_together_share_one_key_set_read",),
    ),
    Mutant(
        "signing-keys-plain-session",
        "shared/api/caller_auth.py",
        "self._session = session or deadline_session(SIGNING_KEYS_SECONDS)",
        'self._session = session or __import__("requests").Session()',
        "the key fetch is held to its deadline by the watchdog: a trickling Entra is cut",
        ("tests/test_bounded_waits.py::test_a_key_set_fetch_is_bounded_by_the_answers_deadline",),
    ),
    Mutant(
        "caller-auth-rs256-precheck-removed",
        "shared/api/caller_auth.py",
        '        if header.get("alg") != "RS256":\n'
        '            raise _refuse("Only RS256-signed tokens are accepted")\n',
        "",
        "a token not signed RS256 is refused by name before any key is fetched",
        ("tests/test_caller_auth.py::test_a_token_not_signed_rs256_is_refused_by_name_before_any_key_is_read",),
    ),
    Mutant(
        "caller-auth-unknown-mode-is-a-function-key",
        "shared/api/caller_auth.py",
        "    if settings.mode == FUNCTION_KEY:",
        "    if settings.mode != ENTRA:",
        "an unknown CALLER_AUTH mode fails closed, never open",
        ("tests/test_caller_auth.py::test_an_unknown_caller_auth_mode_fails_closed_at_the_authentication_layer",),
    ),
    Mutant(
        "caller-auth-uri-audience-from-any-tenant",
        "shared/api/caller_auth.py",
        "audience=list(self.settings.audiences_for(tenant)),",
        "audience=list(self.settings.audiences),",
        "an Application ID URI audience counts only for the registration's own tenant",
        ("tests/test_caller_auth.py::test_an_application_id_uri_audience_counts_only_in_the_registrations_own_tenant",),
    ),
    Mutant(
        "deadlines-pooled-connection-stays-watched",
        "shared/deadlines.py",
        "                _release_connection(conn)\n",
        "                pass\n",
        "a connection back in its pool leaves the watch: a late watchdog never cuts the next call",
        ("tests/test_deadlines.py::test_a_watch_never_shuts_a_connection_that_went_back_to_the_pool",),
    ),
    Mutant(
        "token-lock-waits-without-deadline",
        "shared/partner_center/tokens.py",
        '        with held(self._lock, "the Partner Center token"):',
        "        with self._lock:",
        "an inline answer waits for the token lock no longer than its deadline",
        ("tests/test_bounded_waits.py::test_an_inline_post_behind_a_slow_token_chain_answers_within_its_deadline",),
    ),
    Mutant(
        "runtime-build-lock-without-deadline",
        "shared/runtime.py",
        """        with held(_lock, "the app's clients to be built"):""",
        "        with _lock:",
        "a request waits for another thread building the app's clients no longer than its deadline",
        ("tests/test_bounded_waits.py::test_a_request_waits_for_the_apps_clients_no_longer_than_its_deadline",),
    ),
    Mutant(
        "callback-dns-unbounded",
        CALLBACK_URLS,
        "        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)",
        "        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)",
        "a callback host's DNS lookup waits no longer than the deadline",
        ("tests/test_bounded_waits.py::test_a_callback_hosts_dns_lookup_is_bounded_by_the_deadline",),
    ),
    # campaign routes, cancel/retry, CLI
    Mutant(
        "top-maximum-refused",
        CAMPAIGN_ROUTES,
        "not 1 <= int(value) <= MAX_PAGE",
        "not 1 <= int(value) < MAX_PAGE",
        "top=500, the documented maximum page, is accepted",
        (CAMPAIGN_TESTS,),
    ),
    Mutant(
        "empty-creation-window-accepted",
        CAMPAIGN_ROUTES,
        "if created_from and created_to and created_to <= created_from:",
        "if created_from and created_to and created_to < created_from:",
        "createdTo is exclusive: createdTo == createdFrom is an empty window, refused (400)",
        (CAMPAIGN_TESTS,),
    ),
    Mutant(
        "function-key-code-kept-as-a-filter",
        CAMPAIGN_ROUTES,
        '    query.pop("code", None)  # the function key, when sent in the query\n',
        "",
        "a function key sent as ?code= is not an unknown list/summary parameter",
        (CAMPAIGN_TESTS,),
    ),
    Mutant(
        "possible-create-read-from-the-flag-only",
        CAMPAIGN,
        "return record.create_may_have_been_sent or record.attempts > 0 or bool(record.upgrade_id)",
        "return record.create_may_have_been_sent",
        "attempts without the flag (a record older than it) mean a create may have been sent: no cancel",
        (CAMPAIGN_TESTS,),
    ),
    Mutant(
        "batch-severity-not-yet-before-refused",
        CLI_EXIT_CODES,
        "SEVERITY = (OPERATOR, UNEXPECTED, USAGE, REFUSED, NOT_YET, OK)",
        "SEVERITY = (OPERATOR, UNEXPECTED, USAGE, NOT_YET, REFUSED, OK)",
        "a batch exits with the most severe row in --help's order 5, 1, 2, 3, 4, 0",
        (CLI_TESTS,),
    ),
    Mutant(
        "eligibility-with-upgrade-id-exits-0",
        CLI_MAIN,
        "return exit_codes.OK if eligibility.is_eligible and not eligibility.upgrade_id else exit_codes.REFUSED",
        "return exit_codes.OK if eligibility.is_eligible else exit_codes.REFUSED",
        "eligibility naming an upgrade in place exits 3, whatever isEligible says",
        (CLI_TESTS,),
    ),
    Mutant(
        "list-without-all-reads-every-page",
        CLI_CAMPAIGN,
        "if not args.all or token is None:",
        "if token is None:",
        "list without --all prints one page and its continuation token",
        (CLI_TESTS,),
    ),
)

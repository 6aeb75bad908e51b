"""Span and metric attribute names an operator filters on (Application Insights: customDimensions).

Customer ids and our ids are allowed; a token, secret or refresh token never is. Standard
OpenTelemetry names (`http.response.status_code`, `url.full`) come from the instrumentations.
"""

REQUEST_ID = "upgrade.request_id"  # our request id (the status URL's)
CUSTOMER_ID = "upgrade.customer_id"
PRODUCT_FAMILY = "upgrade.product_family"
CAMPAIGN_ID = "upgrade.campaign_id"  # only where a request belongs to one
STATE = "upgrade.state"  # the request's state before a step
STATE_AFTER = "upgrade.state_after"
OUTCOME = "upgrade.outcome"  # accepted / submitted / completed / failed / rejected
CORRELATION_ID = "ms.correlation_id"  # MS-CorrelationId: the caller's, or the one the app made
PC_OPERATION = "partner_center.operation"  # create / eligibility / status
PC_REQUEST_ID = "partner_center.request_id"  # MS-RequestId, the idempotency key of the operation
PC_STATUS = "partner_center.status_code"
PC_ERROR_CODE = "partner_center.error_code"
PC_RETRIES = "partner_center.retry_attempts"  # resends inside this one call (429/503, connects)
PC_RETRY_AFTER = "partner_center.retry_after_seconds"
PC_THROTTLED = "partner_center.throttled_responses"  # 429s answered to this call, retries included
TIMER_DUE = "timer.due"
TIMER_PENDING = "timer.pending_due"
TIMER_OLDEST_PENDING_SECONDS = "timer.oldest_pending_seconds"

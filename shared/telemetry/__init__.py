"""Telemetry through OpenTelemetry: spans and metrics an operator filters on in Application Insights.

- `setup`: turn it on. In Azure, `configure()` sets up the Azure Monitor distro
  (`azure-monitor-opentelemetry`) as Microsoft documents it for Python function apps, exporting to
  the connection string's Application Insights with the managed identity; tests and the bench call
  `activate()` with their own (in-memory) providers. Without either, telemetry is off: no
  OpenTelemetry module is even imported and every helper below is a no-op, so local runs and tests
  send nothing anywhere and a cold start pays nothing for it.
- `spans`: one span per inbound request (the function) continuing the caller's `traceparent`, one per
  step of an upgrade request, one per timer run.
- `outbound`: the attributes and metrics of each Partner Center call, added by hooks on the
  `requests` instrumentation (the call itself is traced by the instrumentation; Key Vault and Table
  Storage by azure-core's tracing, Entra by `requests` under MSAL).
- `metrics`: request outcomes, Partner Center 429s and latency, the pending backlog, timer runs.

Names of attributes are in `attributes`; secrets and tokens are never an attribute (a test scans
every span and metric of a run with the log tests' scanner).
"""

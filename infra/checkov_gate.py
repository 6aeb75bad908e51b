"""`make infra-check`: checkov over infra/*.bicep that fails on a file it could not parse.

checkov exits 0 when a file does not parse ("Parsing errors: 1"), so a template it cannot read is
silently never scanned. This gate runs it once with a JSON report beside the usual output and
fails on any failed check or any parsing error. Run with the infra venv's Python (checkov lives
there, requirements-infra.txt); stdlib only.

One module is left out of checkov on purpose, with its reason (`NOT_FOR_CHECKOV`): checkov's Bicep
parser cannot read the Microsoft Graph extension (`extension microsoftGraphV1`) and checkov has no
check for `Microsoft.Graph/*` resources anyway. The project's own rules check that module's
resources instead (tests/test_infra.py: single-tenant sign-in, app role assignment required, both
app roles for users and applications, the declared extension), on every `make test`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NOT_FOR_CHECKOV = {
    "infra/modules/callerapp.bicep": "Graph extension: checkov cannot parse it; tests/test_infra.py checks it",
}


def problems(report: dict[str, Any] | list[dict[str, Any]]) -> list[str]:
    """What makes the check fail, from checkov's JSON report (one framework: an object, else a list)."""
    found = []
    for part in report if isinstance(report, list) else [report]:
        summary = part.get("summary", {})
        if summary.get("failed"):
            found.append(f"{summary['failed']} failed check(s) in {part.get('check_type', 'bicep')}")
        if summary.get("parsing_errors"):
            found.append(
                f"{summary['parsing_errors']} file(s) checkov could not parse, so never scanned "
                "(run checkov without --quiet to see `Error parsing file ...`): make it parsable, or check it "
                "with the project's own rules and list it in infra/checkov_gate.py NOT_FOR_CHECKOV with the reason"
            )
    if not found and not any(part.get("summary", {}).get("resource_count") for part in _parts(report)):
        found.append("checkov scanned no resource: the check would prove nothing")
    return found


def _parts(report: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return report if isinstance(report, list) else [report]


def main(argv: list[str]) -> int:
    checkov, directory, extra = argv[0], argv[1] if len(argv) > 1 else "infra", argv[2:]
    skips = [arg for path in NOT_FOR_CHECKOV for arg in ("--skip-path", path.replace(".", r"\."))]
    for path, reason in NOT_FOR_CHECKOV.items():
        print(f"not scanned by checkov: {path} ({reason})")
    with tempfile.TemporaryDirectory() as temporary:
        report_file = Path(temporary) / "checkov.json"
        command = [checkov, "--directory", directory, "--framework", "bicep", "--quiet", "--compact"]
        command += [
            "--skip-download",
            *skips,
            *extra,  # e.g. --skip-check for a check checkov itself cannot evaluate (see the Makefile)
            "-o",
            "cli",
            "-o",
            "json",
            "--output-file-path",
            f"console,{report_file}",
        ]
        ran = subprocess.run(command, check=False)  # noqa: S603 - checkov from the infra venv, fixed arguments
        if not report_file.exists():
            print(f"infra-check: checkov wrote no report (exit {ran.returncode})", file=sys.stderr)
            return ran.returncode or 1
        found = problems(json.loads(report_file.read_text(encoding="utf-8")))
    for problem in found:
        print(f"infra-check: {problem}", file=sys.stderr)
    return 1 if found or ran.returncode else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

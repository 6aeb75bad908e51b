"""Scenario 4: cold import of function_app.py vs a bare azure-functions app with one HTTP route.

Each sample is a fresh interpreter (`python -c "...; import function_app; ..."`, cwd = the app's
directory) that prints how long the import took; ours and the bare app alternate so drift hits
both alike, after untimed runs that leave the bytecode caches in place (as a deployed app has
them). `-X importtime` then shows where the import time goes, summed by package, and which
modules our app loads that the bare one does not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .harness import log_progress, ms, ratio
from .isolation import REPO_ROOT

BARE_APP = """import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")
"""

TIMED_IMPORT = "import time; t=time.perf_counter(); import function_app; print(time.perf_counter()-t)"
LOADED_MODULES = (
    "import sys, json; before=set(sys.modules); import function_app; print(json.dumps(sorted(set(sys.modules)-before)))"
)
TARGET_RATIO = 1.5


def _python(code: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    return subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60
    )


def _sample(cwd: Path) -> tuple[float, float]:
    """(import seconds as the child measured it, whole child process wall seconds)."""
    started = time.perf_counter()
    result = _python(TIMED_IMPORT, cwd)
    return float(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def _package(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("azure", "shared") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def _import_profile(cwd: Path, runs: int) -> dict[str, Any]:
    """-X importtime, median over runs: self time per package, and function_app's direct imports."""
    per_package: dict[str, list[float]] = defaultdict(list)
    direct: dict[str, list[float]] = defaultdict(list)
    total: list[float] = []
    for _ in range(runs):
        lines = _python("import function_app", cwd, "-X", "importtime").stderr.splitlines()
        sums: dict[str, float] = defaultdict(float)
        run_direct: dict[str, float] = {}
        subtree: list[tuple[int, str, float, float]] = []  # children are printed before parents
        for line in lines:
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
            depth = (len(name) - len(name.lstrip()) - 1) // 2  # 0 = imported by the -c code itself
            module = name.strip()
            if depth > 0:
                subtree.append((depth, module, int(self_us) / 1e6, int(cumulative_us) / 1e6))
                continue
            if module == "function_app":
                total.append(int(cumulative_us) / 1e6)
                sums["function_app"] += int(self_us) / 1e6
                for sub_depth, sub_module, self_seconds, cumulative_seconds in subtree:
                    sums[_package(sub_module)] += self_seconds
                    if sub_depth == 1:
                        run_direct[sub_module] = cumulative_seconds
            subtree = []
        for package, seconds in sums.items():
            per_package[package].append(seconds)
        for module, seconds in run_direct.items():
            direct[module].append(seconds)
    by_package = sorted(
        ((package, statistics.median(values)) for package, values in per_package.items()), key=lambda item: -item[1]
    )
    by_direct = sorted(((module, statistics.median(v)) for module, v in direct.items()), key=lambda item: -item[1])
    own = sum(seconds for package, seconds in by_package if package.startswith("shared") or package == "function_app")
    return {
        "importSeconds": round(statistics.median(total), 4) if total else None,
        "ownModulesSelfMs": ms(own),
        "selfMsByPackage": {package: ms(seconds) for package, seconds in by_package[:20]},
        "directImportsCumulativeMs": {module: ms(seconds) for module, seconds in by_direct[:15]},
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
    runs, warmup = int(params["runs"]), int(params.get("warmup", 2))
    with tempfile.TemporaryDirectory(prefix="bench-bare-app-") as bare_dir:
        bare = Path(bare_dir)
        (bare / "function_app.py").write_text(BARE_APP, encoding="utf-8")
        apps = {"ours": REPO_ROOT, "bare": bare}
        log_progress(f"cold imports: {warmup} untimed + {runs} timed fresh interpreters per app")
        for _ in range(warmup):
            for cwd in apps.values():
                _sample(cwd)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
        for index in range(runs):
            names = list(apps) if index % 2 == 0 else list(reversed(apps))
            for name in names:
                samples[name].append(_sample(apps[name]))
        loaded = {name: set(json.loads(_python(LOADED_MODULES, cwd).stdout)) for name, cwd in apps.items()}
        log_progress("-X importtime of both apps")
        profiles = {name: _import_profile(cwd, 3) for name, cwd in apps.items()}

    def summary(values: list[tuple[float, float]]) -> dict[str, Any]:
        imports = [v[0] for v in values]
        processes = [v[1] for v in values]
        return {
            "medianMs": ms(statistics.median(imports)),
            "minMs": ms(min(imports)),
            "maxMs": ms(max(imports)),
            "processWallMedianMs": ms(statistics.median(processes)),
        }

    ours, bare_summary = summary(samples["ours"]), summary(samples["bare"])
    extra = sorted(loaded["ours"] - loaded["bare"])
    third_party_extra = sorted({_package(m) for m in extra if not m.startswith(("shared", "function_app", "_"))})
    import_ratio = ratio(ours["medianMs"], bare_summary["medianMs"])
    return {
        "runs": runs,
        "ours": ours,
        "bare": bare_summary,
        "ratio": import_ratio,
        "processWallRatio": ratio(ours["processWallMedianMs"], bare_summary["processWallMedianMs"]),
        "targetRatio": TARGET_RATIO,
        "targetMet": import_ratio <= TARGET_RATIO,
        "ownModulesSelfMs": profiles["ours"]["ownModulesSelfMs"],
        "extraModulesLoaded": len(extra),
        "extraPackagesNotShared": third_party_extra,
        "heavySdksLoaded": sorted(
            m
            for m in loaded["ours"]
            if m in ("requests", "urllib3", "msal", "azure.core", "azure.identity", "azure.data.tables")
            or m in ("azure.keyvault.secrets", "cryptography", "jwt")
        ),
        "importtime": profiles,
    }

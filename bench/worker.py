"""Runs one measurement in its own interpreter, so its peak RSS is its own.

`python -m bench.worker MODULE:FUNCTION PARAMS_JSON OUT_PATH`: calls `bench.MODULE.FUNCTION(params)`
and writes its result, plus peak RSS (this process; and Azurite's, once it has exited), to
OUT_PATH as JSON. SIGTERM unwinds normally, so the sandbox and Azurite are stopped on the way out.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import sys
import time
from typing import Any

from .harness import peak_rss_mib, stop_running_sandboxes


def _terminate(signum: int, frame: Any) -> None:
    stop_running_sandboxes()
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    target, params_json, out_path = argv
    signal.signal(signal.SIGTERM, _terminate)
    # Libraries' warnings would otherwise go to stderr via logging's last-resort handler.
    # (The runtime sets azure/urllib3 loggers to WARNING; e.g. urllib3's "Connection pool is full"
    # warnings are counted by bench.harness.ConnectionCounter instead of printed.)
    logging.basicConfig(level=logging.ERROR, format="worker %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.ERROR)
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(f"bench.{module_name}"), function_name)
    started = time.perf_counter()
    result: dict[str, Any] = function(json.loads(params_json))
    result["workerSeconds"] = round(time.perf_counter() - started, 2)
    result["loadAverageAtEnd"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine?
    result["peakRssMiB"] = peak_rss_mib()
    # Azurite (node), after it exited; an upper bound (ru_maxrss counts this process at its start)
    result["childrenPeakRssMiB"] = peak_rss_mib(resource.RUSAGE_CHILDREN)
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

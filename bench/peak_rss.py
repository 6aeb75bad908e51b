"""Runs a module in this interpreter and records this process's own peak RSS at exit.

`python -m bench.peak_rss OUT_PATH MODULE [ARGS...]`: runs `python -m MODULE ARGS...` in this
process and, at exit, writes the VmHWM of this process's own address space (MiB) to OUT_PATH.

Why not `wait4`'s `ru_maxrss`: on Linux a child's ru_maxrss also counts the address space it had
before `exec`, i.e. its parent's RSS at the fork (measured: a 413 MiB parent spawning
`python -c pass` gets 413 MiB back from wait4; the child's own VmHWM was 13 MiB). The bench worker
holds 100,000 loaded records when it starts the export, so wait4 reported the worker's size, not
the export's.
"""

from __future__ import annotations

import atexit
import runpy
import sys


def own_peak_rss_mib() -> float:
    """VmHWM of this process's current address space (the one exec created), in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> None:
    out_path, module, *args = argv

    def record() -> None:
        with open(out_path, "w", encoding="ascii") as out:
            out.write(str(own_peak_rss_mib()))

    atexit.register(record)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Which format a batch results file is written in: `--format`, else the `--output` extension.

An unknown extension is an error before any customer is touched (a `.txt` file used to be
written as CSV without a word).
"""

from __future__ import annotations

from pathlib import Path

OUTPUT_FORMATS = ("csv", "json")


def results_format(output: Path, requested: str | None) -> str:
    """The format to write `output` in; ValueError naming the choices for an unknown extension."""
    if requested:
        return requested
    extension = output.suffix.lower().lstrip(".")
    if extension in OUTPUT_FORMATS:
        return extension
    shown = f"extension .{extension}" if extension else "no extension"
    raise ValueError(f"--output {output}: {shown}; use a .csv or .json file name, or say --format csv|json")

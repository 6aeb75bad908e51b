"""How an error reads on the CLI's stderr: in the operator's words, each thing said once.

The HTTP layer shows an error's title and detail as separate members; joined on one line they can
repeat each other ("The request store (Azure Table Storage) is unavailable: The request store is
unavailable: ..."), and a caller-input title ("The request is not valid") means nothing when the
input was a file or a flag: the detail already names it."""

from __future__ import annotations

import re

from shared.errors import InvalidRequest, UpgradeError


def plural(count: int, noun: str) -> str:
    """`1 row`, `2 rows`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _plain(text: str) -> str:
    """The words of a phrase without its parenthetical remarks, for comparing two phrasings."""
    return " ".join(re.sub(r"\([^)]*\)", " ", text).lower().split())


def error_line(error: UpgradeError) -> str:
    """`error: ...` for stderr: the detail alone for bad input (it names the flag, file or line),
    else the title and what the detail adds to it."""
    if isinstance(error, InvalidRequest):
        return f"error: {error.detail}"
    head, separator, rest = error.detail.partition(": ")
    if separator and _plain(head) == _plain(error.title):
        return f"error: {error.title}: {rest}"
    if _plain(error.detail) == _plain(error.title):
        return f"error: {error.title}"
    return f"error: {error.title}: {error.detail}"

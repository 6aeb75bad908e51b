"""The docs describe the product as deployed: callers sign in with Microsoft Entra ID. A function
key (`x-functions-key`, `?code=`) may appear only where the text says it is about
`CALLER_AUTH=function-key` (issue 20: deploying.md's first upgrade, power-automate.md and
campaigns.md still sent function keys after the move to Entra sign-in).

"Where the text says so": the paragraph itself (a fenced block goes with the paragraph before it),
or the heading of its section or that section's first paragraph."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *ROOT.glob("*/README.md")])
FUNCTION_KEY = re.compile(r"x-functions-key|\?code=", re.I)
ABOUT_FUNCTION_KEYS = "CALLER_AUTH=function-key"
# Not a caller's credential, so not about CALLER_AUTH: the host's master key on its admin endpoint
# (runs a timer now, in any mode), and the OAuth authorization code of the consent sign-in.
NOT_CALLER_CREDENTIALS = (
    re.compile(r"x-functions-key: \$MASTER_KEY"),
    re.compile(r"http://localhost:8400/\?code="),
)


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, context, block) for each paragraph or fenced block; the context is the block itself,
    the paragraph before a fenced block, and its section's heading and first paragraph."""
    raw: list[tuple[int, str, list[str]]] = []  # (line, heading, lines)
    heading, current, fenced = "", [], False
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if not fenced and (line.startswith("#") or not line.strip() or line.startswith("```")):
            if current:
                raw.append((number - len(current), heading, current))
                current = []
            if line.startswith("#"):
                heading = line
                continue
        if line.startswith("```"):
            fenced = not fenced
        if line.strip() or fenced:
            current.append(line)
    found, intro, previous = [], {}, {}
    for line, heading, lines in raw:
        block = "\n".join(lines)
        intro.setdefault(heading, block)
        before = previous.get(heading, "") if block.startswith("```") else ""  # a fenced block's lead-in
        context = "\n".join((heading, intro[heading], before))
        found.append((line, context, block))
        previous[heading] = block
    return found


def stray_function_keys(path: Path) -> list[str]:
    stray = []
    for line, section, paragraph in blocks(path.read_text(encoding="utf-8")):
        shown = paragraph
        for allowed in NOT_CALLER_CREDENTIALS:
            shown = allowed.sub("", shown)
        if FUNCTION_KEY.search(shown) and ABOUT_FUNCTION_KEYS not in paragraph + section:
            stray.append(f"{path.relative_to(ROOT)}:{line}: {FUNCTION_KEY.search(shown).group(0)}")  # type: ignore[union-attr]
    return stray


def test_the_check_can_fail():
    sample = ROOT / "tests" / "_sample_doc.md"
    sample.write_text('# Deploy\n\nCall it:\n\n```bash\ncurl -H "x-functions-key: $KEY" $URL\n```\n')
    try:
        assert stray_function_keys(sample)
        sample.write_text('# With `CALLER_AUTH=function-key`\n\n```bash\ncurl -H "x-functions-key: $KEY" $URL\n```\n')
        assert not stray_function_keys(sample)
    finally:
        sample.unlink()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_show_function_keys_only_where_they_say_it_is_about_function_key_mode(path: Path):
    assert not stray_function_keys(path)

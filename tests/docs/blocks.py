"""The fenced examples of README.md and docs/**/*.md, with the marker that says how to test each.

Markdown is parsed with markdown-it-py (CommonMark), not with regular expressions: a
fence inside a list item, an indented fence or a fence inside an HTML comment is what a
Markdown renderer says it is. A marker is an HTML comment on the line(s) right before
the fence (invisible once rendered)::

    <!-- example: skip (needs a real OpenAI key) -->
    ```python
    ...

Kinds (see docs/testing.md, "Examples in the docs"):

- no marker: ``bash``/``sh``, ``python``, ``js`` and ``toml`` blocks run (the shell,
  pytest-examples, node, pixelgate's own settings loader); any other block needs one;
- ``skip (reason)``: not run here; the reason is required;
- ``output``: the answer of the previous block that ran (JSON: same shape; SSE: the
  same event names);
- ``output of `COMMAND```: run COMMAND; each line of the block appears in what it prints;
- ``request METHOD PATH``: the JSON block is a body that METHOD PATH accepts (2xx);
- ``response METHOD PATH [JSON body]``: the JSON block has the shape of that answer;
- ``synopsis``: a CLI synopsis; every command and flag exists (``--help``);
- ``run``: run an unlabeled block as a shell script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = {"bash": "shell", "sh": "shell", "python": "python", "js": "js", "toml": "toml"}
KINDS = frozenset({"skip", "output", "request", "response", "synopsis", "run"})
_MARKER = re.compile(r"<!--\s*example:\s*(?P<kind>\S+?)(?:\s+(?P<rest>.*?))?\s*-->", re.S)


class MarkerError(ValueError):
    """A marker the harness cannot read (unknown kind, a skip without its reason…)."""


@dataclass(frozen=True)
class Marker:
    """``<!-- example: KIND ARGS -->`` before a fence."""

    kind: str
    args: str = ""

    @classmethod
    def parse(cls, comment: str) -> Marker | None:
        """The marker in an HTML comment, or None when the comment is not one."""
        match = _MARKER.search(comment)
        if match is None:
            return None
        kind, rest = match["kind"], (match["rest"] or "").strip()
        if kind not in KINDS:
            raise MarkerError(f"unknown example kind {kind!r} (one of {sorted(KINDS)})")
        if kind == "skip" and not re.fullmatch(r"\(.+\)", rest, re.S):
            raise MarkerError("a skipped example says why: <!-- example: skip (reason) -->")
        if kind in ("request", "response") and not re.match(r"[A-Z]+ /\S*", rest):
            raise MarkerError(f"{kind} needs METHOD PATH, got {rest!r}")
        if kind in ("synopsis", "run") and rest:
            raise MarkerError(f"{kind} takes nothing, got {rest!r}")
        if kind == "output" and rest and not re.fullmatch(r"of `.+`", rest, re.S):
            raise MarkerError(f"output takes nothing or 'of `COMMAND`', got {rest!r}")
        return cls(kind, rest)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    marker: Marker | None

    @property
    def page(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        """What the harness does with it: a marker kind, or the language's default."""
        if self.marker is not None:
            return self.marker.kind
        return RUNNABLE.get(self.lang, "unmarked")

    @property
    def runs(self) -> bool:
        """Whether the block is executed (and so leaves an output for an ``output`` block)."""
        return self.kind in ("shell", "python", "js", "run")


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every ``*.md`` under docs/, recursively, in a stable order."""
    found = sorted((root / "docs").rglob("*.md"))
    # docs/migrate/ pages run, each against its own server configured as the page says,
    # in tests/acceptance/test_migration_guides.py (README.md there is an index)
    migrate = root / "docs" / "migrate"
    return [root / "README.md", *(p for p in found if migrate not in p.parents)]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, each with the marker right before it."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[Block] = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence" or token.map is None:
            continue
        start = token.map[0]
        lang = token.info.split()[0].lower() if token.info.strip() else ""
        found.append(Block(path, start + 1, lang, token.content, _marker_before(lines, start)))
    return found


def all_blocks(root: Path = ROOT) -> list[Block]:
    """Every block of every page."""
    return [block for page in pages(root) for block in blocks_of(page)]


def _marker_before(lines: list[str], fence: int) -> Marker | None:
    """The marker comment that ends on the line just above the fence (blank lines allowed)."""
    end = fence - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return None
    start = end
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    return Marker.parse("\n".join(lines[start : end + 1]))

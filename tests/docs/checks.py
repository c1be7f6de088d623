"""Pure helpers of the docs harness: placeholders, JSON shapes, SSE event names, synopses."""

from __future__ import annotations

import json
import re
from typing import Any

#: how the docs write the server, as a user on the server's own machine would type it
DOC_ORIGINS = ("http://127.0.0.1:8080", "http://localhost:8080", "localhost:8080")
#: "an elided value" in the docs' JSON
ELLIPSIS = "…"


def substitute(source: str, *, base_url: str, key: str) -> str:
    """The example as the harness runs it: its server and its key instead of the docs' ones."""
    for origin in DOC_ORIGINS:
        replacement = base_url if origin.startswith("http") else base_url.split("//", 1)[1]
        source = source.replace(origin, replacement)
    return source.replace('"pg_…"', json.dumps(key))


def shape_errors(documented: Any, actual: Any, where: str = "$") -> list[str]:
    """Where ``actual`` does not have the shape the docs show (an empty list when it has).

    A documented key must be present; keys the docs leave out are fine. ``"…"`` (as a key
    or a value) stands for anything; ``null`` in the docs allows any value, and any value
    in the docs allows ``null`` (a field shown filled may be empty in this answer). The
    first item of a documented list is compared with the first item of the actual one. A
    key that is data (a date, or any key of a ``by_…`` object) is compared with any entry.
    """
    if documented == ELLIPSIS or documented is None or actual is None:
        return []
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where}: the docs show an object, the answer has {type(actual).__name__}"]
        errors: list[str] = []
        for name, value in documented.items():
            if name == ELLIPSIS:
                continue
            if name not in actual and _is_map(where, name) and actual:
                # a sample entry of a map keyed by data (a day, a provider): any entry will do
                errors += shape_errors(value, next(iter(actual.values())), f"{where}.{name}")
            elif name not in actual:
                errors.append(f"{where}.{name}: in the docs, not in the answer")
            else:
                errors += shape_errors(value, actual[name], f"{where}.{name}")
        return errors
    if isinstance(documented, list):
        if not isinstance(actual, list):
            return [f"{where}: the docs show a list, the answer has {type(actual).__name__}"]
        if documented and actual:
            return shape_errors(documented[0], actual[0], f"{where}[0]")
        return []
    if isinstance(documented, bool) or isinstance(actual, bool):
        ok = isinstance(documented, bool) and isinstance(actual, bool)
    elif isinstance(documented, int | float):
        ok = isinstance(actual, int | float)
    else:
        ok = isinstance(actual, str)
    if ok:
        return []
    return [f"{where}: the docs show {documented!r}, the answer has {actual!r}"]


def _is_map(where: str, key: str) -> bool:
    """Whether a documented key is data rather than a field: ``by_day.2026-11-21``."""
    return bool(_DATE.fullmatch(key)) or where.rsplit(".", 1)[-1].startswith("by_")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def sse_event_names(text: str) -> list[str]:
    """The ``event:`` names of a server-sent event stream, in order."""
    lines = text.splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("event:")]


def sse_data(text: str) -> dict[str, list[Any]]:
    """Each event's ``data:`` JSON (when it is JSON), by event name."""
    found: dict[str, list[Any]] = {}
    name = "message"
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            try:
                data = json.loads(line.split(":", 1)[1])
            except json.JSONDecodeError:
                continue
            found.setdefault(name, []).append(data)
    return found


def synopsis_lines(text: str) -> list[tuple[list[str], list[str]]]:
    """``(command words, flags)`` of each ``pixelgate …`` line of a CLI synopsis.

    ``pixelgate accounts enable|disable NAME`` gives one entry per alternative; the
    command words are those before the first argument, option or bracket.
    """
    entries: list[tuple[list[str], list[str]]] = []
    for raw in text.splitlines():
        line = raw.split("  #", 1)[0].strip()
        if not line.startswith("pixelgate "):
            continue
        words = line.split()[1:]
        command: list[str] = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z|-]*", word):
                break
            command.append(word)
        flags = re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", line)
        alternatives: list[list[str]] = [[]]
        for word in command:
            alternatives = [[*a, option] for a in alternatives for option in word.split("|")]
        entries += [(words_, flags) for words_ in alternatives]
    return entries

"""The docs harness itself: it finds every block and marker, and its checks catch drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import Marker, MarkerError, all_blocks, blocks_of, pages
from tests.docs.checks import (
    shape_errors,
    sse_data,
    sse_event_names,
    substitute,
    synopsis_lines,
)


def test_every_page_under_docs_is_covered_recursively(tmp_path: Path) -> None:
    for folder in ("docs/ops", "docs/migrate"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "README.md").write_text("# r\n")
    (tmp_path / "docs" / "a.md").write_text("# a\n")
    (tmp_path / "docs" / "ops" / "b.md").write_text("# b\n")
    (tmp_path / "docs" / "migrate" / "c.md").write_text("# c\n")  # its own test runs it
    names = [p.relative_to(tmp_path).as_posix() for p in pages(tmp_path)]
    assert names == ["README.md", "docs/a.md", "docs/ops/b.md"]


def test_markers_are_read_before_fences_also_indented_ones(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n"
        "<!-- example: skip (needs a real OpenAI key) -->\n"
        "```python\nprint(1)\n```\n\n"
        "- item\n\n"
        "  <!-- example: output -->\n"
        "  ```json\n  {\"a\": 1}\n  ```\n\n"
        "```toml\nx = 1\n```\n"
    )
    first, second, third = blocks_of(page)
    assert (first.kind, first.line, first.marker) == (
        "skip", 4, Marker("skip", "(needs a real OpenAI key)")
    )
    assert (second.kind, second.source) == ("output", '{"a": 1}\n')
    assert (third.kind, third.marker) == ("toml", None)


@pytest.mark.parametrize(
    "comment",
    [
        "<!-- example: skip -->",
        "<!-- example: run-it -->",
        "<!-- example: skipp (typo) -->",
        "<!-- example: response /v1/account -->",
        "<!-- example: output of ls -->",
    ],
)
def test_a_marker_the_harness_cannot_read_is_an_error(comment: str) -> None:
    with pytest.raises(MarkerError):
        Marker.parse(comment)


def test_the_repository_pages_have_no_unreadable_marker() -> None:
    blocks = all_blocks()
    assert len(blocks) > 50
    assert {b.page for b in blocks} >= {"README.md", "docs/api.md", "docs/operations.md"}


def test_a_renamed_or_retyped_field_is_a_shape_error() -> None:
    documented = {"id": "gen_…", "cost": {"credits": 1, "usd": "0"}, "images": [{"url": "…"}]}
    same = {"id": "gen_1", "cost": {"credits": 3, "usd": None}, "images": [], "extra": 1}
    assert shape_errors(documented, same) == []
    renamed = {"id": "gen_1", "cost": {"credit": 1, "usd": "0"}, "images": [{"url": "x"}]}
    assert shape_errors(documented, renamed) == ["$.cost.credits: in the docs, not in the answer"]
    retyped = {"id": "gen_1", "cost": {"credits": "1", "usd": "0"}, "images": [{"href": "x"}]}
    assert shape_errors(documented, retyped) == [
        "$.cost.credits: the docs show 1, the answer has '1'",
        "$.images[0].url: in the docs, not in the answer",
    ]


def test_data_keys_of_maps_match_any_entry() -> None:
    documented = {"by_day": {"2026-11-21": {"usd": "0.31"}}, "by_provider": {"openai": {"n": 1}}}
    actual = {"by_day": {"2026-12-05": {"usd": "0"}}, "by_provider": {"fast": {"n": 2}}}
    assert shape_errors(documented, actual) == []
    assert shape_errors(documented, {"by_day": {"2026-12-05": {}}, "by_provider": {}}) == [
        "$.by_day.2026-11-21.usd: in the docs, not in the answer",
        "$.by_provider.openai: in the docs, not in the answer",
    ]


def test_sse_names_and_data() -> None:
    text = 'id: 1\nevent: queued\ndata: {"type": "queued"}\n\nevent: started\ndata: {…}\n'
    assert sse_event_names(text) == ["queued", "started"]
    assert sse_data(text) == {"queued": [{"type": "queued"}]}


def test_synopsis_lines_give_commands_and_flags() -> None:
    text = (
        "pixelgate serve [--host 127.0.0.1] [--no-worker]\n"
        "pixelgate keys create --account NAME [--admin]      # prints the key once\n"
        "pixelgate accounts enable|disable NAME   # enable: the way back\n"
        "pixelgate generate \"PROMPT\" [-n N] [-o FILE]\n"
    )
    assert synopsis_lines(text) == [
        (["serve"], ["--host", "--no-worker"]),
        (["keys", "create"], ["--account", "--admin"]),
        (["accounts", "enable"], []),
        (["accounts", "disable"], []),
        (["generate"], ["-n", "-o"]),
    ]


def test_placeholders_become_the_live_server_and_key() -> None:
    source = 'curl http://127.0.0.1:8080/v1 localhost:8080\nOpenAI(api_key="pg_…")'
    assert substitute(source, base_url="http://127.0.0.1:4242", key="pg_x") == (
        'curl http://127.0.0.1:4242/v1 127.0.0.1:4242\nOpenAI(api_key="pg_x")'
    )

"""Prompt templates, narrative context, cache keys and batch files: pure functions."""

from __future__ import annotations

import pytest

from pixelgate.core.batchfile import parse_batch_file
from pixelgate.core.cache import cache_key, wants_cache
from pixelgate.core.models import AccountView, GenerationRequest, PromptContext
from pixelgate.core.templates import (
    apply_context,
    check_template_name,
    final_prompt,
    parse_template,
    render_template,
)
from pixelgate.errors import ValidationFailed


def _fail(fn: object, *args: object, **kwargs: object) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_placeholders_are_listed_once_in_order() -> None:
    parsed = parse_template("A {subject} in the style of {style}, {subject} again")
    assert parsed.placeholders == ["subject", "style"]
    assert parse_template("no placeholders").placeholders == []
    assert parse_template("{{literal}} and { spaced }").placeholders == ["spaced"]


def test_rendering_substitutes_verbatim_and_once() -> None:
    parsed = parse_template("{{x}} A {subject} by {artist}")
    out = render_template(parsed, {"subject": "  red\n fox ", "artist": "{subject}"})
    assert out == "{x} A red fox by {subject}"
    assert render_template(parse_template("{n} cats"), {"n": 3.0}) == "3 cats"


@pytest.mark.parametrize(
    "text", ["A {subject", "A }", "{}", "{1x}", "{a b}", "{a.b}", "{a!r}", "   "]
)
def test_invalid_templates_name_the_field(text: str) -> None:
    assert _fail(parse_template, text, field="text").field == "text"


def test_missing_and_unknown_inputs_name_the_placeholder() -> None:
    parsed = parse_template("A {subject} in the style of {style}")
    missing = _fail(render_template, parsed, {"subject": "fox"})
    assert (missing.field, missing.code) == ("inputs.style", "missing_template_input")
    empty = _fail(render_template, parsed, {"subject": "fox", "style": "  "})
    assert empty.field == "inputs.style"
    unknown = _fail(render_template, parsed, {"subject": "a", "style": "b", "mood": "c"})
    assert (unknown.field, unknown.code) == ("inputs.mood", "unknown_template_input")
    assert "{subject}, {style}" in unknown.message


def test_template_names() -> None:
    assert check_template_name("portrait-v2.1") == "portrait-v2.1"
    for bad in ("tpl_abc", "-x", "a b", "x" * 65):
        assert _fail(check_template_name, bad).field == "name"


def test_context_rules_are_fixed_per_kind() -> None:
    def ctx(kind: str, text: str) -> PromptContext:
        return PromptContext.model_validate({"kind": kind, "text": text})

    assert apply_context("oil", ctx("portrait", "a sailor.")) == "Portrait of a sailor. oil"
    assert apply_context("oil", ctx("location", " the  docks ")) == "Setting: the docks. oil"
    assert apply_context("oil", ctx("scene", "a storm...")) == "Scene: a storm. oil"
    assert apply_context("oil", None) == "oil"
    assert _fail(apply_context, "oil", ctx("scene", "...")).field == "context.text"


def test_final_prompt_renders_then_adds_context() -> None:
    request = GenerationRequest.model_validate(
        {
            "template": "t",
            "inputs": {"who": "a cat"},
            "context": {"kind": "scene", "text": "a rooftop"},
        }
    )
    assert final_prompt(request, parse_template("{who} at night")) == (
        "Scene: a rooftop. a cat at night"
    )
    stray = GenerationRequest.model_validate({"prompt": "x", "inputs": {"who": "y"}})
    assert _fail(final_prompt, stray, None).field == "inputs.who"


def test_prompt_is_required_without_a_template() -> None:
    with pytest.raises(ValueError, match="prompt"):
        GenerationRequest.model_validate({"width": 16, "height": 16})
    assert GenerationRequest.model_validate({"template": "t"}).prompt == ""


def _request(**data: object) -> GenerationRequest:
    return GenerationRequest.model_validate({"prompt": "a red fox", "seed": 1, **data})


def test_cache_key_needs_a_seed_and_ignores_bookkeeping() -> None:
    assert cache_key(GenerationRequest(prompt="x")) is None
    base = cache_key(_request())
    assert base is not None and len(base) == 64
    same = [
        _request(prompt="  a   red fox "),
        _request(metadata={"a": 1}, project="other", webhook_url="https://example.com/h"),
        _request(width=1024, height=1024),
        _request(cache=True, entities=[{"type": "character", "id": "c"}]),
    ]
    assert {cache_key(r) for r in same} == {base}
    assert cache_key(_request(provider="fast")) == cache_key(_request(providers=["fast"]))
    different = [
        _request(seed=2),
        _request(prompt="a blue fox"),
        _request(width=512, height=512),
        _request(n=2),
        _request(format="webp"),
        _request(provider="fast"),
        _request(negative_prompt="blur"),
        _request(options={"steps": 20}),
    ]
    keys = [cache_key(r) for r in different]
    assert base not in keys and len(set(keys)) == len(keys)


def test_wants_cache_prefers_the_request_over_the_account() -> None:
    from datetime import UTC, datetime

    account = AccountView(
        id="acct_1", name="a", tier="PRO", credits=None, created_at=datetime.now(UTC)
    )
    assert wants_cache(_request(), account) is False
    account.settings["cache"] = True
    assert wants_cache(_request(), account) is True
    assert wants_cache(_request(cache=False), account) is False


def test_batch_file_lines_and_defaults() -> None:
    text = '{"prompt": "a", "n": 2}\n\n"b"\nplain text c\n{"prompt": "d", "providers": ["x"]}\n'
    parsed = parse_batch_file(text, {"provider": "fast", "width": 16, "height": 16})
    assert [p.line for p in parsed] == [1, 3, 4, 5]
    assert [p.request.prompt for p in parsed] == ["a", "b", "plain text c", "d"]
    assert parsed[0].request.n == 2 and parsed[1].request.provider == "fast"
    assert parsed[3].request.providers == ["x"] and parsed[3].request.provider is None
    assert '"quoted" start' == parse_batch_file('"quoted" start')[0].request.prompt
    for bad, where in (('ok\n{"prompt": 1\n', "line 2"), ('{"width": 16}\n', "line 1: prompt")):
        assert _fail(parse_batch_file, bad).field == where
    assert _fail(parse_batch_file, "\n\n").field == "file"

"""Prompt templates with named placeholders, and narrative context (seeds 002 and 003).

A template is text with ``{name}`` placeholders (``{{`` and ``}}`` are literal braces);
rendering substitutes each placeholder with its input, verbatim and once (an input that
itself contains braces is not expanded again). Narrative context then prefixes the prompt
by a fixed rule per kind. The exact rules are written down in ``docs/prompts.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pixelgate.core.models import GenerationRequest, PromptContext
from pixelgate.errors import ValidationFailed

__all__ = [
    "CONTEXT_PREFIXES",
    "ParsedTemplate",
    "apply_context",
    "check_template_name",
    "final_prompt",
    "parse_template",
    "render_template",
]

PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TEMPLATE_ID_PREFIX = "tpl_"
MAX_TEMPLATE_LENGTH = 4000
MAX_PLACEHOLDERS = 50

#: narrative context → the text put before the prompt (``{text}`` is the context's text)
CONTEXT_PREFIXES: dict[str, str] = {
    "portrait": "Portrait of {text}.",
    "location": "Setting: {text}.",
    "scene": "Scene: {text}.",
}


@dataclass(frozen=True)
class ParsedTemplate:
    """A template split into literal text and placeholder names, in order."""

    text: str
    #: literal strings and ``(name,)`` placeholder markers, alternating as they appear
    parts: tuple[str | tuple[str], ...]

    @property
    def placeholders(self) -> list[str]:
        """Each placeholder name once, in order of first appearance."""
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, tuple):
                seen.setdefault(part[0], None)
        return list(seen)


def check_template_name(name: str) -> str:
    """A template name: letters, digits, ``.``, ``_``, ``-`` (at most 64), not ``tpl_…``.

    Raises:
        ValidationFailed: naming ``name``.
    """
    if not TEMPLATE_NAME.match(name):
        raise ValidationFailed("name", "letters, digits, '.', '_' or '-' (at most 64)")
    if name.startswith(TEMPLATE_ID_PREFIX):
        raise ValidationFailed("name", f"must not start with {TEMPLATE_ID_PREFIX!r} (ids do)")
    return name


def parse_template(text: str, *, field: str = "text") -> ParsedTemplate:
    """Split ``text`` into literals and placeholders.

    Raises:
        ValidationFailed: naming ``field``, for an unmatched brace, an empty or invalid
            placeholder name, no placeholder at all being fine.
    """
    if not text.strip():
        raise ValidationFailed(field, "must not be empty")
    if len(text) > MAX_TEMPLATE_LENGTH:
        raise ValidationFailed(field, f"longer than {MAX_TEMPLATE_LENGTH} characters")
    parts: list[str | tuple[str]] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match[0]
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif match[1] is not None:
            name = match[1].strip()
            if not PLACEHOLDER.fullmatch(name):
                raise ValidationFailed(
                    field,
                    f"invalid placeholder {{{match[1]}}}: a name of letters, digits and '_' "
                    "(write {{ and }} for literal braces)",
                    code="invalid_template",
                )
            parts.append("".join(literal))
            literal = []
            parts.append((name,))
        else:
            raise ValidationFailed(
                field,
                f"unmatched {token!r} at character {match.start() + 1} "
                "(write {{ and }} for literal braces)",
                code="invalid_template",
            )
    literal.append(text[pos:])
    parts.append("".join(literal))
    parsed = ParsedTemplate(text=text, parts=tuple(p for p in parts if p != ""))
    if len(parsed.placeholders) > MAX_PLACEHOLDERS:
        raise ValidationFailed(field, f"more than {MAX_PLACEHOLDERS} placeholders")
    return parsed


def render_template(parsed: ParsedTemplate, inputs: Mapping[str, object] | None) -> str:
    """Substitute every placeholder with its input.

    Raises:
        ValidationFailed: ``inputs.<name>`` for a placeholder without a (non-empty) input
            (code ``missing_template_input``), or for an input the template has no
            placeholder for (``unknown_template_input``).
    """
    values = {name: _input_text(value) for name, value in (inputs or {}).items()}
    wanted = parsed.placeholders
    for name in wanted:
        if not values.get(name):
            raise ValidationFailed(
                f"inputs.{name}",
                f"missing: the template needs a value for {{{name}}}",
                code="missing_template_input",
            )
    for name in values:
        if name not in wanted:
            expected = ", ".join(f"{{{n}}}" for n in wanted) or "none"
            raise ValidationFailed(
                f"inputs.{name}",
                f"unknown placeholder: the template has {expected}",
                code="unknown_template_input",
            )
    return "".join(part if isinstance(part, str) else values[part[0]] for part in parsed.parts)


def apply_context(prompt: str, context: PromptContext | None) -> str:
    """Prefix the prompt with the narrative context: ``"<prefix> <prompt>"``.

    The context text has its whitespace collapsed and trailing periods removed, then
    goes into the kind's prefix (:data:`CONTEXT_PREFIXES`).
    """
    if context is None:
        return prompt
    text = " ".join(context.text.split()).rstrip(". ")
    if not text:
        raise ValidationFailed("context.text", "must not be empty")
    prefix = CONTEXT_PREFIXES[context.kind].format(text=text)
    return f"{prefix} {prompt}"


def final_prompt(request: GenerationRequest, template: ParsedTemplate | None) -> str:
    """The prompt a provider receives: the rendered template (or ``prompt``) with context.

    Raises:
        ValidationFailed: see :func:`render_template`; ``inputs`` without a template.
    """
    if template is not None:
        prompt = render_template(template, request.inputs)
    else:
        if request.inputs:
            first = next(iter(request.inputs))
            raise ValidationFailed(
                f"inputs.{first}",
                "unknown placeholder: inputs need a template",
                code="unknown_template_input",
            )
        prompt = request.prompt
    prompt = prompt.strip()
    if not prompt:
        raise ValidationFailed("template", "renders an empty prompt")
    return apply_context(prompt, request.context)


def _input_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pixelgate.core.ids import new_id
from pixelgate.core.models import GenerationRequest
from pixelgate.core.pricing import CreditRules, credits_for
from pixelgate.db.store import generate_key, hash_key


def test_dimensions_from_aspect_ratio() -> None:
    assert GenerationRequest(prompt="x", aspect_ratio="16:9").dimensions() == (1024, 576)
    assert GenerationRequest(prompt="x", aspect_ratio="2:3").dimensions() == (680, 1024)
    assert GenerationRequest(prompt="x").dimensions() == (1024, 1024)
    assert GenerationRequest(prompt="x", width=64, height=32).dimensions() == (64, 32)


@pytest.mark.parametrize(
    "data",
    [
        {"prompt": "x", "width": 64},
        {"prompt": "x", "provider": "a", "providers": ["b"]},
        {"prompt": "x", "aspect_ratio": "0:1"},
        {"prompt": "x", "format": "gif"},
        {"prompt": "   "},
    ],
)
def test_invalid_requests(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationRequest.model_validate(data)


def test_jpg_is_jpeg() -> None:
    assert GenerationRequest(prompt="x", format="JPG").format == "jpeg"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "credits"),
    [
        ({}, 1),
        ({"width": 1024, "height": 1024}, 1),
        ({"width": 1025, "height": 512}, 2),
        ({"n": 4}, 4),
        ({"reference_image_url": "https://example.com/a.png"}, 2),
        ({"n": 2, "width": 2048, "height": 2048, "reference_image_url": "https://e.com/x"}, 4),
    ],
)
def test_seed004_credit_rules(data: dict[str, object], credits: int) -> None:
    assert credits_for(GenerationRequest.model_validate({"prompt": "x", **data})) == credits


def test_credit_rules_are_configurable() -> None:
    rules = CreditRules(base=5, per_extra_variation=2)
    assert credits_for(GenerationRequest(prompt="x", n=3), rules) == 9


def test_keys_are_random_and_stored_as_hashes() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and a.startswith("pg_") and len(a) > 40
    assert hash_key(a) == hash_key(a) != hash_key(b)
    assert len(hash_key(a)) == 64 and a not in hash_key(a)


def test_ids_are_prefixed_and_time_sortable() -> None:
    ids = [new_id("gen") for _ in range(50)]
    assert all(i.startswith("gen_") and len(i) == 30 for i in ids)
    assert len(set(ids)) == 50
    import time

    earlier = new_id("gen")
    time.sleep(0.002)
    assert new_id("gen") > earlier

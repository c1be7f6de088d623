"""The client's response models mirror the server's bodies field for field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from pixelgate.api.schemas import generation_body
from pixelgate.client import Generation, Status
from pixelgate.client._base import build_request_body, parse_event
from pixelgate.core.models import GenerationView, ImageView

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _view(status: Status, **extra: object) -> GenerationView:
    image = ImageView(
        id="img_1", index=0, key="k/gen_1-0.png", url="http://x/files/k/gen_1-0.png",
        width=8, height=8, format="png", content_type="image/png", bytes=10, sha256="ab",
        attribution={"author": "someone"},
    )
    fields: dict[str, object] = dict(
        id="gen_1", account_id="acct_1", account_name="a", project="default", status=status,
        progress=50, prompt="p", request={"prompt": "p"}, source="native", provider="fast",
        model="m", retry_count=1, last_retry_at=NOW, error_code="provider_error",
        error_message="boom", credits=2, cost_usd=Decimal("0.04"), estimated_usd=Decimal("0.04"),
        created_at=NOW, updated_at=NOW, started_at=NOW, completed_at=None, provider_ms=5,
        request_id="req_1", cancel_requested=True, route=[{"provider": "fast"}],
        images=[image], queue_position=3, fallback_image=True, cached_from="gen_0",
        batch_id="bat_1",
    )
    fields.update(extra)
    return GenerationView(**fields)  # type: ignore[arg-type]


def test_every_key_of_a_generation_body_is_a_declared_field() -> None:
    for status in (Status.PENDING, Status.PROCESSING, Status.FAILED):
        body = generation_body(_view(status))
        generation = Generation.model_validate(body)
        assert generation.model_extra == {}, f"undeclared: {generation.model_extra}"
        assert generation.images[0].model_extra == {}
        assert generation.error is not None and generation.error.code == "provider_error"
        assert generation.cost.usd == Decimal("0.04")


def test_events_and_request_bodies() -> None:
    event = parse_event("7", "progress", '{"type": "progress", "progress": 40, '
                        '"created_at": "2026-01-02T03:04:05Z", "generation_id": "gen_1"}', "gen_1")
    assert (event.id, event.type, event.data, event.terminal) == (7, "progress",
                                                                  {"progress": 40}, False)
    assert parse_event("8", "succeeded", "{}", "gen_1").terminal
    # only what the caller set is sent; the server's defaults apply to the rest
    assert build_request_body("a cat", None, {"format": "JPG"}) == {"prompt": "a cat",
                                                                    "format": "jpeg"}

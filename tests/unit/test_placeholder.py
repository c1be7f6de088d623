from __future__ import annotations

import io
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from pixelgate.errors import (
    InvalidRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    Refused,
    Transient,
)
from pixelgate.providers import placeholder
from pixelgate.providers.base import ProviderRequest
from pixelgate.providers.placeholder import (
    PlaceholderProvider,
    PlaceholderSettings,
    derive_seed,
    render_placeholder,
)
from tests.fakes import FakeJobContext

PROMPT = "A serene mountain landscape at sunset"
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make(http: httpx.AsyncClient, **settings: object) -> PlaceholderProvider:
    return PlaceholderProvider(
        "placeholder", PlaceholderSettings(kind="placeholder", **settings), http
    )


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def band_extrema(band: Image.Image) -> tuple[int, int]:
    low, high = band.getextrema()
    assert isinstance(low, int) and isinstance(high, int)
    return low, high


def fresh_render(prompt: str, *, width: int, height: int, fmt: str, seed: int) -> bytes:
    placeholder._cache.clear()
    return render_placeholder(prompt, width=width, height=height, fmt=fmt, seed=seed)


def test_same_inputs_give_identical_bytes() -> None:
    for fmt in ("png", "jpeg", "webp"):
        first = fresh_render(PROMPT, width=256, height=192, fmt=fmt, seed=7)
        second = fresh_render(PROMPT, width=256, height=192, fmt=fmt, seed=7)
        assert first == second


def test_different_prompt_seed_or_index_give_different_images() -> None:
    base = render_placeholder(PROMPT, width=128, height=128, seed=1)
    assert render_placeholder(PROMPT + "!", width=128, height=128, seed=1) != base
    assert render_placeholder(PROMPT, width=128, height=128, seed=2) != base
    assert render_placeholder(PROMPT, width=128, height=128, seed=1, index=1) != base
    assert render_placeholder(PROMPT, width=128, height=128, seed=None) != base


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize(
    "size", [(16, 16), (64, 64), (1536, 640), (640, 1536), (1024, 1024), (1, 1), (3, 200)]
)
def test_size_and_format_are_honoured(fmt: str, size: tuple[int, int]) -> None:
    width, height = size
    img = decode(render_placeholder(PROMPT, width=width, height=height, fmt=fmt, seed=3))
    assert img.size == size
    assert img.format == PIL_FORMATS[fmt]
    if fmt == "jpeg":
        assert img.mode == "RGB"


def test_large_image_renders_quickly() -> None:
    started = time.perf_counter()
    img = decode(fresh_render(PROMPT, width=4096, height=4096, fmt="jpeg", seed=1))
    assert img.size == (4096, 4096)
    assert time.perf_counter() - started < 5


def test_image_is_not_flat_and_shows_text() -> None:
    img = decode(render_placeholder(PROMPT, width=512, height=512, seed=5)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 500
    # white prompt text sits on the card in the middle
    _, high = band_extrema(img.crop((64, 200, 448, 312)).convert("L"))
    assert high > 235


@pytest.mark.parametrize(
    ("size", "background"),
    [
        ((64, 64), (16, 16)),
        ((512, 256), (128, 64)),
        ((4096, 4096), (512, 512)),
        ((3, 200), (1, 50)),
    ],
)
def test_the_smooth_background_is_drawn_at_a_quarter_of_the_size_or_less(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], background: tuple[int, int]
) -> None:
    """Its blur and composites cost a sixteenth (a 64x64 image's blur was a fifth of
    its drawing); the image keeps its size, and its text is drawn at full size."""
    drawn: list[tuple[int, int]] = []
    shapes = placeholder._shapes

    def recording(small: tuple[int, int], *args: Any) -> Image.Image:
        drawn.append(small)
        return shapes(small, *args)

    monkeypatch.setattr(placeholder, "_shapes", recording)
    width, height = size
    img = decode(fresh_render(PROMPT, width=width, height=height, fmt="png", seed=4))
    assert drawn == [background]
    assert img.size == size


def test_png_is_smaller_than_zlibs_default_strategy_would_make_it() -> None:
    """Run-length matching only (``Z_RLE``): smaller and quicker on these smooth images."""
    data = fresh_render(PROMPT, width=256, height=256, fmt="png", seed=9)
    default = io.BytesIO()
    decode(data).save(default, format="PNG", compress_level=1)
    assert len(data) < 0.9 * len(default.getvalue())


@pytest.mark.parametrize(("size", "stored"), [(64, True), (128, True), (129, False)])
def test_a_small_png_is_stored_without_deflate(size: int, stored: bool) -> None:
    """Deflating a thumbnail, and inflating it again to check it, cost more CPU than its
    bytes: up to 128x128 the pixels are stored (more bytes than the raw RGB rows)."""
    data = fresh_render(PROMPT, width=size, height=size, fmt="png", seed=2)
    assert decode(data).size == (size, size)
    assert (len(data) > size * size * 3) is stored


def test_long_prompts_and_empty_prompts_render() -> None:
    long = " ".join(["word"] * 500) + " " + "x" * 400
    assert decode(render_placeholder(long, width=512, height=256)).size == (512, 256)
    assert decode(render_placeholder("", width=64, height=64)).size == (64, 64)
    assert decode(render_placeholder("日本語のプロンプト 🎨", width=256, height=256)).size == (
        256,
        256,
    )


def test_transparent_png_has_alpha_and_jpeg_ignores_it() -> None:
    png = decode(render_placeholder(PROMPT, width=64, height=64, transparent=True))
    assert png.mode == "RGBA"
    assert band_extrema(png.getchannel("A"))[0] < 255
    jpeg = decode(render_placeholder(PROMPT, width=64, height=64, fmt="jpeg", transparent=True))
    assert jpeg.mode == "RGB"


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        render_placeholder(PROMPT, width=64, height=64, fmt="tiff")


async def test_generate_returns_requested_images(http: httpx.AsyncClient) -> None:
    provider = make(http)
    ctx = FakeJobContext(http=http)
    request = ProviderRequest(prompt=PROMPT, n=3, width=320, height=200, format="webp", seed=10)
    result = await provider.generate(request, ctx)
    assert result.model == "placeholder-1"
    assert result.cost_usd == Decimal("0")
    assert len(result.images) == 3
    assert len({image.data for image in result.images}) == 3
    assert [image.seed for image in result.images] == [10, 11, 12]
    for image in result.images:
        assert image.content_type == "image/webp"
        assert image.data is not None
        assert decode(image.data).size == (320, 200)
    # the recorded seed reproduces the image
    again = await provider.generate(
        ProviderRequest(prompt=PROMPT, width=320, height=200, format="webp", seed=11), ctx
    )
    assert again.images[0].data == result.images[1].data


async def test_seed_is_derived_from_the_prompt_when_absent(http: httpx.AsyncClient) -> None:
    provider = make(http)
    ctx = FakeJobContext(http=http)
    first = await provider.generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
    second = await provider.generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
    assert first.images[0].seed == derive_seed(PROMPT)
    assert first.images[0].data == second.images[0].data


async def test_an_image_in_the_cache_is_not_drawn_in_a_thread(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[object] = []
    run_cpu = placeholder.run_cpu

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        drawn.append(fn)
        return await run_cpu(fn, *args, **kwargs)

    monkeypatch.setattr(placeholder, "run_cpu", counting)
    provider = make(http)
    ctx = FakeJobContext(http=http)
    request = ProviderRequest(prompt="cached once", width=72, height=40, format="png")
    first = await provider.generate(request, ctx)
    second = await provider.generate(request, ctx)
    assert len(drawn) == 1  # the second one was a cache hit, on the event loop
    assert second.images[0].data == first.images[0].data
    assert first.images[0].data == render_placeholder(
        "cached once", width=72, height=40, seed=derive_seed("cached once")
    )


async def test_fail_rate_one_always_raises_transient(http: httpx.AsyncClient) -> None:
    provider = make(http, fail_rate=1.0)
    ctx = FakeJobContext(http=http)
    for _ in range(20):
        with pytest.raises(Transient) as info:
            await provider.generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
        assert info.value.provider == "placeholder"
        assert info.value.retryable
        assert "injected transient failure" in info.value.message


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("transient", Transient),
        ("timeout", ProviderTimeout),
        ("rate_limited", ProviderRateLimited),
        ("refused", Refused),
        ("invalid", InvalidRequest),
    ],
)
async def test_fail_kind_maps_to_its_error(
    http: httpx.AsyncClient, kind: str, error: type[ProviderError]
) -> None:
    provider = make(http, fail_rate=1.0, fail_kind=kind)
    with pytest.raises(error) as info:
        await provider.generate(
            ProviderRequest(prompt=PROMPT, width=64, height=64), FakeJobContext(http=http)
        )
    assert type(info.value) is error
    assert info.value.provider == "placeholder"
    if kind == "rate_limited":
        assert info.value.retry_after == 1


async def test_fail_rate_zero_never_fails(http: httpx.AsyncClient) -> None:
    provider = make(http, fail_rate=0.0)
    ctx = FakeJobContext(http=http)
    for _ in range(50):
        result = await provider.generate(ProviderRequest(prompt=PROMPT, width=16, height=16), ctx)
        assert len(result.images) == 1


async def test_latency_reports_progress_and_takes_that_long(http: httpx.AsyncClient) -> None:
    provider = make(http, latency_ms=200)
    ctx = FakeJobContext(http=http)
    started = time.monotonic()
    await provider.generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
    assert time.monotonic() - started >= 0.195
    assert [pct for pct, _ in ctx.progress_reports] == [25, 50, 75]


async def test_no_latency_reports_no_progress(http: httpx.AsyncClient) -> None:
    ctx = FakeJobContext(http=http)
    await make(http).generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
    assert ctx.progress_reports == []


@pytest.mark.parametrize(
    "request_",
    [
        ProviderRequest(prompt=PROMPT, format="tiff"),
        ProviderRequest(prompt=PROMPT, width=5000),
        ProviderRequest(prompt=PROMPT, height=0),
        ProviderRequest(prompt=PROMPT, n=11),
        ProviderRequest(prompt=PROMPT, model="other-model"),
    ],
)
async def test_out_of_range_requests_are_invalid(
    http: httpx.AsyncClient, request_: ProviderRequest
) -> None:
    with pytest.raises(InvalidRequest):
        await make(http).generate(request_, FakeJobContext(http=http))


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        PlaceholderSettings(kind="placeholder", fail_rate=1.5)
    with pytest.raises(ValueError):
        PlaceholderSettings(kind="placeholder", latency_ms=-1)
    with pytest.raises(ValueError):
        PlaceholderSettings(kind="placeholder", fail_kind="explode")


async def test_provider_metadata(http: httpx.AsyncClient) -> None:
    provider = make(http)
    assert provider.kind == "placeholder"
    assert provider.configured
    assert not PlaceholderProvider.needs_key
    assert PlaceholderProvider.key_env is None
    info = provider.model_info(None)
    assert info.name == "placeholder-1"
    assert info.price_usd == Decimal("0")
    caps = info.capabilities
    assert caps.edit and caps.mask and caps.transparency and caps.seed
    assert caps.max_n == 10
    assert caps.output_formats == ("png", "jpeg", "webp")
    assert (await provider.health()).healthy


async def test_latency_without_progress_reports_stays_quiet(http: httpx.AsyncClient) -> None:
    provider = make(http, latency_ms=80, report_progress=False)
    ctx = FakeJobContext(http=http)
    started = time.monotonic()
    await provider.generate(ProviderRequest(prompt=PROMPT, width=64, height=64), ctx)
    assert time.monotonic() - started >= 0.075
    assert ctx.progress_reports == []


def test_each_line_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """FreeType's measuring holds the GIL: the wrap, the card's width and the centring
    share one measurement of each line (three before)."""
    from PIL import ImageFont

    measured: list[str] = []
    getlength = ImageFont.FreeTypeFont.getlength

    def counting(self: ImageFont.FreeTypeFont, text: str, *args: Any, **kwargs: Any) -> float:
        # the glyph cache measures each character's advance once per font (for its own
        # drawing, tests/unit/test_glyphs.py): not a line's measurement
        if sys._getframe(1).f_code.co_name != "_glyph":
            measured.append(text)
        return getlength(self, text, *args, **kwargs)

    monkeypatch.setattr(ImageFont.FreeTypeFont, "getlength", counting)
    fresh_render("a prompt measured once", width=256, height=256, fmt="png", seed=31)
    assert measured
    assert len(measured) == len(set(measured))


def test_the_card_shape_is_drawn_once_per_size() -> None:
    placeholder._card_mask.cache_clear()
    first = fresh_render("b1", width=64, height=64, fmt="png", seed=1)
    second = fresh_render("b2", width=64, height=64, fmt="png", seed=2)
    assert first != second
    info = placeholder._card_mask.cache_info()
    assert (info.misses, info.hits) == (1, 1)

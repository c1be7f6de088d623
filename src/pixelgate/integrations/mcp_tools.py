"""The MCP server's tools: generate, start and check, catalog, estimate, recent generations.

Each tool resolves who is calling (the API key of the HTTP request, or the key ``pixelgate
mcp`` was started with) and goes through the same pipeline and store calls as the HTTP
routes, so tiers, credits, budgets and rate limits apply, and an agent only ever sees its
own account's generations. Imported only when the ``mcp`` extra is installed; no
``from __future__ import annotations`` here, as the SDK reads the tools' signatures.
"""

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from pixelgate import __version__
from pixelgate.api.routes.account import account_body
from pixelgate.api.routes.providers import check_health, provider_body
from pixelgate.api.schemas import generation_body
from pixelgate.core.ids import new_id
from pixelgate.core.models import GenerationRequest, GenerationView, Status
from pixelgate.core.pipeline import Caller
from pixelgate.errors import PixelgateError, RateLimited
from pixelgate.runtime import Runtime

__all__ = ["Resolver", "build_mcp_server"]

#: who calls and on which runtime, for the request a tool runs in
Resolver = Callable[[Context], Awaitable[tuple[Runtime, Caller]]]
T = TypeVar("T")

SERVER_NAME = "pixelgate"
INSTRUCTIONS = (
    "pixelgate generates images through many providers. Use generate_image for a finished "
    "image (URLs, and the image itself with include_images), or start_generation and then "
    "get_generation for long jobs. list_providers shows models, capabilities and prices; "
    "estimate_cost prices a request without running it. Spending uses the API key's account."
)
DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 300.0
#: progress is reported (and the wait re-armed) this often while generate_image waits
PROGRESS_EVERY_S = 1.0
#: images larger than this in total are returned as URLs only
MAX_INLINE_BYTES = 8 * 1024 * 1024
MAX_LIST = 50
SOURCE = "mcp"
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "svg": "image/svg+xml"}

Prompt = Annotated[str, Field(description="what to draw", min_length=1)]
Size = Annotated[
    str | None, Field(description="WIDTHxHEIGHT in pixels, e.g. 1024x768 (or aspect_ratio)")
]
Aspect = Annotated[str | None, Field(description="W:H, e.g. 16:9 (instead of size)")]
ProviderName = Annotated[
    str | None, Field(description="provider name from list_providers (default: routing)")
]
ModelName = Annotated[str | None, Field(description="model of the provider")]
Count = Annotated[int, Field(description="number of images", ge=1)]
Seed = Annotated[int | None, Field(description="seed for a reproducible image", ge=0)]
Format = Annotated[Literal["png", "jpeg", "webp", "svg"], Field(description="image format")]
Negative = Annotated[str | None, Field(description="what the image must not show")]


def build_mcp_server(resolve: Resolver) -> MCPServer:
    """An ``MCPServer`` with pixelgate's tools; ``resolve`` says who calls, per request."""
    server: MCPServer = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, version=__version__)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(title="Generate an image")
    async def generate_image(
        prompt: Prompt,
        ctx: Context,
        size: Size = None,
        aspect_ratio: Aspect = None,
        provider: ProviderName = None,
        model: ModelName = None,
        n: Count = 1,
        seed: Seed = None,
        format: Format = "png",
        negative_prompt: Negative = None,
        include_images: Annotated[
            bool, Field(description="also return the images themselves, not only their URLs")
        ] = False,
        wait_seconds: Annotated[
            float, Field(description="how long to wait for the result", gt=0, le=MAX_WAIT_S)
        ] = DEFAULT_WAIT_S,
    ) -> CallToolResult:
        """Generate images and wait for them; returns their URLs (and, if asked, the images).

        If the job is not done within wait_seconds, its id comes back: call get_generation.
        """
        runtime, caller = await resolve(ctx)
        request = _request(prompt, size, aspect_ratio, provider, model, n, seed, format,
                           negative_prompt)
        view = await _admit(runtime, caller, request)
        deadline = time.monotonic() + wait_seconds
        while not view.terminal and (left := deadline - time.monotonic()) > 0:
            view = await runtime.pipeline.wait(view.id, min(left, PROGRESS_EVERY_S))
            await ctx.report_progress(view.progress, 100, view.status.value.lower())
        return await _result(runtime, view, include_images)

    @server.tool(title="Start an image generation")
    async def start_generation(
        prompt: Prompt,
        ctx: Context,
        size: Size = None,
        aspect_ratio: Aspect = None,
        provider: ProviderName = None,
        model: ModelName = None,
        n: Count = 1,
        seed: Seed = None,
        format: Format = "png",
        negative_prompt: Negative = None,
    ) -> dict[str, Any]:
        """Start a generation and return at once with its id; check on it with get_generation."""
        runtime, caller = await resolve(ctx)
        request = _request(prompt, size, aspect_ratio, provider, model, n, seed, format,
                           negative_prompt)
        return summary(await _admit(runtime, caller, request))

    @server.tool(title="Check on a generation", annotations=read_only)
    async def get_generation(
        generation_id: Annotated[str, Field(description="id from start_generation")],
        ctx: Context,
        include_images: Annotated[
            bool, Field(description="also return the images themselves once finished")
        ] = False,
    ) -> CallToolResult:
        """A generation's status, progress, cost and, once finished, its image URLs."""
        runtime, caller = await resolve(ctx)
        view = await _call(
            runtime.services.records.get_generation(generation_id, account_id=caller.account_id)
        )
        return await _result(runtime, view, include_images)

    @server.tool(title="Cancel a generation")
    async def cancel_generation(
        generation_id: Annotated[str, Field(description="id of the generation")], ctx: Context
    ) -> dict[str, Any]:
        """Cancel a generation that has not finished (its credits are refunded)."""
        runtime, caller = await resolve(ctx)
        return summary(await _call(runtime.pipeline.cancel(generation_id, caller.account_id)))

    @server.tool(title="List recent generations", annotations=read_only)
    async def list_generations(
        ctx: Context,
        limit: Annotated[int, Field(description="how many, newest first", ge=1, le=MAX_LIST)] = 10,
        status: Annotated[
            Literal["PENDING", "PROCESSING", "SUCCEEDED", "FAILED", "CANCELED"] | None,
            Field(description="only generations in this state"),
        ] = None,
    ) -> dict[str, Any]:
        """This account's recent generations, newest first."""
        runtime, caller = await resolve(ctx)
        views = await _call(
            runtime.services.records.list_generations(
                account_id=caller.account_id,
                status=Status(status) if status else None,
                limit=limit,
                cursor=None,
            )
        )
        return {"generations": [summary(v) for v in views]}

    @server.tool(title="List providers and models", annotations=read_only)
    async def list_providers(ctx: Context) -> dict[str, Any]:
        """Providers with their models, capabilities, prices (USD per image) and health."""
        runtime, _caller = await resolve(ctx)
        items = list(runtime.providers)
        healths = await asyncio.gather(*(check_health(p) for p in items))
        return {
            "default_chain": runtime.providers.default_chain,
            "providers": [provider_body(p, h) for p, h in zip(items, healths, strict=True)],
        }

    @server.tool(title="Estimate a cost", annotations=read_only)
    async def estimate_cost(
        prompt: Prompt,
        ctx: Context,
        size: Size = None,
        aspect_ratio: Aspect = None,
        provider: ProviderName = None,
        model: ModelName = None,
        n: Count = 1,
        format: Format = "png",
    ) -> dict[str, Any]:
        """Credits and USD a generation would cost, and whether the balance covers it."""
        runtime, caller = await resolve(ctx)
        request = _request(prompt, size, aspect_ratio, provider, model, n, None, format, None)
        prepared = await _call(runtime.pipeline.prepare(caller, request))
        account = await runtime.services.records.get_account(caller.account_id)
        result = await _call(runtime.pipeline.estimate(prepared, account))
        return {
            "credits": result.credits,
            "usd": None if result.usd is None else format_usd(result.usd),
            "provider": result.provider,
            "model": result.model,
            "balance": account.credits,
            "affordable": account.credits is None or account.credits >= result.credits,
        }

    @server.tool(title="Show the account", annotations=read_only)
    async def get_account(ctx: Context) -> dict[str, Any]:
        """This account's credits, tier, limits left and budget."""
        runtime, caller = await resolve(ctx)
        account = await runtime.services.records.get_account(caller.account_id)
        return await account_body(runtime, account)

    return server


def format_usd(value: Any) -> str:
    return format(value.normalize(), "f")


def summary(view: GenerationView) -> dict[str, Any]:
    """What an agent needs of a generation (the API's generation body, trimmed)."""
    body = generation_body(view)
    keep = ("id", "status", "progress", "prompt", "provider", "model", "error", "cost",
            "created_at", "completed_at", "queue_position", "eta_ms")
    out = {k: body[k] for k in keep if k in body}
    out["images"] = [
        {k: image[k] for k in ("url", "width", "height", "format", "bytes", "sha256")}
        for image in body["images"]
    ]
    return out


async def _result(runtime: Runtime, view: GenerationView, include_images: bool) -> CallToolResult:
    data = summary(view)
    if not view.terminal:
        data["hint"] = f"still {view.status.value}: call get_generation with {view.id!r}"
    content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(data))]
    if include_images and view.images:
        total = sum(image.bytes for image in view.images)
        if total > MAX_INLINE_BYTES:
            data["hint"] = "images too large to return inline: fetch them from their URLs"
        else:
            for image in view.images:
                stored = await runtime.storage.get(image.key)
                content.append(
                    ImageContent(
                        type="image",
                        data=base64.b64encode(stored.data).decode("ascii"),
                        mime_type=MIME.get(image.format, stored.content_type),
                    )
                )
    return CallToolResult(content=content, structured_content=data, is_error=False)


def _request(
    prompt: str,
    size: str | None,
    aspect_ratio: str | None,
    provider: str | None,
    model: str | None,
    n: int,
    seed: int | None,
    format: str,
    negative_prompt: str | None,
) -> GenerationRequest:
    fields: dict[str, Any] = {"prompt": prompt, "n": n, "format": format}
    if size:
        width, sep, height = size.lower().partition("x")
        if not (sep and width.strip().isdigit() and height.strip().isdigit()):
            raise ToolError("invalid_request: size: must be WIDTHxHEIGHT, e.g. 1024x768")
        fields.update(width=int(width), height=int(height))
    optional = {"aspect_ratio": aspect_ratio, "provider": provider, "model": model,
                "seed": seed, "negative_prompt": negative_prompt}
    fields.update({k: v for k, v in optional.items() if v is not None})
    try:
        return GenerationRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "request"
        if name in ("width", "height"):
            name = "size"
        raise ToolError(f"invalid_request: {name}: {first.get('msg')}") from None


async def _admit(runtime: Runtime, caller: Caller, request: GenerationRequest) -> GenerationView:
    result = await _call(
        runtime.pipeline.admit(caller, request, source=SOURCE, request_id=new_id("req"))
    )
    return result.generation


async def _call(awaitable: Awaitable[T]) -> T:
    """Await a core call; a pixelgate error becomes a tool error the agent can read."""
    try:
        return await awaitable
    except PixelgateError as exc:
        message = f"{exc.code}: {exc.message}"
        if isinstance(exc, RateLimited) and exc.retry_after:
            message += f" (retry after {max(1, round(exc.retry_after))} s)"
        raise ToolError(message) from None

"""ComfyUI adapter: run an API-format workflow on a self-hosted ComfyUI server.

Routes used (ComfyUI ``server.py``): ``POST /prompt`` ``{prompt, client_id}`` ->
``prompt_id`` (saved for resume); ``GET /history/{prompt_id}`` (empty until done,
then ``outputs[node].images[{filename, subfolder, type}]`` and ``status``);
``GET /queue`` (``queue_running``/``queue_pending`` items are
``[number, prompt_id, ...]``); ``GET /view?filename=&subfolder=&type=``; cancel
with ``POST /queue {"delete": [id]}`` while queued or ``POST /interrupt`` while
running. When the ``websockets`` library is importable, ``/ws?clientId=`` is
followed for step ``progress`` messages; polling stays the source of truth.

Images are downloaded here (``ProviderImage.data``) rather than returned as URLs:
ComfyUI usually lives on a private address that the pipeline's SSRF-safe fetcher
would rightly refuse, and it may sit behind a proxy that needs our credentials.

Parameters are injected into the workflow through ``inputs``, a map from our
parameter names (``prompt``, ``negative_prompt``, ``seed``, ``width``, ``height``,
``batch_size``/``n``, ``checkpoint``, and any ``request.options`` key such as
``steps``, ``cfg``, ``sampler_name``) to ``"node_id.input_name"`` targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import structlog
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from pixelgate.providers._comfyui_workflow import (
    DEFAULT_INPUTS,
    DEFAULT_WORKFLOW,
    api_format,
    fill_workflow,
    input_mapping,
    load_workflow,
)
from pixelgate.providers._http import call, download, error_for_status, parse
from pixelgate.providers._jobs import (
    JobRun,
    Pending,
    PollingJob,
    Submitted,
    cancel_quietly,
    run_polling_job,
)
from pixelgate.providers.base import (
    Capabilities,
    Health,
    InvalidRequest,
    JobContext,
    ModelInfo,
    Provider,
    ProviderError,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    ProviderSettings,
    Transient,
)

__all__ = ["DEFAULT_INPUTS", "DEFAULT_WORKFLOW", "ComfyUIProvider", "ComfyUISettings"]

log = structlog.get_logger(__name__)

WORKFLOW_MODEL = "workflow"
SEED_LIMIT = 2**32
HEALTH_TIMEOUT_S = 5.0
WS_CONNECT_TIMEOUT_S = 2.0
#: consecutive polls a prompt may be in neither the queue nor the history
MAX_MISSING_POLLS = 3

class ComfyUISettings(ProviderSettings):
    """Settings of a ``kind = "comfyui"`` instance; ``base_url`` is required."""

    kind: str = "comfyui"
    #: API-format workflow ("Save (API)" in ComfyUI); default: the built-in txt2img
    workflow: dict[str, Any] | None = None
    workflow_path: str | None = None
    #: our parameter name -> "node_id.input_name" (or a list of them)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    #: checkpoint file injected as ``checkpoint`` (default: the workflow's own)
    checkpoint: str | None = None
    #: extra model names, each selecting that checkpoint file
    checkpoints: list[str] = Field(default_factory=list)
    #: take images from this node only (default: every node's ``output`` images)
    output_node: str | None = None
    #: follow ``/ws`` progress messages when the ``websockets`` library is present
    websocket: bool = True
    max_n: int = Field(default=4, ge=1)
    #: your own hardware: free unless you say otherwise
    price_usd: Decimal = Decimal("0")

    @model_validator(mode="after")
    def _one_workflow(self) -> ComfyUISettings:
        if self.workflow is not None and self.workflow_path is not None:
            raise ValueError("set workflow or workflow_path, not both")
        return self


class _Submitted(BaseModel):
    prompt_id: str
    number: float | None = None


class _NodeError(BaseModel):
    message: str = ""
    details: str = ""


class _NodeErrors(BaseModel):
    errors: list[_NodeError] = Field(default_factory=list)
    class_type: str | None = None


class _PromptError(BaseModel):
    message: str = ""
    details: str = ""


class _Rejected(BaseModel):
    error: _PromptError | str | None = None
    node_errors: dict[str, _NodeErrors] | list[Any] = Field(default_factory=dict)


class _ImageRef(BaseModel):
    filename: str
    subfolder: str = ""
    type: str = "output"


class _NodeOutput(BaseModel):
    images: list[_ImageRef] = Field(default_factory=list)


class _RunStatus(BaseModel):
    status_str: str | None = None
    completed: bool = False
    messages: list[tuple[str, dict[str, Any]]] = Field(default_factory=list)


class _Entry(BaseModel):
    outputs: dict[str, _NodeOutput] = Field(default_factory=dict)
    status: _RunStatus | None = None


class _Queue(BaseModel):
    queue_running: list[list[Any]] = Field(default_factory=list)
    queue_pending: list[list[Any]] = Field(default_factory=list)


class _WsData(BaseModel):
    prompt_id: str | None = None
    node: str | None = None
    value: float | None = None
    max: float | None = None


class _WsMessage(BaseModel):
    type: str
    data: _WsData = Field(default_factory=_WsData)


_HISTORY: TypeAdapter[dict[str, _Entry]] = TypeAdapter(dict[str, _Entry])
_SUBMITTED = TypeAdapter(_Submitted)
_QUEUE = TypeAdapter(_Queue)


class ComfyUIProvider(Provider):
    """A self-hosted ComfyUI server running a configurable workflow; needs no key."""

    kind = "comfyui"
    settings_class = ComfyUISettings
    key_env = None
    default_base_url = None
    needs_key = False

    settings: ComfyUISettings

    def __init__(self, name: str, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        super().__init__(name, settings, http)
        self._loaded: dict[str, Any] | None = None

    @property
    def configured(self) -> bool:
        return self.settings.enabled and bool(self.settings.base_url)

    @property
    def models(self) -> dict[str, ModelInfo]:
        mapping = self._mapping_or_default()
        caps = Capabilities(
            negative_prompt="negative_prompt" in mapping,
            seed="seed" in mapping,
            max_n=self.settings.max_n if ("batch_size" in mapping or "n" in mapping) else 1,
            output_formats=("png",),
        )
        names = [WORKFLOW_MODEL, *self.settings.checkpoints]
        return {
            name: ModelInfo(name, caps, self.settings.price_usd, "ComfyUI workflow")
            for name in names
        }

    async def generate(self, request: ProviderRequest, ctx: JobContext) -> ProviderResult:
        if not self.settings.base_url:
            raise InvalidRequest(f"{self.name}: base_url is not configured", provider=self.name)
        model = request.model or self.default_model
        self.model_info(model)
        job = _Prompt(self, request, model)
        try:
            # Polling and the websocket both report: never let progress go backwards.
            return await run_polling_job(self, ctx, job, monotonic=True)
        finally:
            if job.follower is not None:
                await _stop(job.follower)

    async def cancel(self, provider_job_id: str) -> None:
        """Best-effort: drop the prompt from the queue, or interrupt it if running."""
        await cancel_quietly(self.name, provider_job_id, lambda: self._cancel(provider_job_id))

    async def health(self) -> Health:
        if not self.configured:
            return Health(healthy=False, status="not_configured")
        try:
            await self._call("GET", "/system_stats", timeout=HEALTH_TIMEOUT_S)
        except ProviderError as exc:
            return Health(healthy=False, status="unreachable", detail=exc.message)
        return Health(healthy=True)

    # -- internals -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self.settings.api_key is None:
            return {}
        # For a ComfyUI behind an authenticating reverse proxy.
        return {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"}

    # workflow ----------------------------------------------------------------------

    def _workflow(self) -> dict[str, Any]:
        if self.settings.workflow is not None:
            workflow = self.settings.workflow
        elif self.settings.workflow_path is not None:
            if self._loaded is None:
                self._loaded = load_workflow(self.name, self.settings.workflow_path)
            workflow = self._loaded
        else:
            return DEFAULT_WORKFLOW
        return api_format(self.name, workflow)

    def _mapping_or_default(self) -> dict[str, str | list[str]]:
        custom = self.settings.workflow is not None or self.settings.workflow_path is not None
        return input_mapping(self.settings.inputs, custom=custom)

    def _graph(self, model: str, request: ProviderRequest, seed: int) -> dict[str, Any]:
        checkpoint = model if model in self.settings.checkpoints else self.settings.checkpoint
        return fill_workflow(
            self.name, self._workflow(), self._mapping_or_default(), request, seed, checkpoint
        )

    # waiting -----------------------------------------------------------------------

    async def _position(self, prompt_id: str) -> int | None:
        """0 while running, 1.. while pending, None when the queue does not hold it."""
        queue = parse(self.name, _QUEUE, await self._call("GET", "/queue"))
        if any(_item_id(item) == prompt_id for item in queue.queue_running):
            return 0
        pending = sorted(queue.queue_pending, key=_item_number)
        for index, item in enumerate(pending):
            if _item_id(item) == prompt_id:
                return index + 1
        return None

    async def _start_follower(self, client_id: str, job: _Prompt, run: JobRun) -> None:
        if not self.settings.websocket:
            return
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import WebSocketException
        except ImportError:
            return
        ready = asyncio.Event()
        url = self._ws_url(client_id)

        async def follow() -> None:
            try:
                async with connect(url, open_timeout=WS_CONNECT_TIMEOUT_S) as socket:
                    job.live = True
                    ready.set()
                    async for raw in socket:
                        if isinstance(raw, str):
                            await self._on_message(raw, run)
            except (OSError, TimeoutError, WebSocketException) as exc:
                # Websocket trouble only costs live progress: polling carries on.
                log.debug(
                    "comfyui_websocket_unavailable", provider=self.name, error=type(exc).__name__
                )
            finally:
                job.live = False
                ready.set()

        job.follower = asyncio.create_task(follow())
        # Connect before submitting, so no progress message is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), WS_CONNECT_TIMEOUT_S)

    async def _on_message(self, raw: str, run: JobRun) -> None:
        try:
            message = _WsMessage.model_validate_json(raw)
        except ValidationError:
            return
        data = message.data
        if run.job_id is None or data.prompt_id != run.job_id:
            return
        if message.type == "progress" and data.value is not None and data.max:
            percent = 10 + int(85 * min(1.0, data.value / data.max))
            await run.report(percent, f"step {data.value:g}/{data.max:g}")
        elif message.type == "execution_start":
            await run.report(10, "running")
        elif message.type in ("execution_success", "execution_error", "execution_interrupted") or (
            message.type == "executing" and data.node is None
        ):
            run.wake.set()

    def _ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path.rstrip('/')}/ws"
        return urlunsplit((scheme, parts.netloc, path, urlencode({"clientId": client_id}), ""))

    # results -----------------------------------------------------------------------

    async def _collect(self, entry: _Entry, seed: int) -> list[ProviderImage]:
        status = entry.status or _RunStatus()
        for event, data in status.messages:
            if event == "execution_error":
                node = data.get("node_type") or data.get("node_id") or "node"
                detail = str(data.get("exception_message") or "execution error").strip()
                raise Transient(f"{self.name}: {node}: {detail[:500]}", provider=self.name)
            if event == "execution_interrupted":
                raise InvalidRequest(
                    f"{self.name}: the prompt was interrupted",
                    provider=self.name,
                    code="provider_canceled",
                )
        if status.status_str == "error":
            raise Transient(f"{self.name}: the workflow failed", provider=self.name)
        refs = self._refs(entry)
        if not refs:
            raise InvalidRequest(
                f"{self.name}: the workflow produced no images (is there a SaveImage node?)",
                provider=self.name,
            )
        images = []
        for ref in refs:
            query = urlencode(
                {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
            )
            body, content_type = await download(
                self.http, self.name, f"{self.base_url}/view?{query}", headers=self._headers()
            )
            images.append(
                ProviderImage(data=body, content_type=content_type or "image/png", seed=seed)
            )
        return images

    def _refs(self, entry: _Entry) -> list[_ImageRef]:
        nodes = entry.outputs
        if self.settings.output_node is not None:
            nodes = {k: v for k, v in nodes.items() if k == self.settings.output_node}
        refs = [ref for output in nodes.values() for ref in output.images]
        saved = [ref for ref in refs if ref.type == "output"]
        return saved or refs

    # HTTP --------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        headers = self._headers()
        return await call(
            self.http, self.name, method, url, headers=headers, error=self._error, **kwargs
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        if response.status_code != 400:
            return error_for_status(self.name, response)
        try:
            body = _Rejected.model_validate_json(response.content)
        except ValidationError:
            return error_for_status(self.name, response)
        error = body.error
        parts = [error.message if isinstance(error, _PromptError) else (error or "invalid prompt")]
        if isinstance(body.node_errors, dict):
            for node_id, node in body.node_errors.items():
                for item in node.errors:
                    detail = f": {item.details}" if item.details else ""
                    parts.append(f"node {node_id} ({node.class_type}): {item.message}{detail}")
        message = "; ".join(p for p in parts if p)[:500]
        return InvalidRequest(f"{self.name}: {message}", provider=self.name, status_code=400)

    async def _cancel(self, prompt_id: str) -> None:
        position = await self._position(prompt_id)
        if position is None:
            return
        if position > 0:
            await self._call("POST", "/queue", json={"delete": [prompt_id]})
        else:
            # Newer servers interrupt only this prompt; older ones ignore the body.
            await self._call("POST", "/interrupt", json={"prompt_id": prompt_id})


class _Prompt(PollingJob[_Entry]):
    """A prompt: its graph queued (websocket follower first), its history polled."""

    def __init__(self, provider: ComfyUIProvider, request: ProviderRequest, model: str) -> None:
        self.provider = provider
        self.request = request
        self.model = model
        self.seed = request.seed if request.seed is not None else random.randrange(SEED_LIMIT)
        self.follower: asyncio.Task[None] | None = None
        #: a websocket is connected and reports step progress for this prompt
        self.live = False
        #: consecutive polls that found the prompt neither queued nor in the history
        self.missing = 0

    async def submit(self, run: JobRun) -> Submitted[_Entry]:
        comfy = self.provider
        graph = comfy._graph(self.model, self.request, self.seed)
        client_id = uuid.uuid4().hex
        await comfy._start_follower(client_id, self, run)
        body = {"prompt": graph, "client_id": client_id}
        response = await comfy._call("POST", "/prompt", json=body)
        return Submitted(parse(comfy.name, _SUBMITTED, response).prompt_id)

    async def poll(self, run: JobRun, job_id: str) -> _Entry | Pending:
        comfy = self.provider
        response = await comfy._call("GET", f"/history/{job_id}")
        entry = parse(comfy.name, _HISTORY, response).get(job_id)
        if entry is not None:
            return entry
        position = await comfy._position(job_id)
        if position is None:
            # It may have finished between the two calls: only give up after a few.
            self.missing += 1
            if self.missing > MAX_MISSING_POLLS:
                raise Transient(
                    f"{comfy.name}: prompt {job_id} is neither queued nor in the history",
                    provider=comfy.name,
                )
            return Pending()
        self.missing = 0
        if position > 0:
            return Pending(max(1, 10 - position), f"queue position {position}")
        return Pending() if self.live else Pending(50, "running")

    async def result(self, run: JobRun, job_id: str, done: _Entry) -> ProviderResult:
        images = await self.provider._collect(done, self.seed)
        return ProviderResult(
            images=images,
            model=self.model,
            cost_usd=self.provider.settings.price_usd * len(images),
            provider_job_id=job_id,
            metadata={"seed": self.seed},
        )


async def _stop(follower: asyncio.Task[None]) -> None:
    """Stop the websocket follower; unlike ``await``, never swallows our own cancellation."""
    follower.cancel()
    await asyncio.wait([follower])
    if not follower.cancelled() and follower.exception() is not None:
        log.debug("comfyui_websocket_follower_failed", error=repr(follower.exception()))


def _item_id(item: list[Any]) -> str | None:
    return str(item[1]) if len(item) > 1 else None


def _item_number(item: list[Any]) -> float:
    try:
        return float(item[0])
    except (IndexError, TypeError, ValueError):
        return 0.0

"""ComfyUI workflow templating: the built-in txt2img graph, and how a request's parameters
are injected into a workflow through ``inputs`` (our parameter name -> one or more
``"node_id.input_name"`` targets). Errors name the provider instance; a mapping that
does not fit the workflow is a config error reported as :class:`InvalidRequest`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pixelgate.providers.base import InvalidRequest, ProviderRequest

LATENT_STEP = 8
#: request parameter names that the workflow knows by another name
ALIASES = {"n": "batch_size"}

#: txt2img: CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler
#: -> VAEDecode -> SaveImage (ComfyUI's own default graph, in API format)
DEFAULT_WORKFLOW: dict[str, Any] = {
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "pixelgate", "images": ["8", 0]},
    },
}

DEFAULT_INPUTS: dict[str, str] = {
    "prompt": "6.text",
    "negative_prompt": "7.text",
    "seed": "3.seed",
    "steps": "3.steps",
    "cfg": "3.cfg",
    "sampler_name": "3.sampler_name",
    "scheduler": "3.scheduler",
    "denoise": "3.denoise",
    "width": "5.width",
    "height": "5.height",
    "batch_size": "5.batch_size",
    "checkpoint": "4.ckpt_name",
    "filename_prefix": "9.filename_prefix",
}


def load_workflow(provider: str, path: str) -> dict[str, Any]:
    """The API-format workflow in the JSON file ``path``."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"{provider}: cannot read workflow_path {path!r}: {type(exc).__name__}",
            provider=provider,
        ) from None
    if not isinstance(loaded, dict):
        raise InvalidRequest(f"{provider}: workflow_path is not a JSON object", provider=provider)
    return loaded


def api_format(provider: str, workflow: dict[str, Any]) -> dict[str, Any]:
    """``workflow`` itself, unless it is in UI format (which ComfyUI cannot run)."""
    if "nodes" in workflow and isinstance(workflow.get("nodes"), list):
        raise InvalidRequest(
            f"{provider}: the workflow is in UI format; export it with 'Save (API)'",
            provider=provider,
        )
    return workflow


def input_mapping(
    inputs: dict[str, str | list[str]], *, custom: bool
) -> dict[str, str | list[str]]:
    """The configured ``inputs``; for the built-in workflow, over :data:`DEFAULT_INPUTS`."""
    if custom:
        return dict(inputs)
    return {**DEFAULT_INPUTS, **inputs}


def fill_workflow(
    provider: str,
    workflow: dict[str, Any],
    mapping: dict[str, str | list[str]],
    request: ProviderRequest,
    seed: int,
    checkpoint: str | None,
) -> dict[str, Any]:
    """A copy of ``workflow`` with the request's values written to the mapped inputs."""
    if "prompt" not in mapping:
        raise InvalidRequest(
            f"{provider}: config error: inputs must map 'prompt' to a 'node_id.input_name'",
            provider=provider,
        )
    values: dict[str, Any] = {
        key: value for key, value in request.options.items() if key in mapping
    }
    values.update(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or "",
        seed=seed,
        width=_latent_size(request.width),
        height=_latent_size(request.height),
        batch_size=request.n,
    )
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    graph = copy.deepcopy(workflow)
    for param, targets in mapping.items():
        value = values.get(ALIASES.get(param, param))
        if value is None:
            continue
        for target in [targets] if isinstance(targets, str) else targets:
            _inject(provider, graph, param, target, value)
    return graph


def _inject(provider: str, graph: dict[str, Any], param: str, target: str, value: Any) -> None:
    node_id, dot, input_name = target.rpartition(".")
    if not dot or not node_id or not input_name:
        raise InvalidRequest(
            f"{provider}: config error: inputs.{param} = {target!r} is not 'node_id.input_name'",
            provider=provider,
        )
    try:
        node = graph[node_id]
    except KeyError:
        raise InvalidRequest(
            f"{provider}: config error: inputs.{param} = {target!r} names node "
            f"{node_id!r}, which the workflow does not have",
            provider=provider,
        ) from None
    if not isinstance(node, dict):
        raise InvalidRequest(
            f"{provider}: workflow node {node_id!r} is not an object", provider=provider
        )
    node.setdefault("inputs", {})[input_name] = value


def _latent_size(value: int) -> int:
    return max(LATENT_STEP * 8, value // LATENT_STEP * LATENT_STEP)

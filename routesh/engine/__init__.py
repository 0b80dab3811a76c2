"""Model engines. `load_engine(--model value)` gives an Engine, whatever runs the model."""

from __future__ import annotations

from pathlib import Path

from routesh.engine.base import ADAPTER_MODES, ChatRequest, Completion, Engine, GenerationParams, Message
from routesh.errors import ModelError
from routesh.engine.models import (
    BASE_MODEL,
    CATALOG,
    DEFAULT_MODEL,
    ROUTE_MODEL,
    TEST_MODEL,
    ModelSource,
    Notify,
    catalog_names,
    local_folder,
    resolve,
)

__all__ = [
    "ADAPTER_MODES", "BACKENDS", "BASE_MODEL", "CATALOG", "DEFAULT_MODEL", "ROUTE_MODEL", "TEST_MODEL", "ChatRequest", "Completion",
    "Engine", "GenerationParams", "Message", "ModelSource", "catalog_names",
    "load_engine", "resolve",
]

BACKENDS = ("auto", "transformers", "vllm")


def load_engine(spec: str | None = None, *, backend: str = "auto", adapter: str | Path | None = None,
                device: str | None = None, dtype: str | None = None, tensor_parallel_size: int = 1,
                progress: bool = True, concurrency: int | None = None, notify: Notify | None = None,
                adapter_mode: str | None = None) -> Engine:
    """Load the model `spec` names (see models.resolve). An http(s) URL talks to a server; anything
    else runs in this process, with vLLM when `backend` is "vllm" or ("auto" and a GPU and vLLM are
    present), else with transformers. `concurrency` is for a server: the most requests in flight at
    once, all calling threads together (None: OpenAIEngine's default); an engine in this process batches
    concurrent calls itself. `notify` receives one-line notices (a damaged cache rebuilt); None: stderr.
    `adapter_mode`: how the transformers engine applies the adapter (engine/lora.py; None: its default)."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    source = resolve(spec)
    adapter = adapter or source.adapter  # one given here replaces the one a catalog name comes with
    if source.kind == "url":
        if adapter:
            raise ModelError("an adapter cannot be applied to a remote model; load it on the server instead")
        from routesh.engine.openai import OpenAIEngine

        return OpenAIEngine(source.location, concurrency=concurrency)
    folder = local_folder(source, progress=progress, notify=notify)
    if backend == "vllm" or (backend == "auto" and _vllm_usable()):
        from routesh.engine.vllm import VLLMEngine

        return VLLMEngine(str(folder), name=source.name, adapter=str(adapter) if adapter else None,
                          tensor_parallel_size=tensor_parallel_size)
    from routesh.engine.hf import ADAPTER_MODE, TransformersEngine

    return TransformersEngine(folder, name=source.name, device=device, dtype=dtype, adapter=adapter,
                              adapter_mode=adapter_mode or ADAPTER_MODE)


def _vllm_usable() -> bool:
    from routesh.engine.vllm import vllm_available

    return vllm_available()

"""Where local models run (CPU or CUDA): the execution-provider setting resolved, as a pure function.

`[models] execution_provider` is resolved against the providers the installed onnxruntime offers.

`auto` takes CUDA when onnxruntime lists it (the onnxruntime-gpu wheel) and the CPU otherwise;
`cuda` where CUDA is not available is a configuration error at start, never a silent fallback
(a model that moves from GPU to CPU may move its vectors: see DESIGN.md, "drift").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from gateway.domain.errors import ConfigError

Setting = Literal["auto", "cpu", "cuda"]
Provider = Literal["cpu", "cuda"]

ORT_NAMES: dict[Provider, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_provider(setting: Setting, available: Iterable[str]) -> Provider:
    """The provider `setting` asks for, given onnxruntime's `get_available_providers()`."""
    has_cuda = ORT_NAMES["cuda"] in set(available)
    if setting == "cpu":
        return "cpu"
    if setting == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise ConfigError([cuda_missing("onnxruntime does not list CUDAExecutionProvider")])
    return "cuda"


def cuda_missing(why: str) -> str:
    """The one message for `cuda` asked but not usable: the setting, why, and what to do."""
    return (
        f"models.execution_provider: 'cuda' is set but {why}. Install the GPU build in place of the CPU one "
        "(`pip uninstall -y onnxruntime && pip install onnxruntime-gpu`) with CUDA and cuDNN on the machine, "
        "or set execution_provider = 'auto' (CUDA when available, else CPU) or 'cpu'"
    )


def session_providers(provider: Provider) -> list[str]:
    """The providers list an InferenceSession gets: CUDA keeps the CPU for the few ops it lacks."""
    if provider == "cuda":
        return [ORT_NAMES["cuda"], ORT_NAMES["cpu"]]
    return [ORT_NAMES["cpu"]]


def effective_provider(session_providers: Iterable[str]) -> Provider:
    """What a created session actually runs on (its first provider), in the setting's words."""
    first = next(iter(session_providers), ORT_NAMES["cpu"])
    return "cuda" if first == ORT_NAMES["cuda"] else "cpu"

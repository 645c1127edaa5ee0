"""`driftgate embed --model KEY [--input-type query|document]`: {"text"} lines in, {"text", "embedding", "truncated"} out.

The model's query or document prompt is prepended; "truncated" says the text was cut to its token limit."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

from gateway.config import Settings
from gateway.domain.errors import GatewayError, InputError
from gateway.encoders.base import Encoded, Kind
from gateway.encoders.catalog import ModelSpec
from gateway.encoders.onnx import OnnxEncoder, load_encoder
from gateway.services.embedding import EmbeddingService

CHUNK = 64


def _texts(lines: list[tuple[int, str]]) -> list[str]:
    texts = []
    for number, line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            raise InputError(f"line {number}: not valid JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"]:
            raise InputError(f'line {number}: expected an object with a non-empty string "text"')
        texts.append(item["text"])
    return texts


def run(
    settings: Settings,
    model: str,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    *,
    input_type: Kind = "document",
) -> int:
    if model not in settings.model_specs():
        print(f"error: unknown model {model!r}; see `driftgate models list`", file=sys.stderr)
        return 2
    encoder = _Lines(settings, model, input_type)
    pending: list[tuple[int, str]] = []

    def flush() -> None:
        texts = _texts(pending)
        encoded = encoder.encode(texts)
        truncated = encoded.truncated or (False,) * len(texts)
        for text, vector, cut in zip(texts, encoded.vectors, truncated, strict=True):
            line = {"text": text, "embedding": [round(float(x), 7) for x in vector], "truncated": cut}
            stdout.write(json.dumps(line) + "\n")
        stdout.flush()
        pending.clear()

    try:
        for number, line in enumerate(stdin, start=1):
            if line.strip():
                pending.append((number, line))
            if len(pending) >= CHUNK:
                flush()
        if pending:
            flush()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:  # a model that cannot be loaded, a provider's outage, refusal or malformed reply
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        encoder.close()
    return 0


class _Lines:
    """The model registry for this one-shot command: its own event loop, closed at the end.

    Local or remote, the model is whatever its spec says; vectors of `input_type`, prefixed as
    the model expects, exactly as the gateway makes them."""

    def __init__(self, settings: Settings, key: str, input_type: Kind) -> None:
        self._loop = asyncio.new_event_loop()
        self._key = key
        self._input_type: Kind = input_type

        def loader(spec: ModelSpec, cache_dir: Path, threads: int) -> OnnxEncoder:
            def progress(message: str) -> None:
                print(message, file=sys.stderr)

            allow = settings.models.allow_download
            return load_encoder(
                spec,
                cache_dir,
                threads,
                progress=progress,
                allow_download=allow,
                provider=settings.models.execution_provider,
            )

        self._embeddings = EmbeddingService.from_settings(settings, loader=loader)

    def encode(self, texts: list[str]) -> Encoded:
        return self._loop.run_until_complete(self._embeddings.embed(self._key, texts, self._input_type))

    def close(self) -> None:
        self._loop.run_until_complete(self._embeddings.close())
        self._loop.close()

"""`driftgate embed --model KEY [--input-type query|document]`: {"text"} lines in, {"text", "embedding", "truncated"} out.

The model's query or document prompt is prepended; "truncated" says the text was cut to its token limit."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Literal, TextIO

from gateway.config import Settings
from gateway.domain.errors import GatewayError
from gateway.encoders.onnx import OnnxEncoder, load_encoder
from gateway.encoders.remote import is_remote
from gateway.services.remote_models import RemoteModels

CHUNK = 64
Kind = Literal["query", "document"]


class InputError(ValueError):
    pass


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
    specs = settings.model_specs()
    if model not in specs:
        print(f"error: unknown model {model!r}; see `driftgate models list`", file=sys.stderr)
        return 2
    spec = specs[model]
    encoder: _RemoteLines | OnnxEncoder
    if is_remote(spec):
        encoder = _RemoteLines(spec, input_type)
    else:
        encoder = load_encoder(
            spec,
            settings.model_cache_dir(),
            settings.models.intra_op_threads,
            progress=lambda msg: print(msg, file=sys.stderr),
        )
    pending: list[tuple[int, str]] = []

    def flush() -> None:
        texts = _texts(pending)
        prefix = spec.query_prefix if input_type == "query" else spec.document_prefix
        encoded = encoder.encode([prefix + t for t in texts])
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
    except GatewayError as exc:  # a remote provider's outage, refusal or malformed reply
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if isinstance(encoder, _RemoteLines):
            encoder.close()
    return 0


class _RemoteLines:
    """A remote model for this one-shot command: its own event loop, one client, closed at the end."""

    def __init__(self, spec, input_type: Kind) -> None:
        self._loop = asyncio.new_event_loop()
        self._models = RemoteModels()
        self._spec = spec
        self._input_type: Kind = input_type

    def encode(self, texts: list[str]):
        return self._loop.run_until_complete(self._models.embed(self._spec, texts, self._input_type))

    def close(self) -> None:
        self._loop.run_until_complete(self._models.close())
        self._loop.close()

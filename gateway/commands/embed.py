"""`driftgate embed --model KEY`: JSON lines {"text"} on stdin -> {"text", "embedding"} on stdout."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from gateway.config import Settings
from gateway.encoders.onnx import load_encoder

CHUNK = 64


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


def run(settings: Settings, model: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    specs = settings.model_specs()
    if model not in specs:
        print(f"error: unknown model {model!r}; see `driftgate models list`", file=sys.stderr)
        return 2
    spec = specs[model]
    encoder = load_encoder(
        spec, settings.model_cache_dir(), settings.models.intra_op_threads,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    pending: list[tuple[int, str]] = []

    def flush() -> None:
        texts = _texts(pending)
        prefixed = [spec.document_prefix + t for t in texts]
        vectors = encoder.encode(prefixed).vectors
        for text, vector in zip(texts, vectors, strict=False):
            stdout.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}) + "\n")
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
    return 0

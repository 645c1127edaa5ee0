"""A model's fingerprint: one hash over everything that decides the vectors it produces.

Files (by content hash) and encoding parameters (pooling, normalisation, prefixes, max
length, output, dimension) go in; the model's display name does not, so renaming a model
keeps its tables while changing any byte of its weights or tokenizer does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping


def fingerprint(file_hashes: Mapping[str, str], params: Mapping[str, object]) -> str:
    """Return a stable hex fingerprint of file contents and encoding parameters."""
    canonical = json.dumps(
        {"files": dict(sorted(file_hashes.items())), "params": dict(sorted(params.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# Fixed texts embedded when a model is registered and again at every start: if the vectors
# move (new onnxruntime, another CPU kernel, a quantised variant), the table is drifted.
PROBE_TEXTS: tuple[str, ...] = (
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog.",
    "measurement of dielectric constant of liquids by the use of microwave techniques",
    "Zero-downtime migrations re-embed every document before reads switch.",
    "1234567890 !?",
)

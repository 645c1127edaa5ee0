"""driftgate: a pinned-model embedding gateway in front of PostgreSQL/pgvector.

onnxruntime reports telemetry and writes files unless told not to, and it reads the
variable at import time, so it is set here, before any submodule can import it.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# transformers is used for tokenizers only; its "PyTorch was not found" advice is noise here
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"

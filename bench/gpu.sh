#!/usr/bin/env bash
# The encoder benchmark on a GPU: driftgate's ONNX encoder on onnxruntime-gpu's CUDAExecutionProvider
# next to upstream sentence-transformers on torch's CUDA device, the same checkpoints, texts and calls,
# in one run. Prints the JSON and writes it to bench/results/bench-encoder-gpu.json.
#
#   bash bench/gpu.sh                       # from the repository root, on a machine with an NVIDIA GPU
#   bash bench/gpu.sh --batches 1,32,128    # extra arguments go to bench/encoder_throughput.py
#
# Needs: an NVIDIA driver (nvidia-smi works), python3 >= 3.11, and PyPI reachable (it installs
# onnxruntime-gpu with its CUDA and cuDNN wheels, and sentence-transformers with torch, into its own
# venv, .venv-gpu, so the project's .venv keeps the CPU onnxruntime). The models' files come from the
# model cache ($DRIFTGATE_MODEL_CACHE or the user's cache): fetched on first use, or copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
OUT=${OUT_JSON:-bench/results/bench-encoder-gpu.json}
MODELS=${MODELS:-paraphrase-MiniLM-L3-v2,all-MiniLM-L6-v2,sre-embedding-model,all-mpnet-base-v2}
export ORT_DISABLE_TELEMETRY=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -e . sentence-transformers
# onnxruntime and onnxruntime-gpu install the same module: only the GPU build may stay
"$VENV/bin/pip" uninstall -y -q onnxruntime
"$VENV/bin/pip" install -q "onnxruntime-gpu[cuda,cudnn]>=1.19,<2"
# load CUDA and cuDNN from those wheels (onnxruntime >= 1.21), then insist that CUDA is offered
"$VENV/bin/python" - <<'EOF'
import onnxruntime as ort
if hasattr(ort, "preload_dlls"):
    ort.preload_dlls()
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
import torch
assert torch.cuda.is_available(), "torch does not see the GPU: sentence-transformers would run on the CPU"
EOF
"$VENV/bin/driftgate" models fetch ${MODELS//,/ } >&2
# --provider cuda: a session that cannot start CUDA stops the run instead of timing the CPU
"$VENV/bin/python" bench/encoder_throughput.py --provider cuda --models "$MODELS" --batches 1,32,128 --texts 512 --warmup 64 \
    --repeats 5 --import "" "$@" | tee "$OUT"

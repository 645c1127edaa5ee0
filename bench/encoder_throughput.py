#!/usr/bin/env python
"""Benchmark: texts/s of OnnxEncoder.encode per catalog model, at batch size 1 and 32.

Not a test. Prints one JSON object to stdout; progress goes to stderr.

Texts are real abstracts from the bundled Vaswani corpus (the first --texts of them, in
file order, so every model and batch size sees the same texts). For each model the
encoder is loaded (fetching its pinned files on first use), warmed up, and then the same
--texts texts are encoded --repeats times per batch size; the reported texts_per_s is the
median over the repeats (best and worst are reported too).

Batch size B means: the texts are cut into lists of B and each list is one
`encoder.encode(list)` call, as the gateway's micro-batcher would send it. A model whose
spec has max_batch < B (use-multilingual-v3: max_batch 1, its int8 dynamic quantisation
makes a vector depend on its batch-mates) still gets lists of B, which the encoder then
runs one text at a time; such rows carry a "note".

    python bench/encoder_throughput.py --batches 1,8,32     # docs/benchmarks.md's figures
    python bench/encoder_throughput.py --models paraphrase-MiniLM-L3-v2 --texts 16 --warmup 4 --repeats 1 --import ""

With --import KEY (default all-mpnet-base-v2, a catalog model converted from a checkpoint)
it also times `driftgate models import` of that model's checkpoint into a scratch cache:
unpacking, reading the safetensors, building and writing the ONNX graph, hashing, and the
first encode, as the CLI does. "fp32_vs_int8" compares the exact all-MiniLM-L6-v2 with
the int8 export all-MiniLM-L6-v2-int8 per batch size (> 1: the fp32 graph is faster).

--provider picks onnxruntime's execution provider as `[models] execution_provider` does (auto:
CUDA when onnxruntime-gpu offers it, else the CPU; cuda without CUDA stops with the reason).
When sentence-transformers is installed (optional: `pip install sentence-transformers`, it
brings torch), every model converted from a checkpoint is also timed upstream: the same
checkpoint in sentence-transformers on the same device (cuda or cpu), the same texts cut into
the same calls, in the same run; each row then carries "upstream" and "driftgate_over_upstream"
(> 1: driftgate is faster). bench/gpu.sh runs it all on a GPU machine:

    python bench/encoder_throughput.py --provider cpu --models all-MiniLM-L6-v2 --batches 1,32 --import ""
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import _upstream
from _common import CpuMeter, emit, load_average, log, machine_info

from gateway.datasets import vaswani
from gateway.domain.errors import ConfigError
from gateway.domain.providers import Setting
from gateway.encoders.cache import default_cache_dir
from gateway.encoders.catalog import CATALOG
from gateway.encoders.onnx import load_encoder, resolve_execution_provider

DEFAULT_MODELS = [
    "paraphrase-MiniLM-L3-v2",
    "all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2-int8",
    "sre-embedding-model",
    "all-mpnet-base-v2",
    "use-multilingual-v3",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated catalog keys; known: " + ", ".join(CATALOG)
    )
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes (texts per encode call)")
    parser.add_argument("--texts", type=int, default=256, help="texts timed per repeat")
    parser.add_argument("--warmup", type=int, default=32, help="texts encoded (at each batch size) before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the texts; median is reported")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra_op_num_threads (0: one per core, the gateway's default)",
    )
    parser.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="onnxruntime execution provider, as [models] execution_provider (upstream runs on the same device)",
    )
    parser.add_argument(
        "--no-upstream",
        dest="upstream",
        action="store_false",
        help="skip the sentence-transformers figures even where it is installed",
    )
    parser.add_argument(
        "--import",
        dest="import_key",
        default="all-mpnet-base-v2",
        help="time `models import` of this converted catalog model's checkpoint ('' to skip)",
    )
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in CATALOG]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(CATALOG)}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs positive integers")
    if args.texts < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--texts and --repeats must be >= 1, --warmup >= 0")
    try:
        args.device = resolve_execution_provider(args.provider)  # where the models run, cpu or cuda
    except ConfigError as exc:
        parser.error(str(exc).replace("models.execution_provider", "--provider"))
    if args.device == "cuda":
        preload_cuda()
    args.upstream_skipped = None if args.upstream else "--no-upstream"
    if args.upstream and _upstream.missing():
        args.upstream_skipped = _upstream.missing()
    return args


def preload_cuda() -> None:
    """onnxruntime-gpu[cuda,cudnn] brings CUDA and cuDNN as wheels; onnxruntime >= 1.21 loads them on request."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def time_pass(encoder, calls: list[list[str]]) -> tuple[float, int]:
    """Seconds to encode every list in `calls` (one encode() each), and how many were truncated."""
    truncated = 0
    started = time.perf_counter()
    for texts in calls:
        truncated += sum(encoder.encode(texts).truncated)
    return time.perf_counter() - started, truncated


def padding_ratio(encoder, calls: list[list[str]]) -> float | None:
    """Token positions run / real tokens, replaying how encode() sorts and chunks each call.

    > 1 means the graph ran on padding (each chunk is padded to its longest text).
    None for graphs that tokenize by themselves.
    """
    spec = encoder.spec
    if encoder.tokenizer is None:
        return None
    real = padded = 0
    for texts in calls:
        ordered = sorted(texts, key=len)
        for start in range(0, len(ordered), spec.max_batch):
            chunk = ordered[start : start + spec.max_batch]
            ids = encoder.tokenizer(chunk, truncation=True, max_length=spec.max_tokens, verbose=False)["input_ids"]
            lengths = [len(x) for x in ids]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
    return round(padded / real, 3)


def measure(label: str, one_pass, texts: list[str], repeats: int) -> tuple[list[float], CpuMeter]:
    """texts/s of `repeats` timed passes (`one_pass()` returns its seconds), and the CPU they used."""
    runs = []
    with CpuMeter() as meter:
        for repeat in range(repeats):
            seconds = one_pass()
            runs.append(len(texts) / seconds)
            log(f"{label} pass {repeat + 1}/{repeats}: {len(texts)} texts in {seconds:.3f} s = {runs[-1]:.1f} texts/s")
    return runs, meter


def bench_model(key: str, args: argparse.Namespace, texts: list[str], warm_texts: list[str]) -> list[dict]:
    spec = CATALOG[key]
    log(f"[{key}] loading encoder (threads={args.threads}, provider={args.provider}) ...")
    started = time.perf_counter()
    encoder = load_encoder(spec, default_cache_dir(), args.threads, progress=log, provider=args.provider)
    load_s = time.perf_counter() - started
    with (
        _upstream.upstream_model(spec, encoder.provider, args.threads)
        if args.upstream_skipped is None
        else contextlib.nullcontext()
    ) as upstream:
        agreement = _upstream.min_cosine(upstream, encoder, texts[:32]) if upstream is not None else None
        return [
            bench_batch(encoder, upstream, agreement, batch, load_s, args, texts, warm_texts) for batch in args.batches
        ]


def bench_batch(encoder, upstream, agreement, batch: int, load_s: float, args, texts, warm_texts) -> dict:
    """One row: driftgate's texts/s at `batch` texts per call, and upstream's on the same calls."""
    spec = encoder.spec
    calls = chunks(texts, batch)
    for warm in chunks(warm_texts, batch):
        encoder.encode(warm)
    truncated: list[int] = []

    def ours() -> float:
        seconds, n = time_pass(encoder, calls)
        truncated.append(n)
        return seconds

    runs, meter = measure(f"[{spec.key}] batch {batch}", ours, texts, args.repeats)
    median = statistics.median(runs)
    row = {
        "model": spec.key,
        "provider": encoder.provider,
        "batch": batch,
        "texts": len(texts),
        "calls": len(calls),
        "repeats": args.repeats,
        "texts_per_s": round(median, 2),
        "texts_per_s_best": round(max(runs), 2),
        "texts_per_s_worst": round(min(runs), 2),
        "ms_per_text": round(1000 / median, 3),
        "ms_per_call": round(1000 * len(texts) / median / len(calls), 3),
        "model_max_batch": spec.max_batch,
        "truncated_texts": truncated[-1],
        "padding_ratio": padding_ratio(encoder, calls),
        "load_s": round(load_s, 2),
        "cpu": meter.summary(),
    }
    if upstream is not None:
        row.update(upstream_figures(upstream, agreement, batch, median, args, texts, warm_texts))
    if batch > spec.max_batch:
        row["note"] = (
            f"spec max_batch is {spec.max_batch}: each encode() got a list of {batch} texts, "
            f"which the encoder ran in chunks of {spec.max_batch} (one inference per "
            f"{'text' if spec.max_batch == 1 else f'{spec.max_batch} texts'}); "
            "this measures per-call overhead amortisation, not batched inference"
        )
    if truncated[-1]:
        row.setdefault(
            "note_truncation",
            f"{truncated[-1]} of {len(texts)} texts exceed max_tokens {spec.max_tokens} and were truncated",
        )
    return row


def upstream_figures(upstream, agreement: float, batch: int, ours: float, args, texts, warm_texts) -> dict:
    """sentence-transformers on the same device and the same calls, and driftgate's ratio to it."""
    calls = chunks(texts, batch)
    for warm in chunks(warm_texts, batch):
        _upstream.encode(upstream, warm)
    runs, meter = measure(
        f"[upstream] batch {batch}", lambda: _upstream.time_pass(upstream, calls), texts, args.repeats
    )
    median = statistics.median(runs)
    return {
        "upstream": {
            "library": "sentence-transformers",
            "device": str(upstream.device),
            "texts_per_s": round(median, 2),
            "texts_per_s_best": round(max(runs), 2),
            "texts_per_s_worst": round(min(runs), 2),
            "min_cosine_to_driftgate": agreement,
            "cpu": meter.summary(),
        },
        "driftgate_over_upstream": round(ours / median, 3),
    }


def token_budget(keys: list[str], repeats: int, provider: Setting) -> list[dict]:
    """One encode() of 1,000 three-word texts and of 64 long abstracts, per model, planned two ways:
    8 texts per call (the old fixed batch) and the spec's token budget (the default now)."""
    import dataclasses
    import random
    import statistics as stats

    words = "radio wave antenna signal noise filter circuit power field measure dielectric".split()
    rng = random.Random(7)
    short = [" ".join(rng.choice(words) for _ in range(3)) for _ in range(1000)]
    abstracts = [text for _, text in vaswani(limit=256).corpus]
    long = [" ".join(abstracts[i : i + 4]) for i in range(0, 256, 4)]  # 64 texts, most past 256 tokens
    rows = []
    for key in keys:
        spec = CATALOG[key]
        if spec.max_batch_tokens is None:
            continue  # batch-dependent / in-graph tokenizer: one text per call either way
        encoder = load_encoder(spec, default_cache_dir(), provider=provider)
        plans = {"fixed_8": dataclasses.replace(spec, max_batch=8, max_batch_tokens=None), "token_budget": spec}
        for workload, texts in (("short_3_words", short), ("long_abstracts", long)):
            speeds = {}
            for name, planned in plans.items():
                encoder.spec = planned
                encoder.encode(texts[:32])
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    encoder.encode(texts)
                    times.append(time.perf_counter() - started)
                speeds[name] = round(len(texts) / stats.median(times), 1)
            encoder.spec = spec
            rows.append(
                {
                    "model": key,
                    "workload": workload,
                    "texts": len(texts),
                    "texts_per_s": speeds,
                    "token_budget_over_fixed_8": round(speeds["token_budget"] / speeds["fixed_8"], 2),
                }
            )
            log(f"[token budget] {key} {workload}: {speeds}")
    return rows


def time_import(key: str) -> dict:
    """Seconds `driftgate models import` takes for `key`'s checkpoint, into a scratch model cache."""
    import shutil
    import tempfile
    from pathlib import Path

    from gateway.encoders.cache import source_spec
    from gateway.encoders.convert.fetched import joined_source
    from gateway.encoders.fetch import ensure_files
    from gateway.encoders.imported import import_checkpoint

    ensure_files([source_spec(CATALOG[key])], default_cache_dir(), progress=log)
    with tempfile.TemporaryDirectory(prefix="driftgate-bench-import-") as tmp:
        source = joined_source(CATALOG[key], default_cache_dir(), Path(tmp))
        files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
        source_bytes = sum(p.stat().st_size for p in files)
        cache = Path(tmp) / "cache"
        log(f"[import] {key} from {source} ...")
        started = time.perf_counter()
        result = import_checkpoint(source, "bench-import", cache, progress=log)
        converted_s = time.perf_counter() - started
        load_encoder(result.spec, cache).encode(["driftgate"])
        total_s = time.perf_counter() - started
        same = result.spec.fingerprint == CATALOG[key].fingerprint
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "model": key,
        "source_mb": round(source_bytes / 2**20, 1),
        "convert_s": round(converted_s, 2),
        "import_and_first_encode_s": round(total_s, 2),
        "fingerprint_equals_catalog": same,
    }


def fp32_vs_int8(results: list[dict]) -> list[dict]:
    by = {(r["model"], r["batch"]): r["texts_per_s"] for r in results}
    return [
        {
            "batch": b,
            "fp32_texts_per_s": by[("all-MiniLM-L6-v2", b)],
            "int8_texts_per_s": by[("all-MiniLM-L6-v2-int8", b)],
            "fp32_over_int8": round(by[("all-MiniLM-L6-v2", b)] / by[("all-MiniLM-L6-v2-int8", b)], 3),
        }
        for m, b in by
        if m == "all-MiniLM-L6-v2" and ("all-MiniLM-L6-v2-int8", b) in by
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    docs = [text for _, text in vaswani(limit=args.texts + args.warmup).corpus]
    if len(docs) < args.texts + args.warmup:
        log(f"corpus has only {len(docs)} texts; timing fewer")
    warm_texts = docs[: args.warmup]
    texts = docs[args.warmup : args.warmup + args.texts]
    chars = [len(t) for t in texts]
    results: list[dict] = []
    load_before = load_average()
    for key in args.models:
        results.extend(bench_model(key, args, texts, warm_texts))
    output = {
        "benchmark": "encoder_throughput",
        "machine": machine_info(),
        "config": {
            "models": args.models,
            "batches": args.batches,
            "texts": len(texts),
            "warmup_texts": len(warm_texts),
            "repeats": args.repeats,
            "intra_op_threads": args.threads,
            "provider": args.provider,
            "resolved_provider": args.device,
            "upstream": _upstream.versions() if args.upstream_skipped is None else {"skipped": args.upstream_skipped},
            "text_source": "gateway/data/vaswani/corpus.jsonl.gz (file order, after the warm-up texts)",
            "text_chars_mean": round(statistics.mean(chars), 1),
            "text_chars_max": max(chars),
        },
        "results": results,
        "fp32_vs_int8": fp32_vs_int8(results),
        "driftgate_over_upstream": [
            {"model": r["model"], "batch": r["batch"], "ratio": r["driftgate_over_upstream"]}
            for r in results
            if "upstream" in r
        ],
        "import": time_import(args.import_key) if args.import_key else None,
        "token_budget": token_budget(args.models, args.repeats, args.provider),
        "load_average_before": load_before,
        "notes": [
            "cpu: cores busy during each row's timed passes; other_processes_cores > 0 means something "
            "else shared the CPU and the row's numbers are noisy (the spread best/worst shows how much)",
            "texts_per_s is the median over the repeats of texts / wall seconds (time.perf_counter) "
            "for the whole pass; encoding is single-process, onnxruntime uses intra-op threads",
            "encode() sorts each list by length before cutting it into max_batch chunks; that only "
            "reduces padding when one call holds more than max_batch texts: a call of exactly 32 texts "
            "is one chunk padded to its longest text (padding_ratio = token positions run / real tokens)",
        ],
    }
    emit(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

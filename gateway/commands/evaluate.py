"""`driftgate evaluate`: retrieval quality of models on a BEIR-layout dataset, as a table,
JSON and a PNG bar chart."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tqdm import tqdm

from gateway.config import Settings
from gateway.datasets import load_beir, vaswani
from gateway.domain.storage import Storage, stored_model
from gateway.services.adapter import AdapterService
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.services.evaluation import evaluate, evaluate_adapter
from gateway.services.migrations import MigrationService
from gateway.store.database import EmbeddedPostgres, open_database


def run(
    settings: Settings,
    *,
    dataset: str,
    models: list[str],
    k: int,
    limit: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    adapter: bool = False,
    max_pairs: int | None = None,
) -> int:
    specs = settings.model_specs()
    try:
        stored = [stored_model(m) for m in models]
    except ValueError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    if adapter and any(storage != Storage.VECTOR for _, storage in stored):
        print("driftgate: --adapter takes plain model keys (no @storage)", file=sys.stderr)
        return 2
    unknown = [m for m, _ in stored if m not in specs]
    if unknown:
        print(f"driftgate: unknown model(s) {', '.join(unknown)}; see `driftgate models list`", file=sys.stderr)
        return 2
    if adapter and (len(models) != 2 or models[0] == models[1]):
        print("driftgate: --adapter needs --models FROM,TO: two different models", file=sys.stderr)
        return 2
    try:
        data = vaswani(limit) if dataset == "vaswani" else load_beir(Path(dataset), limit)
    except FileNotFoundError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    embedded = None
    dsn = settings.database.dsn
    if not dsn:
        embedded = EmbeddedPostgres.throwaway("driftgate-eval-")
        dsn = embedded.start()
    try:
        report = asyncio.run(_evaluate(settings, dsn, data, models, k, adapter, max_pairs))
    finally:
        if embedded:
            embedded.stop()
    report["dataset"] = Path(dataset).name or dataset
    print(format_adapter_table(report) if adapter else format_table(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {json_path}")
    if plot_path and not adapter:
        plot(report, plot_path)
        print(f"chart written to {plot_path}")
    return 0


async def _evaluate(
    settings: Settings, dsn: str, data, models: list[str], k: int, adapter: bool, max_pairs: int | None
) -> dict:
    pool = await open_database(dsn, settings.database, max_size=4)
    embeddings = EmbeddingService.from_settings(settings)
    bars: dict[str, tqdm] = {}

    def progress(label: str, done: int, total: int) -> None:
        bar = bars.setdefault(label, tqdm(total=total, desc=label, unit="doc", file=sys.stderr, mininterval=1.0))
        bar.update(done - bar.n)

    collections = CollectionService(pool, embeddings)
    try:
        if adapter:
            migrations = MigrationService(pool, collections, embeddings)
            adapters = AdapterService(pool, collections, collections.adapters, settings.adapter)
            from_model, to_model = models
            return await evaluate_adapter(
                pool,
                collections,
                migrations,
                adapters,
                data,
                from_model,
                to_model,
                k,
                max_pairs=max_pairs,
                progress=progress,
            )
        return await evaluate(pool, collections, data, models, k, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
        await embeddings.close()
        await pool.close()


def format_table(report: dict) -> str:
    """Per model: exact search (the model's own quality, comparable with upstream evaluations), served
    search (through the HNSW index, as queries are answered) and the index's recall@k against exact."""
    k = report["k"]
    columns = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"]
    lines = [
        f"{report['dataset']}: {report['documents']} documents, {report['queries']} judged queries",
        f"{'model':<26} {'search':<7}" + " ".join(f"{c:>10}" for c in columns) + f" {'index recall':>13} {'docs/s':>8}",
    ]
    for row in report["models"]:
        lines += _rows(row["model"], row, k, f" {row['docs_per_s']:>8.1f}")
    for comparison in report["comparisons"]:
        lines.append(
            f"{comparison['a']} vs {comparison['b']}: overlap@{k} {comparison[f'overlap@{k}']:.4f}, "
            f"RBO {comparison['rbo']:.4f}"
        )
    return "\n".join(lines)


def _rows(label: str, row: dict, k: int, tail: str = "") -> list[str]:
    """The exact and the served line of one model (or adapter run)."""
    columns = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"]
    exact = f"{label:<26} {'exact':<7}" + " ".join(f"{row['exact'][c]:>10.4f}" for c in columns)
    served = f"{'':<26} {'served':<7}" + " ".join(f"{row[c]:>10.4f}" for c in columns)
    return [exact, served + f" {row[f'index_recall@{k}']:>13.4f}" + tail]


def format_adapter_table(report: dict) -> str:
    """The four runs of `evaluate --adapter`, the adapter's held-out figures and the goals."""
    from gateway.commands.adapter import format_figures

    k = report["k"]
    lines = [
        f"{report['dataset']}: {report['documents']} documents, {report['queries']} judged queries; "
        f"{report['from_model']} -> {report['to_model']}",
        format_figures(report["adapter"]),
        f"{'run':<26} {'search':<7}"
        + " ".join(f"{c:>10}" for c in (f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"))
        + f" {'index recall':>13}",
    ]
    for row in report["runs"]:
        exact, served = _rows(row["run"], row, k)
        lines += [f"{exact}{'':>14} queries {row['query_model']} -> index {row['index_model']}", served]
    lines.append("goals (exact nDCG): " + ", ".join(f"{key}: {value}" for key, value in report["goals"].items()))
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    metrics = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"]
    models = report["models"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, row in enumerate(models):
        positions = [m + (i - (len(models) - 1) / 2) * width for m in range(len(metrics))]
        bars = ax.bar(positions, [row[m] for m in metrics], width, label=row["model"])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"{report['dataset']}: {report['documents']} docs, {report['queries']} queries")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

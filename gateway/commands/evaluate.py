"""`driftgate evaluate`: retrieval quality of models on a BEIR-layout dataset, as a table,
JSON and a PNG bar chart."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from gateway.config import Settings
from gateway.datasets import load_beir, vaswani
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService
from gateway.services.evaluation import evaluate
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
) -> int:
    specs = settings.model_specs()
    unknown = [m for m in models if m not in specs]
    if unknown:
        print(f"driftgate: unknown model(s) {', '.join(unknown)}; see `driftgate models list`", file=sys.stderr)
        return 2
    try:
        data = vaswani(limit) if dataset == "vaswani" else load_beir(Path(dataset), limit)
    except FileNotFoundError as exc:
        print(f"driftgate: {exc}", file=sys.stderr)
        return 2
    embedded = None
    dsn = settings.database.dsn
    if not dsn:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="driftgate-eval-")) / "pgdata", ephemeral=True)
        dsn = embedded.start()
    try:
        report = asyncio.run(_evaluate(settings, dsn, data, models, k))
    finally:
        if embedded:
            embedded.stop()
    report["dataset"] = Path(dataset).name or dataset
    print(format_table(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {json_path}")
    if plot_path:
        plot(report, plot_path)
        print(f"chart written to {plot_path}")
    return 0


async def _evaluate(settings: Settings, dsn: str, data, models: list[str], k: int) -> dict:
    pool = await open_database(dsn, settings.database, max_size=4)
    embeddings = EmbeddingService.from_settings(settings)
    bars: dict[str, tqdm] = {}

    def progress(label: str, done: int, total: int) -> None:
        bar = bars.setdefault(label, tqdm(total=total, desc=label, unit="doc", file=sys.stderr, mininterval=1.0))
        bar.update(done - bar.n)

    try:
        return await evaluate(pool, CollectionService(pool, embeddings), data, models, k, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
        await embeddings.close()
        await pool.close()


def format_table(report: dict) -> str:
    k = report["k"]
    columns = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}"]
    lines = [
        f"{report['dataset']}: {report['documents']} documents, {report['queries']} judged queries",
        f"{'model':<26} " + " ".join(f"{c:>10}" for c in columns) + f" {'docs/s':>8}",
    ]
    for row in report["models"]:
        lines.append(
            f"{row['model']:<26} " + " ".join(f"{row[c]:>10.4f}" for c in columns) + f" {row['docs_per_s']:>8.1f}"
        )
    for comparison in report["comparisons"]:
        lines.append(
            f"{comparison['a']} vs {comparison['b']}: overlap@{k} {comparison[f'overlap@{k}']:.4f}, "
            f"RBO {comparison['rbo']:.4f}"
        )
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

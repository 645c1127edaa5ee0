"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "driftgate_http_requests_total", "HTTP requests answered", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "driftgate_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.encoded_texts = Counter(
            "driftgate_encoded_texts_total", "Texts embedded", ["model"], registry=self.registry
        )
        self.encode_batch = Histogram(
            "driftgate_encode_batch_size", "Texts per inference call (micro-batching)", ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )

        self.backfill_written = Counter(
            "driftgate_backfill_written_total", "Embeddings written by this process's backfill worker",
            ["collection", "model"], registry=self.registry,
        )
        self.backfill_done = Gauge(
            "driftgate_backfill_documents_done", "Documents processed by the backfill (all workers)",
            ["collection", "model"], registry=self.registry,
        )
        self.backfill_total = Gauge(
            "driftgate_backfill_documents_total", "Documents the backfill has planned (all rounds)",
            ["collection", "model"], registry=self.registry,
        )
        self.backfill_errors = Gauge(
            "driftgate_backfill_errors", "Documents recorded as failing and skipped", ["collection", "model"],
            registry=self.registry,
        )
        self.backfill_rate = Gauge(
            "driftgate_backfill_rate_documents_per_second", "Backfill rate over the last 30 s",
            ["collection", "model"], registry=self.registry,
        )
        self.state_version = Gauge(
            "driftgate_state_version", "Collection state version this replica has applied", ["collection"],
            registry=self.registry,
        )

    def record_backfill(self, collection: str, model: str, progress: dict) -> None:
        labels = (collection, model)
        self.backfill_done.labels(*labels).set(progress["done"])
        self.backfill_total.labels(*labels).set(progress["total"])
        self.backfill_errors.labels(*labels).set(progress["errors"])
        self.backfill_rate.labels(*labels).set(progress["rate_per_s"])

    def record_batch(self, model: str, size: int) -> None:
        self.encoded_texts.labels(model).inc(size)
        self.encode_batch.labels(model).observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

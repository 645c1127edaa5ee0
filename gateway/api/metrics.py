"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Children:
    """A labelled metric's children, found with one dict lookup.

    prometheus_client's `labels()` checks and converts the values and takes a lock on every
    call (several microseconds, three times per query); the child it returns never changes for
    the same values, so the hot path keeps them here. Only for metrics whose children are never
    removed."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "driftgate_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "driftgate_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.encoded_texts = Counter(
            "driftgate_encoded_texts_total", "Texts embedded", ["model"], registry=self.registry
        )
        self.encode_batch = Histogram(
            "driftgate_encode_batch_size",
            "Texts per inference call (micro-batching)",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )

        self.backfill_written = Counter(
            "driftgate_backfill_written_total",
            "Embeddings written by this process's backfill worker",
            ["collection", "model"],
            registry=self.registry,
        )
        self.large_in_flight = Gauge(
            "driftgate_large_responses_in_flight",
            "Query answers with k > 100 being built now",
            registry=self.registry,
        )
        self.large_high_water = Gauge(
            "driftgate_large_responses_high_water",
            "Most query answers with k > 100 built at once",
            registry=self.registry,
        )
        self.large_waited = Gauge(
            "driftgate_large_responses_waited", "Queries with k > 100 that waited for a slot", registry=self.registry
        )
        self.backfill_done = Gauge(
            "driftgate_backfill_documents_done",
            "Documents processed by the backfill (all workers)",
            ["collection", "model"],
            registry=self.registry,
        )
        self.backfill_total = Gauge(
            "driftgate_backfill_documents_total",
            "Documents the backfill has planned (all rounds)",
            ["collection", "model"],
            registry=self.registry,
        )
        self.backfill_errors = Gauge(
            "driftgate_backfill_errors",
            "Documents recorded as failing and skipped",
            ["collection", "model"],
            registry=self.registry,
        )
        self.backfill_rate = Gauge(
            "driftgate_backfill_rate_documents_per_second",
            "Backfill rate over the last 30 s",
            ["collection", "model"],
            registry=self.registry,
        )
        self.model_drift = Gauge(
            "driftgate_model_drift",
            "1 while the drift watch finds a remote model's probe vectors moved",
            ["model"],
            registry=self.registry,
        )
        self.model_execution_provider = Gauge(
            "driftgate_model_execution_provider",
            "1 for each loaded model and where it runs (cpu, cuda or remote)",
            ["model", "provider"],
            registry=self.registry,
        )
        self.model_tokens = Counter(
            "driftgate_model_tokens_total",
            "Tokens a remote model used (from usage, else estimated)",
            ["model"],
            registry=self.registry,
        )
        self.migration_tokens = Counter(
            "driftgate_migration_tokens_total",
            "Tokens the backfill of a migration used on a remote model",
            ["collection", "model"],
            registry=self.registry,
        )
        self.state_version = Gauge(
            "driftgate_state_version",
            "Collection state version this replica has applied",
            ["collection"],
            registry=self.registry,
        )

        self.follow_lag = Gauge(
            "driftgate_follow_lag_seconds",
            "Age of the oldest unapplied change of a followed table (0: caught up)",
            ["collection"],
            registry=self.registry,
        )
        self.adoption_failures = Counter(
            "driftgate_adoption_failures_total",
            "Failed attempts of an adoption (import, index or follow); status says why",
            ["collection"],
            registry=self.registry,
        )
        self.follow_pending = Gauge(
            "driftgate_follow_pending_changes",
            "Changes of a followed table waiting to be applied",
            ["collection"],
            registry=self.registry,
        )

        ratio_buckets = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
        self.shadow_samples = Counter(
            "driftgate_shadow_samples_total",
            "Shadow comparisons completed",
            ["collection", "pairing"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "driftgate_shadow_dropped_total",
            "Shadow jobs dropped because the queue was full",
            ["collection", "pairing"],
            registry=self.registry,
        )
        self.shadow_errors = Counter(
            "driftgate_shadow_errors_total",
            "Shadow jobs that failed, by category",
            ["collection", "pairing", "category"],
            registry=self.registry,
        )
        self.shadow_overlap = Histogram(
            "driftgate_shadow_overlap_ratio",
            "overlap@k (Jaccard) of read vs shadow",
            ["collection", "pairing"],
            buckets=ratio_buckets,
            registry=self.registry,
        )
        self.shadow_rbo = Histogram(
            "driftgate_shadow_rbo_ratio",
            "Rank-biased overlap (p=0.9) of read vs shadow",
            ["collection", "pairing"],
            buckets=ratio_buckets,
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "driftgate_shadow_latency_seconds",
            "Latency of each side of a shadow comparison",
            ["collection", "pairing", "side"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # what the Grafana dashboard (docker/grafana/) shows beyond the above
        self.phase = Gauge(
            "driftgate_collection_phase",
            "1 for the phase the collection is in, 0 for the others",
            ["collection", "phase"],
            registry=self.registry,
        )
        self.query_latency = Histogram(
            "driftgate_query_duration_seconds",
            "Data-plane query latency by the model that answered",
            ["collection", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "driftgate_errors_total", "Error answers by their error code", ["code"], registry=self.registry
        )

        self.adapter_validation = Gauge(
            "driftgate_adapter_validation",
            "Held-out figures of the adapter this replica serves (direction adapt: to -> from; translate: from -> to)",
            ["collection", "direction", "figure"],
            registry=self.registry,
        )
        self.adapted_queries = Counter(
            "driftgate_adapted_queries_total",
            "Queries answered through an adapter, by the model the query came from",
            ["collection", "query_model"],
            registry=self.registry,
        )
        # the children every request or query touches (see Children)
        self.request_count = Children(self.requests)
        self.request_latency = Children(self.latency)
        self.query_latency_of = Children(self.query_latency)

    def record_adapter(self, adapter) -> None:
        """The validation figures of an adapter a replica has just loaded."""
        for direction in ("adapt", "translate"):
            for figure, value in adapter.validation[direction].items():
                if isinstance(value, bool | int | float) and figure not in ("train_pairs", "held_out_pairs"):
                    self.adapter_validation.labels(adapter.collection, direction, figure).set(float(value))

    def record_shadow(self, collection: str, comparison) -> None:
        pairing = comparison.pairing
        self.shadow_samples.labels(collection, pairing).inc()
        self.shadow_dropped.labels(collection, pairing)  # exported as 0 until a job is dropped
        self.shadow_overlap.labels(collection, pairing).observe(comparison.overlap)
        self.shadow_rbo.labels(collection, pairing).observe(comparison.rbo)
        self.shadow_latency.labels(collection, pairing, "read").observe(comparison.read.latency_ms / 1000)
        self.shadow_latency.labels(collection, pairing, "shadow").observe(comparison.shadow.latency_ms / 1000)

    def record_backfill(self, collection: str, model: str, progress: dict) -> None:
        labels = (collection, model)
        self.backfill_done.labels(*labels).set(progress["done"])
        self.backfill_total.labels(*labels).set(progress["total"])
        self.backfill_errors.labels(*labels).set(progress["errors"])
        self.backfill_rate.labels(*labels).set(progress["rate_per_s"])

    def record_phase(self, collection: str, phase: str, phases: Iterable[str]) -> None:
        for each in phases:
            self.phase.labels(collection, each).set(int(each == phase))

    def record_large_responses(self, large) -> None:
        """Copy the large-answer limiter's counters (see api/large.py) into the gauges."""
        self.large_in_flight.set(large.in_flight)
        self.large_high_water.set(large.high_water)
        self.large_waited.set(large.waited)

    def record_providers(self, providers: dict[str, str]) -> None:
        """Set the execution-provider gauge of every loaded model (`EmbeddingService.execution_provider`)."""
        for model, provider in providers.items():
            self.model_execution_provider.labels(model, provider).set(1)

    def record_follow_lag(self, collection: str, lag: dict) -> None:
        self.follow_lag.labels(collection).set(lag["lag_s"])
        self.follow_pending.labels(collection).set(lag["pending"])

    def record_adoption_failure(self, collection: str) -> None:
        self.adoption_failures.labels(collection).inc()

    def record_batch(self, model: str, size: int) -> None:
        self.encoded_texts.labels(model).inc(size)
        self.encode_batch.labels(model).observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

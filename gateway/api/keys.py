"""Typed keys of everything an app holds, declared in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.api.large import LargeResponses
from gateway.api.metrics import Metrics
from gateway.config import Settings
from gateway.console.history import ShadowHistory
from gateway.services.adapter import AdapterService
from gateway.services.adoption import AdoptionService
from gateway.services.bulk import BulkLoader
from gateway.services.collections import CollectionService
from gateway.services.drift_watch import DriftWatch
from gateway.services.embedding import EmbeddingService
from gateway.services.follow import AdoptionRunner
from gateway.services.migrations import BackfillControl, MigrationService
from gateway.services.shadow import ShadowRunner
from gateway.services.state_sync import StateWatcher
from gateway.services.verify import Verifier

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
EMBEDDINGS = web.AppKey("embeddings", EmbeddingService)
COLLECTIONS = web.AppKey("collections", CollectionService)
BULK = web.AppKey("bulk", BulkLoader)
METRICS = web.AppKey("metrics", Metrics)
MIGRATIONS = web.AppKey("migrations", MigrationService)
BACKFILL_CONTROL = web.AppKey("backfill_control", BackfillControl)
VERIFIER = web.AppKey("verifier", Verifier)
ADAPTERS = web.AppKey("adapters", AdapterService)
WATCHER = web.AppKey("state_watcher", StateWatcher)
REPLICA_ID = web.AppKey("replica_id", str)
SHADOW = web.AppKey("shadow", ShadowRunner)
ADMIN_TOKEN = web.AppKey("admin_token", str)
API_KEYS = web.AppKey("api_keys", tuple)
LARGE_RESPONSES = web.AppKey("large_responses", LargeResponses)
ADOPTION = web.AppKey("adoption", AdoptionService)
ADOPTION_RUNNER = web.AppKey("adoption_runner", AdoptionRunner)
EncoderLoaderKey = web.AppKey("encoder_loader", object)
DRIFT_WATCH = web.AppKey("drift_watch", DriftWatch)
MIGRATION_TOKENS = web.AppKey("migration_tokens", dict)  # (collection, model) -> tokens, this process
CONSOLE_HISTORY = web.AppKey("console_history", ShadowHistory)  # shadow metrics over time, for the console

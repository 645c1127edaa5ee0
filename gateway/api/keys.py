"""Typed keys of everything an app holds, declared in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.api.metrics import Metrics
from gateway.config import Settings
from gateway.services.collections import CollectionService
from gateway.services.embedding import EmbeddingService

SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
EMBEDDINGS = web.AppKey("embeddings", EmbeddingService)
COLLECTIONS = web.AppKey("collections", CollectionService)
METRICS = web.AppKey("metrics", Metrics)
EncoderLoaderKey = web.AppKey("encoder_loader", object)

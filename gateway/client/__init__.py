"""The Python client of driftgate: `Client` (sync) and `AsyncClient` (asyncio), over httpx.

    from gateway.client import Client

    with Client("http://127.0.0.1:8080", admin_token=token) as dg:
        dg.create_collection("docs", "all-MiniLM-L6-v2")
        dg.put_documents("docs", [{"id": "a", "text": "hello", "metadata": {"lang": "en"}}])
        hits = dg.query("docs", text="greeting", k=5, filter={"lang": {"$in": ["en", "de"]}}).hits

Errors are `gateway.client.errors.DriftgateError` subclasses, one per API error code.
"""

from gateway.client.aio import AsyncClient
from gateway.client.calls import KEEP
from gateway.client.models import (
    Collection,
    Document,
    Embeddings,
    Hit,
    MigrationState,
    Page,
    QueryResult,
    Report,
    Status,
    WriteResult,
)
from gateway.client.sync import Client

__all__ = [
    "KEEP",
    "AsyncClient",
    "Client",
    "Collection",
    "Document",
    "Embeddings",
    "Hit",
    "MigrationState",
    "Page",
    "QueryResult",
    "Report",
    "Status",
    "WriteResult",
]

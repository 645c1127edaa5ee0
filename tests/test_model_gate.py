"""The model registry is the one gate to the models: what loads them, what a broken model answers,
and how a model imported while the gateway runs reaches every replica."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.api.keys import EMBEDDINGS
from gateway.config import Settings, load_settings
from gateway.domain.vectors import min_row_cosine, row_cosines
from gateway.encoders.cache import source_spec
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir, ensure_files, local_path
from gateway.encoders.imported import import_checkpoint
from tests.helpers import AUTH, L3, L6, SRE, TOKEN, USE, create_collection, wait_for_progress


def with_models(settings: Settings, **models) -> Settings:
    return settings.model_copy(update={"models": settings.models.model_copy(update=models)})


# -- one cosine for every drift decision --------------------------------------------------------


def test_the_drift_cosine_is_the_float64_row_cosine_and_another_shape_is_total_drift():
    rng = np.random.default_rng(7)
    registered = rng.normal(size=(5, 384)).astype(np.float32)
    moved = registered + rng.normal(scale=1e-3, size=registered.shape).astype(np.float32)
    assert min_row_cosine(moved, registered) == float(row_cosines(moved, registered).min())
    assert min_row_cosine(registered, registered) == pytest.approx(1.0, abs=1e-12)
    assert min_row_cosine(registered[:, :100], registered) == -1.0  # another dimension
    assert min_row_cosine(registered[:4], registered) == -1.0  # another number of probes
    assert min_row_cosine(np.zeros((0, 384)), np.zeros((0, 384))) == -1.0


# -- models load at start or for a collection, never because a request named one ------------


async def test_data_plane_requests_naming_an_unused_model_load_nothing_and_get_a_clear_400(make_client):
    client = await make_client()
    await create_collection(client, "docs", L3)
    for model in (L6, USE):
        response = await client.post("/v1/embeddings", json={"model": model, "input": "load me"})
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == "model_not_served" and model in error["message"] and "serve" in error["message"]
    by_collection = await client.post("/v1/embeddings", json={"model": "collection:docs", "input": "fine"})
    assert by_collection.status == 200
    assert client.app[EMBEDDINGS].loaded() == [L3]
    assert (await (await client.get("/readyz")).json())["models_loaded"] == [L3]


async def test_a_model_in_the_serve_list_is_loaded_at_start_and_served_without_a_collection(make_client, settings):
    client = await make_client(with_models(settings, serve=(L6,)))
    assert client.app[EMBEDDINGS].loaded() == [L6]  # before any request
    response = await client.post("/v1/embeddings", json={"model": L6, "input": "served"})
    assert response.status == 200 and len((await response.json())["data"][0]["embedding"]) == 384


# -- every load-time model error is a 503 naming the model ------------------------------------


@pytest.fixture
def tampered_cache(tmp_path) -> Path:
    """A model cache with L3's files, one of them changed after it was pinned."""
    ensure_files([CATALOG[L3]], default_cache_dir())
    cache = tmp_path / "cache"
    tampered = CATALOG[L3].tokenizer_files()[0]
    for file in CATALOG[L3].files:
        source, target = local_path(file, default_cache_dir()), local_path(file, cache)
        target.parent.mkdir(parents=True, exist_ok=True)
        if file == tampered:
            target.write_bytes(source.read_bytes() + b" ")
        else:
            target.symlink_to(source)
    return cache


async def test_a_tampered_model_file_answers_503_naming_the_model_at_creation_and_after_restart(
    make_client, settings, tampered_cache
):
    healthy = await make_client()
    await create_collection(healthy, "kept", L3)
    assert (await healthy.put("/v1/collections/kept/documents/a", json={"text": "stored"})).status == 200
    await healthy.close()

    broken = await make_client(with_models(settings, cache_dir=tampered_cache, allow_download=False))
    created = await broken.put("/v1/collections/docs", json={"model": L3})
    query = await broken.post("/v1/collections/kept/query", json={"text": "stored"})
    for response in (created, query):
        assert response.status == 503 and response.headers["Retry-After"].isdigit()
        error = (await response.json())["error"]
        assert error["code"] == "encoder_unavailable" and repr(L3) in error["message"]
        assert "driftgate models fetch" in error["message"] and "ModelFileMismatch" not in error["message"]
    assert (await broken.get("/v1/collections/docs")).status == 404
    assert (await (await broken.get("/v1/collections/kept/documents/a")).json())["text"] == "stored"


# -- a model imported while the gateway runs ----------------------------------------------------


@pytest.fixture(scope="module")
def sre_checkpoint() -> Path:
    spec = source_spec(CATALOG[SRE])
    ensure_files([spec], default_cache_dir())
    return local_path(next(f for f in spec.files if f.path.endswith("/modules.json")), default_cache_dir()).parent


async def test_a_model_imported_while_running_appears_after_a_rescan_on_this_and_every_other_replica(
    make_client, sre_checkpoint, tmp_path
):
    settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 4},
        models={"cache_dir": str(tmp_path / "cache")},
        server={"sync_poll_interval_s": 0.5, "request_timeout_s": 600},
    )
    first = await make_client(settings, admin_token=TOKEN)
    second = await make_client(settings, admin_token=TOKEN)
    await asyncio.to_thread(import_checkpoint, sre_checkpoint, "my-sre", tmp_path / "cache")
    before = await first.put("/v1/collections/docs", json={"model": "my-sre"})
    assert before.status == 400 and (await before.json())["error"]["code"] == "unknown_model"
    assert "rescan" in (await before.json())["error"]["message"]
    assert (await first.post("/admin/v1/models/rescan")).status == 401

    rescan = await first.post("/admin/v1/models/rescan", headers=AUTH)
    assert rescan.status == 200 and (await rescan.json())["added"] == ["my-sre"]
    await create_collection(first, "docs", "my-sre")
    assert (await first.put("/v1/collections/docs/documents/a", json={"text": "disk pressure"})).status == 200

    async def known_on_second() -> bool:
        return "my-sre" in second.app[EMBEDDINGS].specs

    await wait_for_progress(known_on_second, bool, bool)  # the NOTIFY reached the other replica
    await create_collection(second, "other", "my-sre")
    hits = await (await second.post("/v1/collections/docs/query", json={"text": "disk pressure"})).json()
    assert [h["id"] for h in hits["hits"]] == ["a"]
    again = await first.post("/admin/v1/models/rescan", headers=AUTH)
    assert (await again.json())["added"] == []

"""Adopting the table LangChain's PGVector wrote (docs/integrations.md walks through it): one
collection out of the shared `langchain_pg_embedding` (a row filter on `collection_id`), its JSONB
`cmetadata` as the metadata, following the app's writes; then the app switched to driftgate's
VectorStore, then a migration to another model.

The table is written by langchain-postgres' own `PGVector` class (psycopg, SQLAlchemy), with the
vectors of the model the collection is adopted with (made by the gateway's encoder), as an app
that used that model locally would have written them.
"""

from __future__ import annotations

import json

import psycopg
import pytest
import requests
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_postgres import PGVector

from gateway.api.keys import EMBEDDINGS
from gateway.client import Client
from gateway.client.errors import CollectionFollowed, InvalidRowFilter
from gateway.integrations.langchain import DriftgateVectorStore
from gateway.store.collections import documents_table
from tests.helpers import AUTH, L3, L6, TOKEN, run, wait_until
from tests.live import ServerThread

TOPICS = ["storage", "network", "billing"]
NOTES = [
    Document(
        id=f"note-{i}",
        page_content=f"note {i}: how the {TOPICS[i % 3]} service handles failure case {i}",
        metadata={"topic": TOPICS[i % 3], "n": i, "tags": ["ops", TOPICS[i % 3]], "when": f"2024-05-{i + 1:02d}"},
    )
    for i in range(24)
]
OTHER = [
    Document(id=f"other-{i}", page_content=f"an unrelated collection, entry {i}", metadata={"n": i}) for i in range(8)
]


class ModelEmbeddings(Embeddings):
    """The app's embedding model before driftgate: the same pinned model, run locally."""

    def __init__(self, server: ServerThread, model: str) -> None:
        self.server, self.model = server, model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        encoded = self.server.call(self.server.app[EMBEDDINGS].embed(self.model, texts, "document", bulk=True))
        return encoded.vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def server(threaded_gateway: ServerThread) -> ServerThread:
    return threaded_gateway


@pytest.fixture(scope="module")
def dsn(threaded_gateway: ServerThread) -> str:
    return threaded_gateway.dsn


def pgvector(server: ServerThread, dsn: str, collection: str) -> PGVector:
    return PGVector(
        ModelEmbeddings(server, L3),
        connection=dsn.replace("postgresql://", "postgresql+psycopg://", 1),
        collection_name=collection,
        use_jsonb=True,
    )


def langchain_collection_id(dsn: str, name: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT uuid::text FROM langchain_pg_collection WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row[0]


def adopt(server: ServerThread, name: str, **body) -> requests.Response:
    spec = {
        "table": "public.langchain_pg_embedding",
        "id_column": "id",
        "text_column": "document",
        "vector_column": "embedding",
        "metadata_json_column": "cmetadata",
        "model": L3,
        "sample": 12,
        **body,
    }
    return requests.post(f"{server.url}/admin/v1/collections/{name}/adopt", json=spec, headers=AUTH, timeout=600)


def status(server: ServerThread, name: str) -> dict:
    response = requests.get(f"{server.url}/admin/v1/collections/{name}/status", headers=AUTH, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def settle(server: ServerThread, name: str, state: str) -> dict:
    """Wait until the adoption is in `state` with nothing queued and its index built."""

    def done(body: dict) -> bool:
        lag = body["adoption"]["follow_lag"] or {"pending": 0}
        return body["adoption"]["state"] == state and lag["pending"] == 0 and body["models"][L3]["index_ready"]

    def progress(body: dict):
        adoption = body["adoption"]
        return adoption["state"], adoption["rows_read"], adoption["changes_applied"], body["models"][L3]["rows"]

    return wait_until(lambda: status(server, name), done, progress)


def collection_rows(dsn: str, name: str) -> dict[str, tuple[str, dict]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT id, content, metadata FROM {documents_table(name)}").fetchall()
    return {r[0]: (r[1], r[2] if isinstance(r[2], dict) else json.loads(r[2])) for r in rows}


def test_a_langchain_pgvector_app_is_adopted_switched_to_driftgate_and_migrated(server, dsn):
    notes, other = pgvector(server, dsn, "notes"), pgvector(server, dsn, "other")
    notes.add_documents(NOTES)
    other.add_documents(OTHER)
    uuid = langchain_collection_id(dsn, "notes")

    # 1. adopt one LangChain collection, following the app's writes
    admin = Client(server.url, admin_token=TOKEN)
    adoption = admin.adopt(
        "notes",
        "public.langchain_pg_embedding",
        id_column="id",
        text_column="document",
        vector_column="embedding",
        model=L3,
        metadata_json_column="cmetadata",
        where={"collection_id": uuid},
        sample=12,
        follow=True,
    )["adoption"]
    assert adoption["row_filter"] == {"column": "collection_id", "value": uuid}
    assert adoption["columns"]["metadata_json"] == "cmetadata"
    assert adoption["sample"]["sampled"] == 12 and adoption["sample"]["cosine_min"] > 0.999
    body = settle(server, "notes", "following")
    assert body["adoption"]["rows_total"] == len(NOTES) and body["adoption"]["rows_read"] == len(NOTES)
    assert body["adoption"]["rows_to_embed"] == 0  # every vector was taken over, none re-embedded

    # only the notes, each with its cmetadata as the metadata itself (not nested under "cmetadata")
    assert collection_rows(dsn, "notes") == {d.id: (d.page_content, d.metadata) for d in NOTES}

    # the app keeps writing through PGVector: its notes are followed, the other collection is not
    notes.add_documents([Document(id="note-new", page_content="a note written after adoption", metadata={"n": 99})])
    notes.add_documents([Document(id="note-3", page_content="note 3, rewritten", metadata={"topic": "billing"})])
    notes.delete(["note-5"])
    other.add_documents([Document(id="other-new", page_content="not for the notes collection", metadata={})])
    other.delete(["other-1"])
    body = settle(server, "notes", "following")
    assert body["adoption"]["changes_applied"] >= 4
    rows = collection_rows(dsn, "notes")
    assert rows["note-new"] == ("a note written after adoption", {"n": 99})
    assert rows["note-3"] == ("note 3, rewritten", {"topic": "billing"})
    assert "note-5" not in rows and "other-new" not in rows and not any(i.startswith("other") for i in rows)
    assert len(rows) == len(NOTES)

    # 2. switch the app to driftgate's VectorStore: same answers as PGVector gave, same ids and metadata
    store = DriftgateVectorStore("notes", url=server.url)
    for question in ("how does billing handle failure?", "note 7", "storage outage"):
        assert [d.id for d in store.similarity_search(question, k=3)] == [
            d.id for d in notes.similarity_search(question, k=3)
        ]
    assert store.get_by_ids(["note-new"]) == [
        Document(id="note-new", page_content=rows["note-new"][0], metadata={"n": 99})
    ]
    with pytest.raises(CollectionFollowed, match="--stop"):  # while followed, the table is the one writer
        store.add_texts(["too early"], ids=["x"])
    assert admin.stop_adoption("notes")["adoption"]["state"] == "stopped"
    store.add_documents([Document(id="note-gw", page_content="written through the gateway", metadata={"n": 100})])
    assert store.similarity_search("written through the gateway", k=1)[0].id == "note-gw"

    # 3. migrate to another model while the app keeps reading: the same store, no change to the app
    admin.start_migration("notes", L6)
    wait_until(lambda: admin.status("notes"), lambda s: s.phase == "ready", lambda s: (s.phase, s.backfill.get("done")))
    assert admin.verify("notes", sample=10).passed
    admin.cutover("notes", L6)
    assert admin.query("notes", text="note 7", k=1).model == L6
    assert store.similarity_search("written through the gateway", k=1)[0].id == "note-gw"
    assert store.similarity_search("note 7: how the network service handles failure case 7", k=1)[0].id == "note-7"


def test_a_bad_row_filter_or_metadata_column_is_refused_with_what_to_fix_and_creates_nothing(server, dsn):
    pgvector(server, dsn, "refusals").add_documents(NOTES[:3])
    cases = [
        ({"row_filter": {"column": "collection_id", "value": "not-a-uuid"}}, 400, "invalid_row_filter"),
        ({"row_filter": {"column": "tenant", "value": "a"}}, 400, "column_not_found"),
        ({"row_filter": {"column": "collection_id; DROP TABLE x", "value": "a"}}, 400, "invalid_identifier"),
        ({"row_filter": {"column": "collection_id", "value": True}}, 400, None),
        ({"row_filter": {"column": "collection_id", "value": ""}}, 400, "invalid_row_filter"),
        ({"metadata_json_column": "collection_id"}, 400, "invalid_column_type"),
        ({"metadata_json_column": "nope"}, 400, "column_not_found"),
        ({"metadata_json_column": "embedding"}, 400, "invalid_identifier"),  # also the vector column
    ]
    for extra, code, error in cases:
        response = adopt(server, "refused", **extra)
        assert response.status_code == code, (extra, response.text)
        body = response.json()["error"]
        assert body["message"], extra
        if error:
            assert body["code"] == error, (extra, body)
    # the CLI says the same: a --where without a value, a value of the wrong type
    cli = ["adopt", "refused", "--url", server.url, "--table", "langchain_pg_embedding", "--id-column", "id"]
    cli += ["--text-column", "document", "--vector-column", "embedding", "--model", L3, "--metadata-json", "cmetadata"]
    done = run(*cli, "--where", "collection_id", env={"DRIFTGATE_ADMIN_TOKEN": TOKEN})
    assert done.returncode == 2 and "COLUMN=VALUE" in done.stderr, done.stderr
    done = run(*cli, "--where", "collection_id=42", env={"DRIFTGATE_ADMIN_TOKEN": TOKEN})
    assert done.returncode == 1 and "invalid_row_filter" in done.stderr and "uuid" in done.stderr, done.stderr
    assert requests.get(f"{server.url}/v1/collections/refused", timeout=60).status_code == 404
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM driftgate.adoptions WHERE collection = 'refused'").fetchone() == (0,)


def test_an_integer_row_filter_and_json_metadata_of_every_shape(server, dsn):
    """A json object is the metadata; null is none; another json value is kept under the column's
    name; plain metadata columns are merged over it. Rows without a vector are embedded."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE shared (id text PRIMARY KEY, tenant int, body text, meta jsonb, lang text, embedding vector(384))"
        )
        rows = [
            ("a", 2, "first text", '{"k": 1, "lang": "xx", "deep": {"x": [1, 2]}}', "en"),
            ("b", 2, "second text", None, None),
            ("c", 2, "third text", "[1, 2, 3]", "de"),
            ("d", 2, "fourth text", '"just a string"', None),
            ("e", 1, "another tenant", '{"k": 9}', None),
        ]
        conn.cursor().executemany("INSERT INTO shared (id, tenant, body, meta, lang) VALUES (%s, %s, %s, %s, %s)", rows)
    admin = Client(server.url, admin_token=TOKEN)
    admin.adopt(
        "tenant2",
        "shared",
        id_column="id",
        text_column="body",
        vector_column="embedding",
        model=L3,
        metadata_columns=["lang"],
        metadata_json_column="meta",
        where={"tenant": 2},
        sample=0,
    )
    wait_until(
        lambda: status(server, "tenant2"),
        lambda s: s["adoption"]["state"] == "done",
        lambda s: (s["adoption"]["state"], s["adoption"]["rows_read"], s["models"][L3]["rows"]),
    )
    assert collection_rows(dsn, "tenant2") == {
        "a": ("first text", {"k": 1, "lang": "en", "deep": {"x": [1, 2]}}),
        "b": ("second text", {}),
        "c": ("third text", {"meta": [1, 2, 3], "lang": "de"}),
        "d": ("fourth text", {"meta": "just a string"}),
    }
    assert admin.query("tenant2", text="third text", k=1).hits[0].id == "c"  # embedded by the backfill
    with pytest.raises(InvalidRowFilter, match="integer"):
        admin.adopt(
            "tenant3",
            "shared",
            id_column="id",
            text_column="body",
            vector_column="embedding",
            model=L3,
            where={"tenant": "two"},
        )

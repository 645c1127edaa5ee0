"""Where local models run: `[models] execution_provider` (auto, cpu, cuda) parses and validates,
resolves against what the installed onnxruntime offers, refuses `cuda` without CUDA at start
with a message that says what to install, and every view of the models says where each runs
(`models list`, the admin status JSON, the text status, /metrics)."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from gateway.commands.models import list_models
from gateway.commands.status_view import format_status
from gateway.config import ConfigError, load_settings
from gateway.domain.providers import resolve_provider, session_providers
from gateway.encoders.catalog import CATALOG
from gateway.encoders.fetch import default_cache_dir
from gateway.encoders.onnx import load_encoder
from gateway.services.embedding import EmbeddingService
from tests.helpers import AUTH, L3, TOKEN, seed, settings_with, status

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HERE = "cuda" if HAS_CUDA else "cpu"  # what `auto` must pick on this machine
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA: `cuda` is valid here")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_the_setting_defaults_to_auto_and_reads_the_file_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert load_settings(None).models.execution_provider == "auto"
    path = tmp_path / "c.toml"
    path.write_text("[models]\nexecution_provider = 'cuda'\n")
    assert load_settings(path).models.execution_provider == "cuda"
    monkeypatch.setenv("DRIFTGATE_MODELS__EXECUTION_PROVIDER", "cpu")
    assert load_settings(path).models.execution_provider == "cpu"


@pytest.mark.parametrize("value", ["gpu", "CUDA", "", "tensorrt"])
def test_a_bad_execution_provider_is_a_config_error_naming_the_field_and_the_choices(monkeypatch, value):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, models={"execution_provider": value})
    (problem,) = caught.value.problems
    assert problem.startswith("models.execution_provider:") and "'auto', 'cpu' or 'cuda'" in problem


@pytest.mark.parametrize(
    ("setting", "available", "expected"),
    [
        ("auto", [CUDA, CPU], "cuda"),
        ("auto", [CPU], "cpu"),
        ("cpu", [CUDA, CPU], "cpu"),
        ("cuda", [CUDA, CPU], "cuda"),
    ],
)
def test_the_setting_resolves_against_the_providers_onnxruntime_lists(setting, available, expected):
    assert resolve_provider(setting, available) == expected


def test_cuda_without_cuda_is_refused_saying_which_setting_and_what_to_install():
    with pytest.raises(ConfigError) as caught:
        resolve_provider("cuda", [CPU, "AzureExecutionProvider"])
    message = str(caught.value)
    assert "models.execution_provider" in message and "onnxruntime-gpu" in message and "'auto'" in message


def test_a_cuda_session_keeps_the_cpu_for_the_ops_cuda_lacks():
    assert session_providers("cuda") == [CUDA, CPU] and session_providers("cpu") == [CPU]


def test_auto_here_loads_a_real_model_on_what_onnxruntime_offers(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    service = EmbeddingService.from_settings(load_settings(None))
    assert service.provider == HERE and service.execution_provider(L3) == HERE
    encoder = load_encoder(CATALOG[L3], default_cache_dir(), provider="auto")  # the process's session
    assert encoder.provider == HERE and encoder.session.get_providers()[0] == (CUDA if HAS_CUDA else CPU)
    assert encoder.encode(["a sentence"]).vectors.shape == (1, CATALOG[L3].dim)


@needs_no_cuda
def test_cuda_without_cuda_stops_the_start_before_any_model_loads(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        EmbeddingService.from_settings(load_settings(None, models={"execution_provider": "cuda"}))
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):  # and an encoder asked for it directly
        load_encoder(CATALOG[L3], default_cache_dir(), provider="cuda")


@needs_no_cuda
@pytest.mark.parametrize("command", [["models", "list"], ["models", "fetch", L3]])
def test_the_cli_refuses_cuda_without_cuda_in_one_line_with_exit_status_2(monkeypatch, capsys, command):
    from gateway.cli import main

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DRIFTGATE_MODELS__EXECUTION_PROVIDER", "cuda")
    assert main(command) == 2
    out, err = capsys.readouterr()
    assert out == "" and "models.execution_provider" in err and "onnxruntime-gpu" in err
    assert len(err.strip().splitlines()) == 1


def test_models_list_says_where_each_model_runs(monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    remote = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "dim": 8}
    settings = load_settings(None, models={"execution_provider": "cpu", "remote": {"far": remote}})
    assert list_models(settings, as_json=True) == 0
    rows = {r["key"]: r["execution_provider"] for r in json.loads(capsys.readouterr().out)}
    assert rows["far"] == "remote" and {rows[key] for key in CATALOG} == {"cpu"}
    assert list_models(settings, as_json=False) == 0
    text = capsys.readouterr().out
    assert "RUNS ON" in text and "local models run on cpu (models.execution_provider = 'cpu')" in text


async def test_the_admin_status_the_text_status_and_metrics_say_where_a_model_runs(make_client):
    client = await make_client(settings_with(), admin_token=TOKEN)
    await seed(client, n=2)
    report = await status(client)
    assert report["models"][L3]["execution_provider"] == HERE
    assert f"runs on {HERE}" in format_status(report)
    metrics = await (await client.get("/metrics", headers=AUTH)).text()
    assert f'driftgate_model_execution_provider{{model="{L3}",provider="{HERE}"}} 1.0' in metrics

"""Typed configuration: the example file loads, env overrides, every problem is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "config" / "driftgate.example.toml"


def test_the_documented_example_config_is_valid(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = load_settings(EXAMPLE)
    assert settings.server.port == 8080
    assert settings.limits.max_batch_documents == 1000


def test_environment_variables_override_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 7000\n[database]\ndsn = 'postgresql://file/db'\n")
    monkeypatch.setenv("DRIFTGATE_SERVER__PORT", "9001")
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/db")
    settings = load_settings(path)
    assert settings.server.port == 9001
    assert settings.database.dsn == "postgresql://env/db"


def test_an_invalid_config_reports_every_problem_with_its_field_name(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(
        "[server]\nport = 99999\ncolour = 'blue'\n"
        "[database]\npool_min = 5\npool_max = 2\n"
        "[models.custom.mine]\ndim = 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = "\n".join(caught.value.problems)
    for field in (
        "server.port",
        "server.colour",
        "database",
        "models.custom.mine.dim",
        "models.custom.mine.onnx",
        "models.custom.mine.name",
    ):
        assert field in text
    assert len(caught.value.problems) >= 6


def test_the_admin_token_is_refused_in_a_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nadmin_token = 'secret'\n")
    with pytest.raises(ConfigError, match="DRIFTGATE_ADMIN_TOKEN"):
        load_settings(path)


def test_a_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_custom_models_may_not_shadow_catalog_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[models.custom.all-MiniLM-L6-v2]\nname='x'\nrevision='1'\ndim=3\n"
        f"onnx = {{ path = '/x.onnx', sha256 = '{'0' * 64}' }}\n"
    )
    with pytest.raises(ConfigError, match="clash"):
        load_settings(path)

"""The command line, run as a user would: real subprocesses, real server, real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import DRIFTGATE, free_port, request, run


def test_help_explains_every_command_with_an_example():
    result = run("--help")
    assert result.returncode == 0
    for word in ("serve", "demo", "models", "embed", "example", "DATABASE_URL"):
        assert word in result.stdout
    for command in (
        ["serve"],
        ["demo"],
        ["models", "fetch"],
        ["models", "list"],
        ["models", "import"],
        ["embed"],
        ["evaluate"],
        ["loadtest"],
        ["backfill-worker"],
        ["migrate"],
        ["migrate", "start"],
        ["migrate", "status"],
        ["migrate", "cutover"],
        ["migrate", "verify"],
        ["migrate", "backfill"],
    ):
        sub = run(*command, "--help")
        assert sub.returncode == 0 and "example" in sub.stdout, command


def test_models_list_shows_the_pinned_catalog_with_dims_and_fingerprints():
    result = run("models", "list", "--json")
    assert result.returncode == 0
    rows = {r["key"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {
        "paraphrase-MiniLM-L3-v2",
        "all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2-int8",
        "all-mpnet-base-v2",
        "sre-embedding-model",
        "use-multilingual-v3",
    }
    assert rows["all-mpnet-base-v2"]["dim"] == 768 and rows["all-mpnet-base-v2"]["source"] == "converted"
    assert rows["use-multilingual-v3"]["dim"] == 512 and rows["use-multilingual-v3"]["max_batch"] == 1
    assert all(len(r["fingerprint"]) == 64 for r in rows.values())


def test_models_fetch_verifies_a_cached_model():
    result = run("models", "fetch", "paraphrase-MiniLM-L3-v2")
    assert result.returncode == 0, result.stderr
    assert "paraphrase-MiniLM-L3-v2: ok" in result.stdout


def test_models_fetch_of_an_unknown_key_fails_with_a_reason():
    result = run("models", "fetch", "no-such-model")
    assert result.returncode == 2 and "unknown model" in result.stderr


def test_embed_turns_json_lines_into_vectors():
    result = run("embed", "--model", "all-MiniLM-L6-v2", stdin='{"text": "hello"}\n\n{"text": "world"}\n')
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["hello", "world"]
    assert all(len(line["embedding"]) == 384 for line in lines)


@pytest.mark.parametrize("line", ["not json", '{"txt": "x"}', '["x"]', '{"text": ""}'])
def test_embed_rejects_a_bad_line_with_its_number(line):
    result = run("embed", "--model", "paraphrase-MiniLM-L3-v2", stdin='{"text": "ok"}\n' + line + "\n")
    assert result.returncode == 2
    assert "line 2" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_invalid_config_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'eighty'\n")
    result = run("--config", str(bad), "models", "list")
    assert result.returncode == 2
    assert "server.port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _serve(port: int, data_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    process = subprocess.Popen(
        [*DRIFTGATE, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stdout.read()}")
        try:
            if request(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("serve did not become ready in 60 s")


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_serve_on_the_embedded_database_keeps_documents_across_restarts(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(port, tmp_path / "pgdata")
    try:
        assert request(f"{base}/v1/collections/kept", "PUT", {"model": "paraphrase-MiniLM-L3-v2"})[0] == 201
        status, written = request(f"{base}/v1/collections/kept/documents/a", "PUT", {"text": "still here"})
        assert status == 200
    finally:
        _stop(server)
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists(), "the embedded server was not stopped"
    server = _serve(port, tmp_path / "pgdata")
    try:
        status, doc = request(f"{base}/v1/collections/kept/documents/a")
        assert status == 200 and doc["text"] == "still here" and doc["version"] == written["version"]
        status, hits = request(f"{base}/v1/collections/kept/query", "POST", {"text": "here"})
        assert status == 200 and hits["hits"][0]["id"] == "a"
    finally:
        _stop(server)


def test_an_operator_runs_a_whole_migration_with_the_migrate_cli(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env_token = {"DRIFTGATE_ADMIN_TOKEN": "cli-token"}
    os.environ.update(env_token)
    try:
        server = _serve(port, tmp_path / "pgdata")
    finally:
        os.environ.pop("DRIFTGATE_ADMIN_TOKEN")
    try:
        assert request(f"{base}/v1/collections/kb", "PUT", {"model": "paraphrase-MiniLM-L3-v2"})[0] == 201
        docs = [{"id": f"d{i}", "text": f"note {i} on waveguides and filters"} for i in range(30)]
        assert request(f"{base}/v1/collections/kb/documents", "POST", {"documents": docs})[0] == 200

        def migrate(*args: str) -> subprocess.CompletedProcess:
            return run("migrate", *args, "--url", base, env=env_token)

        started = migrate("start", "kb", "--to", "all-MiniLM-L6-v2")
        assert started.returncode == 0 and "migration started" in started.stdout, started.stderr
        last, changed = "", time.monotonic()
        while "phase ready" not in (status := migrate("status", "kb")).stdout:
            if status.stdout != last:  # progress: fail only when nothing moves for a minute
                last, changed = status.stdout, time.monotonic()
            assert time.monotonic() - changed < 60, status.stdout
            time.sleep(0.5)
        assert "backfill done" in status.stdout and "next: driftgate migrate verify kb" in status.stdout
        # ready waits for the operator: --watch says so and stops by itself
        watch = migrate("status", "kb", "--watch", "--interval", "0.1")
        assert watch.returncode == 0 and watch.stdout.count("collection kb") == 1
        assert "stopped watching: phase ready waits for you; next: driftgate migrate verify kb" in watch.stdout
        refused = migrate("cutover", "kb")
        assert refused.returncode == 1 and "index_incomplete" in refused.stderr
        verified = migrate("verify", "kb")
        assert verified.returncode == 0 and "verification passed" in verified.stdout
        assert "now reads all-MiniLM-L6-v2" in migrate("cutover", "kb").stdout
        assert "now reads paraphrase-MiniLM-L3-v2" in migrate("rollback", "kb").stdout
        assert "now reads all-MiniLM-L6-v2" in migrate("cutover", "kb").stdout
        retired = migrate("retire", "kb")
        assert retired.returncode == 0 and "table dropped" in retired.stdout
        assert "phase steady, reads all-MiniLM-L6-v2" in migrate("status", "kb").stdout
        no_token = run("migrate", "status", "kb", "--url", base, env={"DRIFTGATE_ADMIN_TOKEN": ""})
        assert no_token.returncode == 2 and "DRIFTGATE_ADMIN_TOKEN" in no_token.stderr
        wrong = run("migrate", "status", "kb", "--url", base, env={"DRIFTGATE_ADMIN_TOKEN": "nope"})
        assert wrong.returncode == 1 and "401 unauthorized" in wrong.stderr
    finally:
        _stop(server)

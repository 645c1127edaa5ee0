"""The container files, checked by parsing them: no Docker engine is needed.

docker/Dockerfile is read instruction by instruction; docker/docker-compose.yml with PyYAML
(in the test extra). Every command line is parsed by the real `gateway.cli.build_parser()`,
every variable is checked against `gateway.config`, and ports, health checks and service
names are checked against each other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from gateway.cli import build_parser
from gateway.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
MODEL_CACHE = "/opt/driftgate/models"
TOKEN = "test-token-0123456789abcdef"


# ---------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    name: str | None
    image: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuations joined; comment lines dropped (also inside continuations)."""
    out: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        keyword, _, args = " ".join([*buffer, stripped]).partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = []
    assert not buffer, f"line {start}: the last instruction ends with a continuation"
    return out


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading `--flag=value` options of an instruction, and the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_pairs(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    assert all("=" in t for t in tokens), f"ENV must use the KEY=value form: {args}"
    return dict(t.split("=", 1) for t in tokens)


def stages() -> list[Stage]:
    result: list[Stage] = []
    for instruction in dockerfile_instructions((DOCKER / "Dockerfile").read_text()):
        if instruction.keyword == "FROM":
            tokens = split_flags(instruction.args)[1].split()
            assert len(tokens) == 1 or (len(tokens) == 3 and tokens[1].lower() == "as"), instruction
            result.append(Stage(tokens[2] if len(tokens) == 3 else None, tokens[0]))
        else:
            assert result, f"line {instruction.line}: {instruction.keyword} before FROM"
            result[-1].instructions.append(instruction)
    return result


def stage_env(stage: Stage, before: Instruction | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.instructions:
        if instruction is before:
            break
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction.args))
    return env


def exposed_port(stage: Stage) -> int:
    [expose] = stage.all("EXPOSE")
    [port] = expose.args.split()
    return int(port.split("/")[0])


def parse_cli(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`driftgate {shlex.join(argv)}` is refused by gateway.cli.build_parser() ({exc})")


def cli_commands() -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


@pytest.fixture(scope="module")
def build_stage() -> Stage:
    return stages()[0]


@pytest.fixture(scope="module")
def runtime() -> Stage:
    return stages()[-1]


def test_the_image_is_multi_stage_on_a_python_3_11_slim_base_pinned_by_tag():
    all_stages = stages()
    assert len(all_stages) >= 2
    names = {s.name for s in all_stages if s.name}
    for stage in all_stages:
        if stage.image in names:
            continue
        repository, _, tag = stage.image.partition(":")
        assert repository == "python" and tag, f"{stage.image}: pin the base image by tag"
        assert tag != "latest" and tag.startswith("3.11") and "slim" in tag, stage.image


def test_the_package_is_installed_from_the_repository_without_a_pip_cache(build_stage):
    sources = [split_flags(c.args)[1].split()[:-1] for c in build_stage.all("COPY")]
    copied = {src for group in sources for src in group}
    assert {"pyproject.toml", "README.md", "gateway/"} <= copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    runs = [split_flags(r.args)[1] for r in build_stage.all("RUN")]
    assert any(re.search(r"\bpip install --no-cache-dir \.(\s|$)", r) for r in runs), runs


def packaged_directories() -> list[str]:
    """Top-level package directories that pyproject's `packages.find` includes (`gateway`, ...)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in include["include"]})


def test_every_package_that_pyproject_installs_is_copied_into_the_build(build_stage):
    copied = {src.rstrip("/") for c in build_stage.all("COPY") for src in split_flags(c.args)[1].split()[:-1]}
    for package in packaged_directories():
        assert package in copied, f"pyproject installs {package}/ but the Dockerfile does not COPY it"


def test_models_are_fetched_and_verified_at_build_time_into_the_image_cache(build_stage, runtime):
    fetches = [r for r in build_stage.all("RUN") if "driftgate models fetch" in r.args]
    assert len(fetches) == 1, "the build stage must run `driftgate models fetch` once"
    command = shlex.split(split_flags(fetches[0].args)[1])
    argv = command[command.index("driftgate") + 1 :]
    args = parse_cli(argv)
    assert (args.command, args.models_command, args.keys) == ("models", "fetch", []), "fetch every model"
    env = stage_env(build_stage, before=fetches[0])
    assert env.get("DRIFTGATE_MODEL_CACHE") == MODEL_CACHE
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"

    build_name = build_stage.name
    copies = [split_flags(c.args) for c in runtime.all("COPY")]
    assert ({"from": build_name}, f"{MODEL_CACHE} {MODEL_CACHE}") in copies, "ship the verified cache"
    final_env = stage_env(runtime)
    assert final_env.get("DRIFTGATE_MODEL_CACHE") == MODEL_CACHE
    assert final_env.get("ORT_DISABLE_TELEMETRY") == "1"
    assert final_env.get("DRIFTGATE_MODELS__ALLOW_DOWNLOAD") == "false", "a container never downloads"


def test_the_container_runs_as_a_non_root_user_created_in_the_image(runtime):
    users = runtime.all("USER")
    assert users, "the runtime stage must switch to a non-root user"
    user, _, group = users[-1].args.partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    last_run = max(i for i, x in enumerate(runtime.instructions) if x.keyword == "RUN")
    assert runtime.instructions.index(users[-1]) > last_run, "no RUN after USER needs root, so switch last"
    creation = " ".join(r.args for r in runtime.all("RUN"))
    assert "useradd" in creation
    if user.isdigit():
        assert f"--uid {user}" in creation and int(user) >= 1000
    if group.isdigit():
        assert f"--gid {group}" in creation


def test_entrypoint_is_driftgate_and_cmd_serves_on_all_interfaces_at_the_exposed_port(runtime):
    [entrypoint] = runtime.all("ENTRYPOINT")
    assert exec_form(entrypoint.args) == ["driftgate"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["driftgate"] == "gateway.cli:main"
    [cmd] = runtime.all("CMD")
    args = parse_cli(exec_form(cmd.args))
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert args.port == exposed_port(runtime), "EXPOSE and `serve --port` must agree"


def healthcheck(runtime: Stage) -> tuple[dict[str, str], list[str]]:
    [check] = runtime.all("HEALTHCHECK")
    flags, rest = split_flags(check.args)
    keyword, _, command = rest.partition(" ")
    assert keyword == "CMD"
    return flags, exec_form(command)


def test_the_healthcheck_asks_readyz_on_the_exposed_port_with_the_standard_library(runtime):
    flags, argv = healthcheck(runtime)
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, "the slim image has no curl: use python"
    code = argv[2]
    assert "urllib.request" in code and "curl" not in code and "wget" not in code
    [url] = re.findall(r"https?://[^'\"\s]+", code)
    parts = urlsplit(url)
    assert parts.path == "/readyz" and parts.hostname in ("127.0.0.1", "localhost")
    assert parts.port == exposed_port(runtime)
    [timeout] = re.findall(r"timeout=(\d+(?:\.\d+)?)", code)
    assert float(timeout) < seconds(flags["timeout"]), "urlopen must give up before Docker kills it"
    assert seconds(flags["start-period"]) >= 30, "start-up verifies models and applies the schema"


class _Readyz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        status = 200 if self.server.ready else 503
        body = json.dumps({"ready": self.server.ready}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_the_healthcheck_passes_on_200_and_fails_on_503_or_when_nothing_listens(runtime):
    _, argv = healthcheck(runtime)
    code = argv[2]
    target = f"127.0.0.1:{exposed_port(runtime)}/"
    assert code.count(target) == 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    server.paths, server.ready = [], True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    def probe() -> int:
        local = code.replace(target, f"127.0.0.1:{port}/")
        return subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30, check=False).returncode

    try:
        assert probe() == 0
        server.ready = False
        assert probe() != 0
        assert server.paths == ["/readyz", "/readyz"]
    finally:
        server.shutdown()
        server.server_close()
    assert probe() != 0, "nothing listening is unhealthy"


def test_the_image_never_configures_the_embedded_database(runtime, build_stage):
    for stage in (build_stage, runtime):
        env = stage_env(stage)
        assert "DATABASE_URL" not in env, "DATABASE_URL is given at run time, never baked in"
        assert not [k for k in env if k.startswith("DRIFTGATE_DATABASE__")]
    comments = " ".join(line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("#"))
    assert "external" in comments and "DATABASE_URL" in comments and "never" in comments


KNOWN_VARIABLES = {"DATABASE_URL", "DRIFTGATE_ADMIN_TOKEN", "DRIFTGATE_MODEL_CACHE", "DRIFTGATE_CONFIG"}


def understood_by_config(name: str) -> bool:
    """DATABASE_URL, the three plain DRIFTGATE_ names, or DRIFTGATE_<SECTION>__<KEY> of Settings."""
    if name in KNOWN_VARIABLES:
        return True
    match = re.fullmatch(r"DRIFTGATE_([A-Z0-9_]+?)__([A-Z0-9_]+)", name)
    if not match:
        return False
    section = Settings.model_fields.get(match.group(1).lower())
    model = section.annotation if section else None
    return isinstance(model, type) and issubclass(model, BaseModel) and match.group(2).lower() in model.model_fields


@pytest.mark.parametrize(
    "name, known",
    [
        ("DRIFTGATE_SERVER__REPLICA_ID", True),
        ("DRIFTGATE_MODELS__ALLOW_DOWNLOAD", True),
        ("DATABASE_URL", True),
        ("DRIFTGATE_ADMIN_TOKEN", True),
        ("DRIFTGATE_SERVER__REPLICAID", False),
        ("DRIFTGATE_SERVR__PORT", False),
        ("DRIFTGATE_SERVER_PORT", False),
        ("DRIFTGATE_MODELS__CUSTOM__X", False),
        ("DRIFTGATE_TOKEN", False),
    ],
)
def test_the_variable_check_knows_the_config_fields(name, known):
    assert understood_by_config(name) is known


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DRIFTGATE_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_driftgate_variable_the_image_sets_is_valid_config(runtime, clean_env):
    env = {k: v for k, v in stage_env(runtime).items() if k.startswith("DRIFTGATE_")}
    assert [k for k in env if not understood_by_config(k)] == []
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.models.allow_download is False


# ---------------------------------------------------------------------------- compose


class InterpolationError(ValueError):
    pass


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*)|(.|$))")


def interpolate(value, env: dict[str, str]):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(1):
            return "$"
        if match.group(6) is not None:
            raise InterpolationError(f"invalid interpolation in {value!r}")
        name, op, arg = match.group(2) or match.group(5), match.group(3), match.group(4)
        current = env.get(name)
        unset = current is None or (op in (":-", ":?") and current == "")
        if op in (":-", "-"):
            return arg if unset else current
        if op in (":?", "?") and unset:
            raise InterpolationError(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose_raw() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_compose_raw()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, {"DRIFTGATE_ADMIN_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def gateways(compose) -> dict[str, dict]:
    found = {n: s for n, s in compose["services"].items() if n.startswith("gateway-")}
    assert sorted(found) == ["gateway-1", "gateway-2"]
    return found


def test_the_compose_file_holds_the_database_two_gateways_the_load_test_and_monitoring(raw):
    assert set(raw["services"]) == {"db", "gateway-1", "gateway-2", "loadtest", "prometheus", "grafana"}


def test_the_database_image_is_a_pinned_pgvector_release_of_at_least_0_7(compose):
    image = compose["services"]["db"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "pgvector/pgvector" and tag and tag != "latest"
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)-pg(\d+)(-\w+)?", tag)
    assert match, f"{image}: pin the pgvector release too, e.g. 0.8.1-pg17"
    assert tuple(map(int, match.groups()[:3])) >= (0, 7, 0)


def test_the_database_has_a_pg_isready_healthcheck_and_a_named_volume(compose):
    db = compose["services"]["db"]
    kind, command = db["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and command.startswith("pg_isready")
    assert f"-U {db['environment']['POSTGRES_USER']}" in command
    assert f"-d {db['environment']['POSTGRES_DB']}" in command
    volume, _, target = db["volumes"][0].partition(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"


def test_every_gateway_reaches_the_db_service_on_5432_with_its_credentials(compose, gateways):
    db = compose["services"]["db"]["environment"]
    for name, service in gateways.items():
        url = urlsplit(service["environment"]["DATABASE_URL"])
        assert url.scheme in ("postgresql", "postgres"), name
        assert url.hostname == "db" and "db" in compose["services"] and url.port == 5432, name
        assert url.username == db["POSTGRES_USER"] and url.password == db["POSTGRES_PASSWORD"], name
        assert url.path == f"/{db['POSTGRES_DB']}", name
        assert service["depends_on"]["db"]["condition"] == "service_healthy", name


def test_the_admin_token_comes_only_from_the_environment_and_is_required(raw):
    holders = {
        n: s["environment"] for n, s in raw["services"].items() if "DRIFTGATE_ADMIN_TOKEN" in s.get("environment", {})
    }
    assert {"gateway-1", "gateway-2", "loadtest"} <= set(holders)
    for name, env in holders.items():
        assert re.fullmatch(r"\$\{DRIFTGATE_ADMIN_TOKEN:\?[^}]+\}", env["DRIFTGATE_ADMIN_TOKEN"]), name
    with pytest.raises(InterpolationError, match="DRIFTGATE_ADMIN_TOKEN"):
        interpolate(raw, {})
    with pytest.raises(InterpolationError):
        interpolate(raw, {"DRIFTGATE_ADMIN_TOKEN": ""})


def test_gateways_publish_distinct_host_ports_onto_the_exposed_container_port(gateways, runtime):
    host_ports = []
    for name, service in gateways.items():
        [mapping] = service["ports"]
        assert isinstance(mapping, str), f"{name}: quote port mappings"
        host, container = mapping.rsplit(":", 1)
        assert int(container) == exposed_port(runtime), name
        host_ports.append(int(host.rsplit(":", 1)[-1]))
    assert len(set(host_ports)) == len(host_ports)


def test_gateways_are_built_from_this_repository_and_run_the_image_command(compose, gateways):
    images = set()
    for name, service in [*gateways.items(), ("loadtest", compose["services"]["loadtest"])]:
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile", name
        images.add(service["image"])
        if name.startswith("gateway-"):
            assert "command" not in service and "entrypoint" not in service, f"{name}: use the image's CMD"
    assert len(images) == 1 and ":" in images.pop()


def test_gateways_have_distinct_replica_ids_and_only_variables_the_config_understands(gateways, clean_env):
    replica_ids = [s["environment"]["DRIFTGATE_SERVER__REPLICA_ID"] for s in gateways.values()]
    assert len(set(replica_ids)) == len(replica_ids)
    for name, service in gateways.items():
        env = service["environment"]
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        assert [k for k in env if not understood_by_config(k)] == [], name
        for key, value in env.items():
            clean_env.setenv(key, str(value))
        settings = load_settings()
        assert settings.server.replica_id == env["DRIFTGATE_SERVER__REPLICA_ID"]
        assert settings.database.dsn == env["DATABASE_URL"]
        for key in env:
            clean_env.delenv(key)


def test_the_loadtest_is_a_one_shot_that_targets_every_gateway_on_the_container_port(compose, gateways, runtime):
    service = compose["services"]["loadtest"]
    assert service["profiles"] == ["loadtest"] and service["restart"] == "no"
    command = service["command"]
    assert command[0] == "loadtest" and "--short" in command
    if "loadtest" in cli_commands():
        parse_cli(command)
    # the announced interface: --url URL[,URL] targets running gateways, --json FILE the report
    contract = argparse.ArgumentParser(prog="driftgate loadtest")
    contract.add_argument("--short", action="store_true")
    contract.add_argument("--url", required=True)
    contract.add_argument("--json", required=True)
    args = contract.parse_args(command[1:])
    targets = [urlsplit(u) for u in args.url.split(",")]
    assert sorted(t.hostname for t in targets) == sorted(gateways)
    assert {t.port for t in targets} == {exposed_port(runtime)}
    mounts = dict(v.split(":")[::-1] for v in service["volumes"])
    assert mounts.get("/out") == "./out" and args.json.startswith("/out/")
    assert service["environment"].keys() <= KNOWN_VARIABLES
    assert all(understood_by_config(k) for k in service["environment"])
    for gateway in gateways:
        assert service["depends_on"][gateway]["condition"] == "service_healthy"
    assert service["healthcheck"] == {"disable": True}


# ---------------------------------------------------------------------------- build context


def _glob(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


def test_the_build_context_sends_only_what_the_image_copies(build_stage):
    ignore = DOCKER / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for src in ("pyproject.toml", "README.md", "gateway/cli.py", "gateway/data/vaswani"):
        assert not excluded(src, patterns), src
    for package in packaged_directories():
        assert not excluded(f"{package}/__init__.py", patterns), package
    for src in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_docker.py",
        "gateway/__pycache__/cli.cpython-311.pyc",
        "driftgate.egg-info/PKG-INFO",
        "docker/Dockerfile",
    ):
        assert excluded(src, patterns), src
    for copy in build_stage.all("COPY"):
        _, rest = split_flags(copy.args)
        for src in rest.split()[:-1]:
            assert not excluded(src.rstrip("/"), patterns), f"COPY {src} is excluded from the build context"


def test_the_docker_readme_covers_build_token_scaling_and_an_existing_database():
    text = (DOCKER / "README.md").read_text()
    for needle in (
        "docker compose -f docker/docker-compose.yml up --build",
        "DRIFTGATE_ADMIN_TOKEN",
        "pgvector >= 0.7",
        "DATABASE_URL",
        "Dockerfile.dockerignore",
        "REPLICA_ID",
        "--profile loadtest",
    ):
        assert needle in text, needle

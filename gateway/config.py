"""Typed, frozen configuration: defaults, then a TOML file, then environment overrides.

Loaded once at start-up. Environment variables override the file: `DATABASE_URL` for the
database, and `DRIFTGATE_<SECTION>__<FIELD>` for anything else (for example
`DRIFTGATE_SERVER__PORT=9000`). The admin token comes only from `DRIFTGATE_ADMIN_TOKEN`,
never from a file. An invalid config reports every problem with its field name.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.domain.errors import ConfigError
from gateway.encoders.cache import default_cache_dir
from gateway.encoders.catalog import CATALOG, ModelFile, ModelSpec
from gateway.encoders.remote import RemoteEndpoint, RemoteModelSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKey(_Section):
    """A data-plane API key; `collections` scopes it (None: every collection)."""

    key: str = Field(min_length=16, description="at least 16 characters; send as Bearer or X-API-Key")
    collections: tuple[str, ...] | None = Field(None, min_length=1)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0)
    replica_id: str | None = None  # defaults to host:pid
    sync_poll_interval_s: float = Field(1.0, gt=0, le=60)  # state poll + heartbeat (LISTEN is instant)
    # a connection that has not sent a whole request (headers) for this long is closed; the
    # same timer closes idle keep-alive connections
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    max_connections: int = Field(1024, ge=1)  # beyond this, new connections get 503 and are closed
    max_large_responses: int = Field(2, ge=1)  # large query answers built at the same time (api/large.py)
    # an answer that can exceed this (k x (max_text_chars + max_metadata_bytes)) takes a large-response slot
    large_response_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # data-plane keys: a plain string is a key for every collection, {key, collections} a scoped one
    # (DRIFTGATE_API_KEYS=k1,k2 adds keys for every collection); none: the data plane is open
    api_keys: tuple[ApiKey | Annotated[str, Field(min_length=16)], ...] = ()


class DatabaseConfig(_Section):
    dsn: str | None = None  # None: start the embedded PostgreSQL in data_dir
    data_dir: Path | None = None  # None: the user's data directory
    pool_min: int = Field(2, ge=1)
    pool_max: int = Field(10, ge=1)
    hnsw_ef_search: int = Field(64, ge=1, le=1000)
    # a query whose filter matches at most this many documents (or a collection this small) is
    # answered by an exact scan instead of the HNSW index (bench/exact_scan.py)
    exact_scan_max_rows: int = Field(2000, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseConfig:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) is larger than pool_max ({self.pool_max})")
        return self


class UserModelFile(_Section):
    path: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class UserModel(_Section):
    """A model of your own: a local ONNX file and, unless the graph tokenizes, a tokenizer dir."""

    name: str
    revision: str
    dim: int = Field(ge=1, le=16000)
    onnx: UserModelFile
    tokenizer: list[UserModelFile] = []
    output: str | None = None
    pooling: Literal["mean", "cls", "none"] = "mean"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    max_tokens: int | None = Field(256, ge=1)
    max_batch: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _tokenizer_or_text_graph(self) -> UserModel:
        if self.tokenizer and self.max_tokens is None:
            raise ValueError("max_tokens is required when a tokenizer is given")
        return self

    def to_spec(self, key: str) -> ModelSpec:
        return ModelSpec(
            key=key,
            name=self.name,
            revision=self.revision,
            dim=self.dim,
            files=(
                ModelFile("onnx", str(self.onnx.path), self.onnx.sha256),
                *(ModelFile("tokenizer", str(f.path), f.sha256) for f in self.tokenizer),
            ),
            input_kind="tokens" if self.tokenizer else "text",
            output=self.output,
            pooling=self.pooling,
            normalize=self.normalize,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            max_tokens=self.max_tokens if self.tokenizer else None,
            max_batch=self.max_batch,
        )


class RemoteModel(_Section):
    """A model behind an OpenAI-compatible /embeddings endpoint (OpenAI, Azure, vLLM, TEI, Ollama ...).

    Everything that shapes its vectors (base_url, model, dim, dimensions, the per-kind request
    parameters and prefixes) goes into its fingerprint; its probe vectors are re-checked
    every drift_check_interval_s (see docs/remote-models.md)."""

    base_url: str = Field(pattern=r"^https?://\S+$")
    model: str = Field(min_length=1)
    dim: int = Field(ge=1, le=16000)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    query_params: dict[str, str | int | float | bool] = {}
    document_params: dict[str, str | int | float | bool] = {}
    query_prefix: str = ""
    document_prefix: str = ""
    dimensions: int | None = Field(None, ge=1, le=16000)
    max_batch: int = Field(32, ge=1, le=2048)
    max_concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(30.0, gt=0, le=600)
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    drift_check_interval_s: float = Field(600.0, ge=0.1)
    price_per_million_tokens: float | None = Field(None, ge=0)
    # providers are not bit-exact (batching, GPU kernels): a little slack below local models' 0.9999
    probe_tolerance: float = Field(0.995, gt=0, le=1)
    verify_min_cosine: float = Field(0.99, gt=0, le=1)
    name: str | None = None  # display name; defaults to the provider's model name

    @model_validator(mode="after")
    def _dimensions_match(self) -> RemoteModel:
        if self.dimensions is not None and self.dimensions != self.dim:
            raise ValueError(f"dimensions ({self.dimensions}) must equal dim ({self.dim}) when set")
        return self

    def to_spec(self, key: str) -> ModelSpec:
        endpoint = RemoteEndpoint(
            base_url=self.base_url.rstrip("/"),
            model=self.model,
            api_key_env=self.api_key_env,
            query_params=dict(self.query_params),
            document_params=dict(self.document_params),
            dimensions=self.dimensions,
            max_concurrency=self.max_concurrency,
            timeout_s=self.timeout_s,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            drift_check_interval_s=self.drift_check_interval_s,
            price_per_million_tokens=self.price_per_million_tokens,
        )
        return RemoteModelSpec(
            key=key,
            name=self.name or self.model,
            revision=f"remote {self.base_url.rstrip('/')}",
            dim=self.dim,
            files=(),
            input_kind="text",
            pooling="none",
            normalize=False,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            max_tokens=None,
            max_batch=self.max_batch,
            probe_tolerance=self.probe_tolerance,
            verify_min_cosine=self.verify_min_cosine,
            description=f"remote: {self.model} at {self.base_url}",
            endpoint=endpoint,
        )


class ModelsConfig(_Section):
    cache_dir: Path | None = None  # None: DRIFTGATE_MODEL_CACHE or the user's cache directory
    intra_op_threads: int = Field(0, ge=0)  # 0: onnxruntime picks (one per core)
    # where local models run: auto = CUDA when onnxruntime lists it (onnxruntime-gpu), else the CPU;
    # cuda where it is not available stops the start with a config error (domain/providers.py)
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    batch_window_ms: float = Field(0.0, ge=0, le=1000)  # 0: batch only what queued during the last call
    micro_batching: bool = True
    # interactive texts that may wait for one model; beyond it requests get 503 encoder_busy
    max_queued_texts: int = Field(4096, ge=1)
    # concurrent bulk encodes (backfill, verification) on low-priority one-threaded sessions
    bulk_lanes: int = Field(2, ge=1, le=64)
    allow_download: bool = True
    # models POST /v1/embeddings serves although no collection uses them; loaded at start
    serve: tuple[str, ...] = ()
    custom: dict[str, UserModel] = {}
    remote: dict[str, RemoteModel] = {}

    @model_validator(mode="after")
    def _no_shadowing(self) -> ModelsConfig:
        clash = sorted(set(self.custom) & set(CATALOG))
        if clash:
            raise ValueError(f"custom model keys {clash} clash with built-in catalog keys; rename them")
        clash = sorted(set(self.remote) & (set(CATALOG) | set(self.custom)))
        if clash:
            raise ValueError(f"remote model keys {clash} clash with catalog or custom model keys; rename them")
        return self


class BackfillConfig(_Section):
    enabled: bool = True  # run a backfill worker inside each gateway replica
    chunk_size: int = Field(256, ge=1, le=100_000)  # documents per chunk (one transaction)
    pipelines: int = Field(2, ge=1, le=16)  # chunks in flight per worker (DB and model overlap)
    poll_interval_s: float = Field(1.0, gt=0)
    read_p99_ceiling_ms: float | None = Field(None, gt=0)  # hold while read p99 is above
    index_memory_mb: int = Field(256, ge=16)  # maintenance_work_mem of the HNSW index build
    # max_parallel_maintenance_workers of the HNSW build (None: the server's own, 2 by default);
    # PostgreSQL uses up to that many, by table size, besides the leader process
    index_parallel_workers: int | None = Field(None, ge=0, le=64)
    # HNSW ef_construction of the build (None: pgvector's 64); lower builds faster, with lower recall
    index_ef_construction: int | None = Field(None, ge=8, le=1000)
    # documents:bulk?index=auto (the default) keeps the indexes while a load has written fewer rows
    # than this share of the collection's rows at its start, then drops them and rebuilds at the end
    bulk_rebuild_fraction: float = Field(0.1, ge=0)


class ShadowConfig(_Section):
    queue_size: int = Field(256, ge=1)  # jobs waiting; beyond it new samples are dropped and counted
    concurrency: int = Field(2, ge=1, le=64)  # shadow jobs running at once
    timeout_s: float = Field(2.0, gt=0)  # per job; a slower shadow is counted as a timeout error
    window: int = Field(2000, ge=10)  # comparisons kept for the rolling status summary
    keep_samples: int = Field(0, ge=0)  # raw samples kept in driftgate.shadow_samples (0 = none)
    store_query_text: bool = False  # raw samples keep a hash of the query unless this is on


class AdoptionConfig(_Section):
    chunk_rows: int = Field(5000, ge=1, le=1_000_000)  # source rows copied per import transaction
    max_rows_per_s: float | None = Field(None, gt=0)  # throttle the import to spare a busy database
    apply_batch: int = Field(256, ge=1, le=10_000)  # followed changes applied per transaction
    poll_interval_s: float = Field(0.5, gt=0)  # how often an idle follower looks at its queue


class AdapterConfig(_Section):
    """The learned bridge between a migration's two models (docs/adapter.md)."""

    max_pairs: int = Field(4000, ge=20, le=200_000)  # backfilled document pairs a fit samples
    held_out: float = Field(0.2, gt=0, lt=1)  # share of the pairs kept out of the fit to validate it
    # auto: Procrustes where the dimensions match, ridge where they differ; ridge measured better
    # for a fine-tune's space (docs/adapter.md)
    kind: Literal["auto", "procrustes", "ridge"] = "auto"
    ridge: float = Field(0.1, gt=0)  # regularisation of the affine map (0.1 measured best of 0.1, 1, 10)
    floor: float = Field(0.25, ge=0, le=1)  # held-out agreement@10 an adapter needs to serve


class LimitsConfig(_Section):
    max_text_chars: int = Field(100_000, ge=1)
    max_batch_documents: int = Field(1000, ge=1)
    max_k: int = Field(1000, ge=1)
    max_metadata_bytes: int = Field(64 * 1024, ge=2)
    # JSON values (numbers, strings, arrays, objects) in one request body, counted before it is
    # parsed: building millions of Python objects would stall every other request
    max_json_values: int = Field(200_000, ge=100)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTGATE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    models: ModelsConfig = ModelsConfig()
    backfill: BackfillConfig = BackfillConfig()
    shadow: ShadowConfig = ShadowConfig()
    adoption: AdoptionConfig = AdoptionConfig()
    adapter: AdapterConfig = AdapterConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment wins over the file, which is passed in as init values
        return (env_settings, init_settings)

    def model_cache_dir(self) -> Path:
        """Where model files are cached: the config, else DRIFTGATE_MODEL_CACHE, else the user cache dir."""
        return self.models.cache_dir or default_cache_dir()

    def model_specs(self) -> dict[str, ModelSpec]:
        """The built-in catalog, the models imported into the model cache, and those declared in this config
        (local files under `models.custom`, OpenAI-compatible providers under `models.remote`)."""
        from gateway.encoders.imported import imported_specs

        return {
            **CATALOG,
            **imported_specs(self.model_cache_dir()),
            **{key: m.to_spec(key) for key, m in self.models.custom.items()},
            **{key: m.to_spec(key) for key, m in self.models.remote.items()},
        }


def load_settings(path: Path | str | None = None, **overrides: object) -> Settings:
    """Read the config file (if any), apply the environment, validate everything at once."""
    path = path or os.environ.get("DRIFTGATE_CONFIG")
    data: dict = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError([f"config file {path} does not exist"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
    if "admin_token" in str(data.get("server", {})) or "admin_token" in data:
        raise ConfigError(["admin_token: never put the admin token in a file; set DRIFTGATE_ADMIN_TOKEN"])
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    if os.environ.get("DATABASE_URL"):
        data.setdefault("database", {})["dsn"] = os.environ["DATABASE_URL"]
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(
            [f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()]
        ) from None


# -- secrets: read from the environment here and nowhere else --------------------------------

ADMIN_TOKEN_ENV = "DRIFTGATE_ADMIN_TOKEN"
API_KEYS_ENV = "DRIFTGATE_API_KEYS"  # comma-separated keys for every collection (beside server.api_keys)
API_KEY_ENV = "DRIFTGATE_API_KEY"  # the one key a CLI command sends to a gateway's data plane


def admin_token_from_env() -> str:
    """The admin token (the gateway's, or the one a CLI command sends): only from the
    environment, never from a file; '' when unset (the admin API is then off)."""
    return os.environ.get(ADMIN_TOKEN_ENV, "")


def api_keys_from_env() -> str:
    return os.environ.get(API_KEYS_ENV, "")


def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None

"""The one settings model.

Every option has a default that works on one machine. Values come from, in order of
precedence: keyword arguments, environment variables ``SHOPSTREAM_*`` (nested with ``__``,
e.g. ``SHOPSTREAM_COLLECTOR__PORT=9000``), a YAML file (``SHOPSTREAM_CONFIG`` or
``./shopstream.yaml``), then the defaults below.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

#: What an e-mail salt may hold: it is written into SQL as a string literal.
SALT_PATTERN = re.compile(r"[A-Za-z0-9_.+/=-]{16,}")


class CollectorSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(
        default=5_000_000, gt=0, description="Largest request body, after gzip is undone."
    )
    max_events_per_request: int = Field(default=2_000, gt=0)
    future_tolerance_seconds: int = Field(
        default=600, ge=0, description="How far ahead of the server clock event_ts may be."
    )
    max_event_age_days: int = Field(
        default=365, gt=0, description="Older event_ts values are rejected as absurd."
    )
    dead_letter_payload_bytes: int = Field(
        default=65_536, gt=0, description="Longest unparseable body kept in raw.dead_letter."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Browser origins allowed to send events; a request from another origin is "
        "refused (403) before its body is read. Requests without an Origin header (server-side "
        "SDKs) are not affected.",
    )
    intake_memory_bytes: int = Field(
        default=64_000_000,
        gt=0,
        description="Request bodies held at once, all requests together; a request that does "
        "not fit is answered 503 + Retry-After without reading its body. Segment requests "
        "whose write key can only be in the body may use half of it.",
    )
    request_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A request's headers (from the connection or the request's first byte), "
        "then its body, must each arrive within this long; otherwise 408 and the connection "
        "is closed.",
    )
    max_header_bytes: int = Field(
        default=65_536,
        gt=0,
        description="Largest request line + headers; beyond it, 431 and the connection closed.",
    )
    segment_body_write_key: bool = Field(
        default=True,
        description="Accept a Segment writeKey in the body (some SDKs send it only there). "
        "False: a key header is required, and keyless requests are refused unread.",
    )

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics on this port (bound to collector.host) instead of the intake "
        "port, which then carries none: set it where the intake port is public (Kubernetes).",
    )

    @model_validator(mode="after")
    def _budget_holds_bodies(self) -> CollectorSettings:
        # Keyless Segment bodies get half the budget: the largest body must fit in it.
        if self.intake_memory_bytes < 2 * self.max_body_bytes:
            raise ValueError(
                f"collector.intake_memory_bytes ({self.intake_memory_bytes}) must be at least "
                f"twice collector.max_body_bytes ({self.max_body_bytes})"
            )
        return self


class SinkSettings(BaseModel):
    flush_rows: int = Field(
        default=20_000, gt=0, description="A group commit closes at this many rows..."
    )
    linger_ms: float = Field(default=2.0, ge=0, description="...or after waiting this long.")
    max_queue_rows: int = Field(
        default=500_000, gt=0, description="Back-pressure: requests wait beyond this."
    )
    writer_process: bool = Field(
        default=True,
        description="Run DuckDB in a process of its own, off the HTTP loop's GIL "
        "(false: a thread of the platform's process).",
    )
    checkpoint_wal_mb: int = Field(
        default=128,
        gt=0,
        description="Under sustained load DuckDB checkpoints after this much WAL: memory holds "
        "about this much extra; each checkpoint stalls commits briefly (idle ones are free).",
    )
    memory_limit_mb: int = Field(
        default=512,
        gt=0,
        description="DuckDB's memory limit (SET memory_limit); beyond it DuckDB evicts cached "
        "blocks and spills to <warehouse file>.tmp. Unset, DuckDB would take up to 80% of the "
        "machine's RAM, not the container's.",
    )
    writer_restarts: int = Field(
        default=5,
        ge=0,
        description="How many times in a row a writer process that died is restarted "
        "(waiting 0.5 s, then twice as long each time) before the collector's /healthz fails "
        "so that an orchestrator restarts it; a writer that ran 60 s resets the count.",
    )


class CdcSettings(BaseModel):
    schema_name: str = Field(default="public", description="Schema whose tables are captured.")
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to capture: 'table' (in schema_name) or 'schema.table'. "
        "Empty: every table of schema_name.",
    )
    slot_name: str = "shopstream"
    publication_name: str = "shopstream"
    snapshot_mode: Literal["initial", "never", "when_needed"] = "initial"
    snapshot_chunk_rows: int = Field(default=50_000, gt=0)
    batch_max_changes: int = Field(
        default=20_000, gt=0, description="Changes per batch handed to the sink (memory)."
    )
    batch_max_ms: float = Field(default=200.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    status_interval_seconds: float = Field(default=1.0, gt=0)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`shopstream cdc` serves Prometheus /metrics on this port (none: off; "
        "`shopstream run` serves them on the collector's port).",
    )


class QuerySettings(BaseModel):
    max_rows: int = Field(
        default=10_000,
        gt=0,
        description="Rows a query answers with when it does not ask for another limit "
        "(`shopstream sql --limit N`); the answer says when rows were cut off.",
    )
    max_body_bytes: int = Field(
        default=262_144, gt=0, description="Largest query request the platform reads."
    )


class TransformSettings(BaseModel):
    # Errors must not echo what was given: the salt is a secret.
    model_config = ConfigDict(hide_input_in_errors=True)

    schedule_minutes: float = Field(
        default=5.0,
        ge=0,
        description="How often the running platform rebuilds staging and marts (0: never on its "
        "own; `shopstream transform` still asks it).",
    )
    lookback_days: int = Field(
        default=3,
        ge=0,
        description="Incremental models re-read this many days before their newest row, so "
        "late data lands in the right day.",
    )
    session_timeout_minutes: int = Field(
        default=30, gt=0, description="Inactivity that ends a visitor's session."
    )
    email_salt: SecretStr | None = Field(
        default=None,
        description="Salt for hashing e-mail-like values in staging: 16 or more letters, digits "
        "or _.+/=- (it goes into SQL as a literal). Unset: a random salt kept in "
        "<data_dir>/email_salt (0600), made on first use.",
    )

    @field_validator("email_salt")
    @classmethod
    def _plain_salt(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not SALT_PATTERN.fullmatch(value.get_secret_value()):
            # The value itself is never echoed: it is a secret.
            raise ValueError(
                "transform.email_salt must be 16 or more letters, digits or _.+/=- "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    project_dir: Path | None = Field(
        default=None,
        description="A dbt project to run instead of the one shipped in the package (it gets the "
        "same generated profile, vars and captured-table models; its profile must be named "
        "'shopstream').",
    )


class GenerateSettings(BaseModel):
    purchase_event_loss: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Share of purchase events the generator drops after placing the order, as "
        "ad blockers and closed tabs do in a real shop.",
    )


class QualitySettings(BaseModel):
    schedule_minutes: float = Field(
        default=30.0,
        ge=0,
        description="How often the running platform runs the quality checks (0: never on its "
        "own; `shopstream quality run` still asks it).",
    )
    checks_file: Path | None = Field(
        default=None,
        description="Your checks, in the YAML format the README documents: its tables are added "
        "to shopstream's defaults (a table named in both takes yours), and its `disable` list "
        "turns default checks off by name.",
    )
    evidence_rows: int = Field(
        default=5, ge=0, le=100, description="Offending keys or rows kept per check (redacted)."
    )


class GenAISettings(BaseModel):
    # Errors must not echo what was given: the API key is a secret.
    model_config = ConfigDict(hide_input_in_errors=True)

    base_url: str | None = Field(
        default=None,
        description="For openai:<model>: the OpenAI-compatible server (Ollama, vLLM, llama.cpp: "
        "e.g. http://127.0.0.1:11434/v1). Unset: OpenAI's own API.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The provider's API key. Unset: the provider's own variable "
        "(GOOGLE_API_KEY for Gemini, OPENAI_API_KEY for OpenAI).",
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0, description="Longest wait for one answer before the fallback."
    )
    max_retries: int = Field(default=2, ge=0, description="Retries of a failed model call.")
    max_output_tokens: int = Field(default=2_048, gt=0)
    json_mode: bool = Field(
        default=True,
        description="For openai:<model>: ask the server for JSON mode (response_format "
        "json_object). Turn off for servers that refuse it or are slow with it (llama.cpp's "
        "grammar-constrained sampling on a busy CPU); answers are parsed and validated anyway.",
    )
    temperature: float = Field(default=0.0, ge=0, le=2)
    input_cost_per_million_tokens: float = Field(
        default=0.0, ge=0, description="Price of a million prompt tokens (cost accounting)."
    )
    output_cost_per_million_tokens: float = Field(
        default=0.0, ge=0, description="Price of a million answer tokens (cost accounting)."
    )


class TransportSettings(BaseModel):
    topic_prefix: str = Field(
        default="shopstream",
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{2,100}$",
        description="Topics are named under it, as Debezium's topic.prefix: "
        "<prefix>.<schema>.<table> for changes, <prefix>.events, <prefix>.dead_letter, "
        "<prefix>.source_schemas (Kafka and Pub/Sub alike).",
    )


class KafkaSettings(BaseModel):
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="lz4", description="The producer's compression.type."
    )
    linger_ms: float = Field(
        default=5.0, ge=0, description="The producer waits this long to fill a batch."
    )
    delivery_timeout_ms: int = Field(
        default=30_000,
        gt=0,
        description="A record not acknowledged by then fails (the collector answers 503).",
    )
    create_topics: bool = Field(
        default=True, description="Create missing topics (partitions, replication_factor)."
    )
    partitions: int = Field(default=6, gt=0, description="Partitions of topics it creates.")
    replication_factor: int = Field(
        default=1, gt=0, description="Replicas of topics it creates (3 in production)."
    )
    tombstones_on_delete: bool = Field(
        default=True,
        description="After a delete's change, a tombstone (same key, no value), as Debezium "
        "writes by default, so that compacted topics forget the row.",
    )
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description="More librdkafka properties for producers and consumers "
        "(security.protocol, sasl.mechanism, ...); give secrets through the environment "
        "(SHOPSTREAM_KAFKA__CLIENT_CONFIG as JSON), never in a file.",
    )


class PubSubSettings(BaseModel):
    create: bool = Field(
        default=True,
        description="Create missing topics and the loader's subscription (with its "
        "dead-letter policy); off in production, where Terraform creates them.",
    )
    subscription: str = Field(
        default="shopstream-loader",
        description="The loader's subscription on each topic is <topic>.<subscription>.",
    )
    max_delivery_attempts: int = Field(
        default=5,
        ge=5,
        le=100,
        description="Deliveries of one message before the subscription's dead-letter "
        "policy moves it to <prefix>.dead_letter (Pub/Sub allows 5 to 100).",
    )
    order_events: bool = Field(
        default=False,
        description="Publish events with their session as ordering key, so that ordered "
        "subscriptions see a session in order. Off by default: Google's publisher batches "
        "per ordering key, so a request of 100 sessions' events becomes ~100 publish calls "
        "(bench/transport.py). Changes always carry their primary key as ordering key, "
        "schema records their table.",
    )
    batch_max_messages: int = Field(default=1000, gt=0, le=1000)
    batch_max_bytes: int = Field(default=1_000_000, gt=0, le=10_000_000)
    batch_max_latency_ms: float = Field(default=10.0, ge=0)
    flow_max_messages: int = Field(
        default=10_000, gt=0, description="Publisher flow control: messages in flight."
    )
    flow_max_bytes: int = Field(
        default=100_000_000, gt=0, description="Publisher flow control: bytes in flight."
    )
    publish_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A publish not acknowledged by then (retries included) fails: the "
        "collector answers 503 and the CDC reader reconnects.",
    )
    ack_deadline_seconds: int = Field(
        default=60,
        ge=10,
        le=600,
        description="The loader's subscriptions' ack deadline; the loader extends it while a "
        "load takes longer.",
    )
    discover_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The loader looks for new topics under the prefix (tables captured "
        "since it started) this often.",
    )


class LoaderSettings(BaseModel):
    group: str = Field(
        default="shopstream-loader",
        description="Kafka consumer group (run more loaders with it to scale out).",
    )
    batch_messages: int = Field(
        default=5000, gt=0, description="Messages read before one durable load..."
    )
    batch_wait_ms: float = Field(default=200.0, ge=0, description="...or after this long.")
    topic_refresh_ms: int = Field(
        default=5_000,
        gt=0,
        description="How often the Kafka loader looks for new topics under the prefix (a "
        "table newly captured by CDC gets its topic; librdkafka's default is 5 minutes).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve the loader's Prometheus metrics (shopstream_loader_*) on this port.",
    )
    instance_id: str | None = Field(
        default=None,
        description="Kafka static group membership (group.instance.id): a stable id per "
        "loader (a StatefulSet pod's name), so that a restarted loader takes its partitions "
        "back at once instead of after the session timeout. Never the same for two loaders "
        "running at once.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Kafka consumer session timeout: a loader that died (kill -9) holds its "
        "partitions this long before the group hands them to the others.",
    )


class BigQuerySettings(BaseModel):
    append: Literal["storage_write", "streaming_insert"] = Field(
        default="storage_write",
        description="How raw rows are appended: the Storage Write API (cheaper, exactly "
        "what was committed) or legacy streaming inserts (tabledata.insertAll).",
    )
    maximum_bytes_billed: int | None = Field(
        default=None, gt=0, description="Queries that would scan more fail instead."
    )


class BeamSettings(BaseModel):
    """The Beam pipeline (``python -m shopstream.beam``): what it reads and how it runs."""

    runner: str = Field(
        default="BundleBasedDirectRunner",
        description="Beam runner: BundleBasedDirectRunner locally, DataflowRunner on GCP.",
    )
    region: str = Field(default="", description="Dataflow region (e.g. europe-west1).")
    temp_location: str = Field(default="", description="Dataflow temp files (gs://...).")
    streaming_engine: bool = Field(default=True, description="Dataflow Streaming Engine.")
    autoscaling_algorithm: Literal["THROUGHPUT_BASED", "NONE"] = "THROUGHPUT_BASED"
    max_workers: int = Field(default=10, gt=0, description="Dataflow's autoscaling ceiling.")
    sdk_container_image: str = Field(
        default="",
        description="Dataflow workers' image: Beam's Python SDK image with shopstream "
        "installed (deploy/beam/Dockerfile). Empty: Beam's default image, which lacks it.",
    )
    window_seconds: int = Field(
        default=60, gt=0, description="Real-time aggregates' fixed window (events, revenue)."
    )
    allowed_lateness_seconds: int = Field(
        default=300,
        ge=0,
        description="An event received this long after its window closed (by the watermark) "
        "still updates the window's aggregate (a late pane); later ones are only in raw.",
    )
    subscription: str = Field(
        default="shopstream-beam",
        description="The pipeline's subscription on each topic is <topic>.<subscription> "
        "(its own, so that it and a loader each get every message).",
    )
    topics: list[str] = Field(
        default_factory=list,
        description="Topics to read. Empty: <prefix>.events, <prefix>.dead_letter, "
        "<prefix>.source_schemas and the change topics of cdc.tables (list the captured "
        "tables there: Pub/Sub cannot subscribe to a name pattern).",
    )
    batch_rows: int = Field(
        default=5000,
        gt=0,
        description="Rows per warehouse append at most (a bundle is appended in one or more).",
    )


class ObservabilitySettings(BaseModel):
    tracing: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="OpenTelemetry spans (collector request -> sink -> warehouse; CDC "
        "transaction -> durable): off, console (stderr) or otlp (to otlp_endpoint).",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        description="OTLP/HTTP receiver for tracing=otlp (an OpenTelemetry Collector).",
    )
    trace_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of traces kept (parent-based)."
    )
    service_name: str = Field(
        default="", description="service.name of the spans; empty: shopstream-<command>."
    )
    pushgateway_url: str | None = Field(
        default=None,
        description="Prometheus Pushgateway where short-lived runs (an Airflow task, the quality "
        "CronJob) push their outcome metrics, and `shopstream quality run` the checks' "
        "statuses; none: they are only served by long-running processes.",
    )


class OptimizerSettings(BaseModel):
    price_per_tib: float = Field(
        default=6.25,
        gt=0,
        description="Dollars per TiB scanned (BigQuery on-demand list price) for the optimizer's "
        "cost figures, before and after a rewrite.",
    )
    wide_table_columns: int = Field(
        default=8,
        gt=0,
        description="A table with this many columns or more is wide: SELECT * on it is a finding.",
    )
    verify_full_rows: int = Field(
        default=1_000_000,
        gt=0,
        description="A rewrite is verified on the full data when every table it reads has at "
        "most this many rows; above it, on a stated sample of them.",
    )
    verify_sample_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="The sample of a large table a rewrite is verified on (percent of rows, "
        "chosen by a hash of the row, the same for the query and its rewrite).",
    )
    verify_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The queries that verify one rewrite (its schema, the comparison of its rows "
        "and of their order) are stopped once they took this long together, and the rewrite is "
        "rejected as not verified.",
    )
    verify_max_bytes: int = Field(
        default=10 * 1024**3,
        gt=0,
        description="On a warehouse with a dry run (BigQuery): a rewrite whose comparison would "
        "scan more than this many bytes is not verified (and not billed); default 10 GiB.",
    )
    llm_rewrites: bool = Field(
        default=True,
        description="Ask the configured LLM (SHOPSTREAM_LLM) for rewrites too; each is shown only "
        "once verified, and a rejected one is reported with why. No LLM set: rule rewrites only.",
    )


class DocsSettings(BaseModel):
    out_dir: Path | None = Field(
        default=None,
        description="Where `shopstream docs build` writes the site (HTML) and its Markdown. "
        "Unset: <data_dir>/docs.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPSTREAM_",
        env_nested_delimiter="__",
        extra="ignore",
        # Settings hold secrets (write keys, the e-mail salt): errors never echo what was given.
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(default=Path("data"), description="Where local state lives.")
    warehouse_url: str = Field(
        default="",
        description="Which warehouse, by URL; its scheme picks the backend "
        "(shopstream.warehouse.WAREHOUSES: duckdb:///path/file.duckdb). Empty means "
        "duckdb:///<data_dir>/shopstream.duckdb.",
    )
    sink_url: str = Field(
        default="warehouse",
        description="Where accepted records go, by URL; its scheme picks the sink "
        "(shopstream.sinks.SINKS: warehouse, the group-commit sink into the warehouse).",
    )
    write_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys; when set, the collector requires one of them.",
    )
    postgres_dsn: str | None = Field(
        default=None, description="The shop's PostgreSQL; none means make run starts a local one."
    )
    timezone: str = Field(
        default="UTC",
        description="The shop's business time zone (IANA name): marts count days in it.",
    )
    log_level: str = "INFO"
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    cdc: CdcSettings = Field(default_factory=CdcSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    llm: str = Field(
        default="",
        description="The chat model that writes quality reports, as provider:model "
        "(google_genai:gemini-2.5-flash, or openai:<model> with genai.base_url for Ollama, "
        "vLLM or llama.cpp). Empty: no LLM; the deterministic analyst writes them.",
    )
    genai: GenAISettings = Field(default_factory=GenAISettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pubsub: PubSubSettings = Field(default_factory=PubSubSettings)
    loader: LoaderSettings = Field(default_factory=LoaderSettings)
    bigquery: BigQuerySettings = Field(default_factory=BigQuerySettings)
    beam: BeamSettings = Field(default_factory=BeamSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    docs: DocsSettings = Field(default_factory=DocsSettings)

    @field_validator("write_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: give an IANA name such as 'UTC' or 'Asia/Seoul'"
            ) from None
        return value

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, value: str) -> str:
        # Imported here: no LangChain import happens for this (llm.py loads it lazily).
        from shopstream.genai.llm import parse_llm

        parse_llm(value)  # LLMConfigError (a ValueError) names the accepted forms
        return value.strip()

    @field_validator("warehouse_url")
    @classmethod
    def _known_warehouse(cls, value: str) -> str:
        # Imported here: the registries' modules import this one (for their settings).
        from shopstream.warehouse import WAREHOUSE_EXAMPLE, WAREHOUSES, url_scheme

        if value:
            url_scheme(value, WAREHOUSES, "warehouse_url", WAREHOUSE_EXAMPLE)
        return value

    @field_validator("sink_url")
    @classmethod
    def _known_sink(cls, value: str) -> str:
        from shopstream.sinks import SINK_EXAMPLE, SINKS
        from shopstream.warehouse import url_scheme

        url_scheme(value, SINKS, "sink_url", SINK_EXAMPLE)
        return value

    @property
    def warehouse(self) -> str:
        """The warehouse's URL (``warehouse_url``, or the DuckDB file in ``data_dir``)."""
        return self.warehouse_url or f"duckdb:///{self.data_dir / 'shopstream.duckdb'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = Path(os.environ.get("SHOPSTREAM_CONFIG", "shopstream.yaml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_path.is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        elif "SHOPSTREAM_CONFIG" in os.environ:
            raise FileNotFoundError(
                f"SHOPSTREAM_CONFIG points at {yaml_path}, which does not exist"
            )
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)

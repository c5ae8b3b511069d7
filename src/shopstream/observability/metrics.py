"""Prometheus metrics, one registry for the process.

Label values are closed sets (event types, reason codes from
:class:`~shopstream.events.codes.ReasonCode`, table names) so that a hostile client cannot grow
the number of series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "shopstream_collector_events_received",
    "Events received by the collector, by event type (unknown types as 'unknown').",
    ["event_type"],
    registry=REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "shopstream_collector_events_accepted",
    "Events accepted and durable in raw.",
    ["event_type"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "shopstream_collector_events_rejected",
    "Events rejected, by event type and reason code.",
    ["event_type", "reason"],
    registry=REGISTRY,
)
REQUESTS_REJECTED = Counter(
    "shopstream_collector_requests_rejected",
    "Whole requests refused before any event was read, by reason code.",
    ["reason"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "shopstream_collector_request_seconds",
    "Collector request latency, until the answer (after durability).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
SINK_BATCH_ROWS = Histogram(
    "shopstream_sink_batch_rows",
    "Rows per group commit.",
    buckets=(1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000),
    registry=REGISTRY,
)
SINK_FLUSH_SECONDS = Histogram(
    "shopstream_sink_flush_seconds",
    "Time to build and commit one group.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
SINK_QUEUE_ROWS = Gauge(
    "shopstream_sink_queue_rows",
    "Rows waiting for the next group commit.",
    registry=REGISTRY,
)
SINK_ROWS_WRITTEN = Counter(
    "shopstream_sink_rows_written",
    "Rows made durable, by raw table.",
    ["table"],
    registry=REGISTRY,
)
SINK_FAILURES = Counter(
    "shopstream_sink_failures",
    "Group commits that failed and were retried one submission at a time.",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "shopstream_dead_letters",
    "Rows written to raw.dead_letter, by source and reason code.",
    ["source", "reason"],
    registry=REGISTRY,
)

# -- CDC ------------------------------------------------------------------------------------

CDC_CHANGES = Counter(
    "shopstream_cdc_changes",
    "Row changes captured, by raw table and op (c, u, d, r, t).",
    ["table", "op"],
    registry=REGISTRY,
)
CDC_BATCH_CHANGES = Histogram(
    "shopstream_cdc_batch_changes",
    "Changes per batch handed to the sink.",
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000),
    registry=REGISTRY,
)
CDC_FLUSH_SECONDS = Histogram(
    "shopstream_cdc_flush_wait_seconds",
    "Time the reader waited for a batch to become durable.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
CDC_LAG_BYTES = Gauge(
    "shopstream_cdc_replication_lag_bytes",
    "WAL between the server's current position and the slot's confirmed flush position.",
    registry=REGISTRY,
)
CDC_LAG_SECONDS = Gauge(
    "shopstream_cdc_replication_lag_seconds",
    "Seconds since the commit of the last change made durable.",
    registry=REGISTRY,
)
CDC_RETAINED_WAL = Gauge(
    "shopstream_cdc_slot_retained_wal_bytes",
    "WAL the replication slot keeps on the server (current LSN - restart_lsn).",
    registry=REGISTRY,
)
CDC_RECONNECTS = Counter(
    "shopstream_cdc_reconnects",
    "Times the reader lost PostgreSQL and reconnected.",
    registry=REGISTRY,
)

# -- loader (transport → raw) ---------------------------------------------------------------

LOADER_MESSAGES = Counter(
    "shopstream_loader_messages",
    "Messages the loader made durable and committed (rows, dead letters, tombstones).",
    registry=REGISTRY,
)
LOADER_READ = Counter(
    "shopstream_loader_read_messages",
    "Messages the loader read from the transport, durable or not yet (the gap to "
    "shopstream_loader_messages is what is on its way; tests wait on it).",
    registry=REGISTRY,
)
LOADER_ROWS = Counter(
    "shopstream_loader_rows",
    "Rows the loader made durable, by raw table.",
    ["table"],
    registry=REGISTRY,
)
LOADER_POISON = Counter(
    "shopstream_loader_poison_messages",
    "Messages that could not be decoded or validated (to raw.dead_letter and its topic).",
    registry=REGISTRY,
)
LOADER_REFUSED = Counter(
    "shopstream_loader_refused_rows",
    "Decoded rows the warehouse refused (to raw.dead_letter and its topic).",
    registry=REGISTRY,
)
LOADER_BATCH_MESSAGES = Histogram(
    "shopstream_loader_batch_messages",
    "Messages per loaded batch.",
    buckets=(1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000),
    registry=REGISTRY,
)
LOADER_BATCH_SECONDS = Histogram(
    "shopstream_loader_batch_seconds",
    "From a batch's poll to its offsets' commit (acks).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LOADER_RETRIES = Counter(
    "shopstream_loader_retries",
    "Batches loaded again after the warehouse (or the dead-letter topic) failed.",
    registry=REGISTRY,
)
LOADER_LAG = Gauge(
    "shopstream_loader_lag_messages",
    "Messages on the transport not yet read by this loader (where the source can tell).",
    registry=REGISTRY,
)

# -- data quality ---------------------------------------------------------------------------
# Labels come from the checks' configuration (check name, table, kind): a closed set that
# only the operator's YAML grows.

QUALITY_CHECK_STATUS = Gauge(
    "shopstream_quality_check_status",
    "1 for a check's status in its latest run, 0 for the other statuses (pass, warn, fail, "
    "error, learning); a check in parts shows its worst.",
    ["check", "table", "kind", "status"],
    registry=REGISTRY,
)
QUALITY_CHECK_OBSERVED = Gauge(
    "shopstream_quality_check_observed",
    "The value a check observed in its latest run (its worst part's; NaN when none), in the "
    "check's unit (monitoring.data_quality_checks.unit).",
    ["check", "table", "kind"],
    registry=REGISTRY,
)
QUALITY_RUNS = Counter(
    "shopstream_quality_runs",
    "Quality runs, by outcome: ok (every check judged), alarm (a check failed or errored), "
    "failed (the run itself could not run).",
    ["outcome"],
    registry=REGISTRY,
)
QUALITY_LAST_RUN = Gauge(
    "shopstream_quality_last_run_timestamp_seconds",
    "When the latest quality run ended (Unix time).",
    registry=REGISTRY,
)

# -- operations: what the alerts in deploy/monitoring/ are written on -----------------------

COLLECTOR_RESPONSES = Counter(
    "shopstream_collector_responses",
    "Collector answers by route and status class (2xx, 4xx, 5xx): the error-rate alert's "
    "numerator and denominator.",
    ["route", "status"],
    registry=REGISTRY,
)
SINK_QUEUE_LIMIT_ROWS = Gauge(
    "shopstream_sink_queue_limit_rows",
    "Rows the sink may hold before intake is turned away (back-pressure starts there).",
    registry=REGISTRY,
)
RAW_NEWEST_RECORD = Gauge(
    "shopstream_raw_newest_record_timestamp_seconds",
    "Event time of the newest row this process made durable in raw, by raw table (events: "
    "received_at; changes: commit_ts), Unix time: data freshness is now minus this.",
    ["table"],
    registry=REGISTRY,
)
# Batch runs (transform, quality, docs) record their outcome here; short-lived processes (an
# Airflow task, the quality CronJob) push these to a Pushgateway (observability.pushgateway_url)
# so that the PipelineExecutionFailed alert sees them after the process is gone.
PIPELINE_RUNS = Counter(
    "shopstream_pipeline_runs",
    "Pipeline runs by pipeline (transform, quality, docs) and outcome (success, failed).",
    ["pipeline", "outcome"],
    registry=REGISTRY,
)
#: name -> help of the two gauges a short-lived run pushes (the Pushgateway wants the same help
#: text from every pusher of a metric).
PIPELINE_LAST_HELP = {
    "success": (
        "shopstream_pipeline_last_success_timestamp_seconds",
        "When the pipeline's latest successful run ended (Unix time).",
    ),
    "failed": (
        "shopstream_pipeline_last_failure_timestamp_seconds",
        "When the pipeline's latest failed run ended (Unix time).",
    ),
}
PIPELINE_LAST_SUCCESS = Gauge(
    *PIPELINE_LAST_HELP["success"],
    ["pipeline"],
    registry=REGISTRY,
)
PIPELINE_LAST_FAILURE = Gauge(
    *PIPELINE_LAST_HELP["failed"],
    ["pipeline"],
    registry=REGISTRY,
)

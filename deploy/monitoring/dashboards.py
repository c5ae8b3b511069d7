"""The Grafana dashboards, as code (grafana-foundation-sdk builders).

``build.py`` renders every dashboard of :func:`dashboards` to JSON. Each query names only
metrics the components emit (tests/deploy/test_metric_names.py checks it); each panel's title
is unique in its dashboard and its id is assigned here, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Chart:
    """One panel: a time series (default) or a single stat."""

    title: str
    queries: Sequence[Query]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    return target.legend_format(query.legend or "__auto")


def _panel(chart: Chart, panel_id: int) -> cogbuilder.Builder[model.Panel]:
    panel: timeseries.Panel | stat.Panel
    if chart.kind == "stat":
        panel = stat.Panel()
    else:
        panel = (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(10)
            .show_points(common.VisibilityMode.NEVER)
        )
    panel = panel.id(panel_id).title(chart.title).datasource(DATASOURCE).unit(chart.unit)
    panel = panel.height(4 if chart.kind == "stat" else 8).span(chart.width)
    if chart.description:
        panel = panel.description(chart.description)
    refs = "ABCDEFGHIJ"
    return panel.targets([_target(q, refs[i]) for i, q in enumerate(chart.queries)])


def _dashboard(uid: str, title: str, description: str, charts: Sequence[Chart]) -> model.Dashboard:
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["shopstream"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for panel_id, chart in enumerate(charts, start=1):
        board = board.with_panel(_panel(chart, panel_id))
    return board.build()


def _rate(selector: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({selector}[{RATE}]))"


def _p(quantile: float, histogram: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({histogram}_bucket[{RATE}])))"


def collector() -> model.Dashboard:
    responses = "shopstream_collector_responses_total"
    errors = responses + '{status="5xx"}'
    return _dashboard(
        "shopstream-collector",
        "shopstream / collector",
        "Intake: answers, events, refusals and latency of the collector pods.",
        [
            Chart(
                "5xx share of answers",
                [Query(f"{_rate(errors)} / {_rate(responses)}", "5xx")],
                "percentunit",
                "EventCollectorHighErrorRate fires above 5% for 5 minutes.",
                kind="stat",
                width=6,
            ),
            Chart(
                "Events accepted per second",
                [Query(_rate("shopstream_collector_events_accepted_total"), "accepted")],
                "ops",
                kind="stat",
                width=6,
            ),
            Chart(
                "Events rejected per second",
                [Query(_rate("shopstream_collector_events_rejected_total"), "rejected")],
                "ops",
                kind="stat",
                width=6,
            ),
            Chart(
                "Requests refused per second",
                [Query(_rate("shopstream_collector_requests_rejected_total"), "refused")],
                "reqps",
                kind="stat",
                width=6,
            ),
            Chart(
                "Answers by status class",
                [Query(_rate(responses, "status"), "{{status}}")],
                "reqps",
            ),
            Chart(
                "Requests per second by pod (the HPA's metric)",
                [
                    Query(
                        "sum by (pod) (rate(shopstream_collector_request_seconds_count[2m]))",
                        "{{pod}}",
                    )
                ],
                "reqps",
                "shopstream_collector_requests_per_second through prometheus-adapter.",
            ),
            Chart(
                "Events by type",
                [
                    Query(
                        _rate("shopstream_collector_events_received_total", "event_type"),
                        "received {{event_type}}",
                    ),
                    Query(
                        _rate("shopstream_collector_events_accepted_total", "event_type"),
                        "accepted {{event_type}}",
                    ),
                ],
                "ops",
            ),
            Chart(
                "Rejected events by reason",
                [
                    Query(
                        _rate("shopstream_collector_events_rejected_total", "reason"), "{{reason}}"
                    )
                ],
                "ops",
            ),
            Chart(
                "Refused requests by reason",
                [
                    Query(
                        _rate("shopstream_collector_requests_rejected_total", "reason"),
                        "{{reason}}",
                    )
                ],
                "reqps",
                "busy and sink_unavailable are back-pressure (SinkBackPressure).",
            ),
            Chart(
                "Request latency by route",
                [
                    Query(
                        _p(0.5, "shopstream_collector_request_seconds", "route"), "p50 {{route}}"
                    ),
                    Query(
                        _p(0.99, "shopstream_collector_request_seconds", "route"), "p99 {{route}}"
                    ),
                ],
                "s",
                "Until the answer, after durability.",
            ),
        ],
    )


def cdc() -> model.Dashboard:
    return _dashboard(
        "shopstream-cdc",
        "shopstream / CDC",
        "Change data capture from the shop database: changes, lag, the slot's WAL.",
        [
            Chart(
                "Replication lag",
                [Query("max(shopstream_cdc_replication_lag_seconds)", "lag")],
                "s",
                kind="stat",
                width=8,
            ),
            Chart(
                "WAL behind the slot",
                [Query("max(shopstream_cdc_replication_lag_bytes)", "bytes")],
                "bytes",
                kind="stat",
                width=8,
            ),
            Chart(
                "WAL retained by the slot",
                [Query("max(shopstream_cdc_slot_retained_wal_bytes)", "retained")],
                "bytes",
                "CdcSlotRetainedWalHigh fires above 5 GiB for 10 minutes.",
                kind="stat",
                width=8,
            ),
            Chart(
                "Changes per second by table",
                [Query(_rate("shopstream_cdc_changes_total", "table"), "{{table}}")],
                "ops",
            ),
            Chart(
                "Changes per second by operation",
                [Query(_rate("shopstream_cdc_changes_total", "op"), "{{op}}")],
                "ops",
            ),
            Chart(
                "Lag over time",
                [Query("shopstream_cdc_replication_lag_seconds", "{{instance}}")],
                "s",
                "Seconds since the commit of the last change made durable (grows on an idle shop).",
            ),
            Chart(
                "Slot WAL over time",
                [
                    Query("shopstream_cdc_slot_retained_wal_bytes", "retained {{instance}}"),
                    Query("shopstream_cdc_replication_lag_bytes", "behind {{instance}}"),
                ],
                "bytes",
            ),
            Chart(
                "Batch size and durable wait",
                [
                    Query(_p(0.99, "shopstream_cdc_batch_changes"), "p99 changes per batch"),
                    Query(_p(0.99, "shopstream_cdc_flush_wait_seconds"), "p99 wait (s)"),
                ],
            ),
            Chart(
                "Reconnects",
                [Query("sum(increase(shopstream_cdc_reconnects_total[1h]))", "per hour")],
            ),
        ],
    )


def transport() -> model.Dashboard:
    return _dashboard(
        "shopstream-transport",
        "shopstream / transport",
        "The sink (collector and CDC to raw or the broker) and the loader (broker to raw).",
        [
            Chart(
                "Sink queue share of its limit",
                [
                    Query(
                        "max(shopstream_sink_queue_rows / (shopstream_sink_queue_limit_rows > 0))",
                        "queue",
                    )
                ],
                "percentunit",
                "SinkBackPressure fires above 80% for 5 minutes.",
                kind="stat",
                width=8,
            ),
            Chart(
                "Loader lag",
                [Query("sum(shopstream_loader_lag_messages)", "messages")],
                kind="stat",
                width=8,
            ),
            Chart(
                "Dead letters per second",
                [Query(_rate("shopstream_dead_letters_total"), "dead letters")],
                "ops",
                kind="stat",
                width=8,
            ),
            Chart(
                "Sink queue",
                [
                    Query("shopstream_sink_queue_rows", "rows {{instance}}"),
                    Query("shopstream_sink_queue_limit_rows", "limit {{instance}}"),
                ],
            ),
            Chart(
                "Rows made durable by table",
                [Query(_rate("shopstream_sink_rows_written_total", "table"), "{{table}}")],
                "ops",
            ),
            Chart(
                "Group commits",
                [
                    Query(_p(0.99, "shopstream_sink_flush_seconds"), "p99 commit (s)"),
                    Query(_p(0.5, "shopstream_sink_batch_rows"), "p50 rows per commit"),
                    Query(_rate("shopstream_sink_failures_total"), "failed commits/s"),
                ],
            ),
            Chart(
                "Dead letters by source and reason",
                [
                    Query(
                        _rate("shopstream_dead_letters_total", "source, reason"),
                        "{{source}} {{reason}}",
                    )
                ],
                "ops",
            ),
            Chart(
                "Loader messages",
                [
                    Query(_rate("shopstream_loader_read_messages_total"), "read"),
                    Query(_rate("shopstream_loader_messages_total"), "committed"),
                    Query("sum(shopstream_loader_lag_messages)", "lag"),
                ],
            ),
            Chart(
                "Loader rows by table",
                [Query(_rate("shopstream_loader_rows_total", "table"), "{{table}}")],
                "ops",
            ),
            Chart(
                "Loader trouble",
                [
                    Query(_rate("shopstream_loader_poison_messages_total"), "poison"),
                    Query(_rate("shopstream_loader_refused_rows_total"), "refused rows"),
                    Query(_rate("shopstream_loader_retries_total"), "retried batches"),
                ],
                "ops",
            ),
            Chart(
                "Loader batches",
                [
                    Query(_p(0.99, "shopstream_loader_batch_seconds"), "p99 poll to commit (s)"),
                    Query(_p(0.5, "shopstream_loader_batch_messages"), "p50 messages"),
                ],
            ),
        ],
    )


def freshness() -> model.Dashboard:
    newest = "shopstream_raw_newest_record_timestamp_seconds"
    return _dashboard(
        "shopstream-freshness",
        "shopstream / freshness and pipelines",
        "How old raw is, and how the batch pipelines (transform, quality, docs) ended.",
        [
            Chart(
                "raw.events age",
                [Query(f'time() - max({newest}{{table="events"}})', "age")],
                "s",
                "DataFreshnessSLABreach fires above 30 minutes.",
                kind="stat",
                width=12,
            ),
            Chart(
                "Pipelines whose latest run failed",
                [
                    Query(
                        "count(max by (pipeline) "
                        "(shopstream_pipeline_last_failure_timestamp_seconds) > max by (pipeline) "
                        "(shopstream_pipeline_last_success_timestamp_seconds)) or vector(0)",
                        "failed",
                    )
                ],
                kind="stat",
                width=12,
            ),
            Chart(
                "raw age by table",
                [Query(f"time() - max by (table) ({newest})", "{{table}}")],
                "s",
                width=24,
            ),
            Chart(
                "Time since the last success",
                [
                    Query(
                        "time() - max by (pipeline) "
                        "(shopstream_pipeline_last_success_timestamp_seconds)",
                        "{{pipeline}}",
                    )
                ],
                "s",
            ),
            Chart(
                "Time since the last failure",
                [
                    Query(
                        "time() - max by (pipeline) "
                        "(shopstream_pipeline_last_failure_timestamp_seconds)",
                        "{{pipeline}}",
                    )
                ],
                "s",
            ),
            Chart(
                "Runs by outcome (long-running platform)",
                [
                    Query(
                        "sum by (pipeline, outcome) (increase(shopstream_pipeline_runs_total[1h]))",
                        "{{pipeline}} {{outcome}}",
                    )
                ],
                description="Runs counted by a long-running platform; runs pushed by Airflow "
                "tasks show in the two panels above.",
                width=24,
            ),
        ],
    )


def quality() -> model.Dashboard:
    status = "shopstream_quality_check_status"
    return _dashboard(
        "shopstream-quality",
        "shopstream / data quality",
        "The data-quality checks' latest results.",
        [
            Chart(
                "Failing checks",
                [Query(f'count({status}{{status="fail"}} == 1) or vector(0)', "fail")],
                kind="stat",
                width=8,
            ),
            Chart(
                "Warning checks",
                [Query(f'count({status}{{status="warn"}} == 1) or vector(0)', "warn")],
                kind="stat",
                width=8,
            ),
            Chart(
                "Time since the last quality run",
                [Query("time() - max(shopstream_quality_last_run_timestamp_seconds)", "age")],
                "s",
                kind="stat",
                width=8,
            ),
            Chart(
                "Check status",
                [Query(f"max by (check, table, status) ({status} == 1)", "{{check}} {{status}}")],
                description="1 while a check is in that status.",
            ),
            Chart(
                "Observed values",
                [Query("shopstream_quality_check_observed", "{{check}} ({{table}})")],
            ),
            Chart(
                "Runs by outcome",
                [
                    Query(
                        "max(changes(shopstream_pipeline_last_success_timestamp_seconds"
                        '{pipeline="quality"}[1h]))',
                        "success",
                    ),
                    Query(
                        "max(changes(shopstream_pipeline_last_failure_timestamp_seconds"
                        '{pipeline="quality"}[1h]))',
                        "failed",
                    ),
                ],
                description="Quality runs in the last hour, from the quality pipeline's outcome "
                "timestamps: a one-shot run (CronJob, Airflow) pushes them, a running platform "
                "serves them (shopstream_quality_runs_total is not pushed: a fresh process's "
                "counter never moves). failed: a check failed or errored, or the run could "
                "not run.",
                width=24,
            ),
        ],
    )


#: file stem -> dashboard
DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {
    "collector": collector,
    "cdc": cdc,
    "transport": transport,
    "freshness": freshness,
    "quality": quality,
}


def dashboards() -> dict[str, model.Dashboard]:
    return {name: build() for name, build in DASHBOARDS.items()}

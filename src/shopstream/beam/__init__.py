"""The Beam pipeline: the production shape's stream processing (Apache Beam, on Dataflow).

``python -m shopstream.beam --from pubsub://<project>`` reads the topics the collectors and the
CDC reader publish to, decodes and validates every message with the same functions as the
loader (:func:`shopstream.events.messages.decode`), appends the rows to the warehouse's raw
tables through the Warehouse protocol (DuckDB locally, BigQuery on Dataflow: the same code),
sends poison messages to ``raw.dead_letter`` with their reason, and keeps real-time
aggregates: events and revenue per fixed window by event type and device type, in
``mart.realtime_activity``.

Apache Beam cannot share the platform's virtualenv (it needs pyarrow<26 and, with ``[gcp]``,
google-cloud-aiplatform<2): it runs from ``.venv-beam`` (``make beam-venv``). Only this
package imports Beam, and only :mod:`.pipeline` and :mod:`.__main__` at import time;
:mod:`.options` builds the runner's arguments without it.
"""

from __future__ import annotations

#: The mart table of the real-time aggregates.
ACTIVITY_TABLE = "realtime_activity"

__all__ = ["ACTIVITY_TABLE"]

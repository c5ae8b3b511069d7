"""The dbt target for BigQuery: the production warehouse's profile, from its URL.

``bigquery://<project>?location=EU`` becomes a dbt-bigquery output that authenticates the way
Google's libraries do on their own (``method: oauth``: application default credentials, i.e.
``GOOGLE_APPLICATION_CREDENTIALS`` or the workload identity of the pod), so no key ever
passes through shopstream's settings::

    >>> output = bigquery_output("bigquery://shop-prod?location=asia-northeast3")
    >>> output["type"], output["project"], output["dataset"], output["location"]
    ('bigquery', 'shop-prod', 'staging', 'asia-northeast3')

Layers are datasets named as they are (raw, staging, mart, monitoring): the project's
``generate_schema_name`` macro puts each model in its layer's dataset.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

EXAMPLE = "bigquery://<gcp project>?location=<region>"


def bigquery_output(url: str, *, threads: int = 4) -> dict[str, Any]:
    """A dbt-bigquery profile output for the warehouse at ``url``."""
    parts = urlsplit(url)
    if parts.scheme != "bigquery" or not parts.netloc:
        raise ValueError(f"not a BigQuery warehouse URL: {url!r} (expected {EXAMPLE})")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    output: dict[str, Any] = {
        "type": "bigquery",
        "method": "oauth",
        "project": parts.netloc,
        "dataset": "staging",
        "threads": threads,
    }
    if "location" in query:
        output["location"] = query["location"]
    return output

"""The dbt target for BigQuery: the production warehouse's profile, from its URL.

``bigquery://<project>?location=EU`` becomes a dbt-bigquery output that authenticates the way
Google's libraries do on their own (``method: oauth``: application default credentials, i.e.
``GOOGLE_APPLICATION_CREDENTIALS`` or the workload identity of the pod), so no key ever
passes through shopstream's settings::

    >>> output = bigquery_output("bigquery://shop-prod?location=asia-northeast3")
    >>> output["type"], output["project"], output["dataset"], output["location"]
    ('bigquery', 'shop-prod', 'staging', 'asia-northeast3')

The emulator form (``&endpoint=http://127.0.0.1:9050``, see :mod:`shopstream.warehouse.bigquery`)
points dbt at that endpoint with a token the emulator does not check (it never leaves this
machine)::

    >>> output = bigquery_output("bigquery://demo?endpoint=http://127.0.0.1:9050")
    >>> output["method"], output["token"], output["api_endpoint"]
    ('oauth-secrets', 'fake-token', 'http://127.0.0.1:9050')

Layers are datasets named as they are (raw, staging, mart, monitoring): the project's
``generate_schema_name`` macro puts each model in its layer's dataset.
"""

from __future__ import annotations

from typing import Any

from shopstream.warehouse.bigquery import EXAMPLE, parse_url

__all__ = ["EXAMPLE", "bigquery_output"]

EMULATOR_TOKEN = "fake-token"  # noqa: S105 - not a secret: emulators accept any token


def bigquery_output(url: str, *, threads: int = 4) -> dict[str, Any]:
    """A dbt-bigquery profile output for the warehouse at ``url``."""
    where = parse_url(url)
    output: dict[str, Any] = {
        "type": "bigquery",
        "method": "oauth",
        "project": where.project,
        "dataset": "staging",
        "threads": threads,
    }
    if where.location is not None:
        output["location"] = where.location
    if where.endpoint is not None:
        # An emulator checks no token; this one never reaches Google (the endpoint is local).
        output.update(method="oauth-secrets", api_endpoint=where.endpoint)
        output["token"] = EMULATOR_TOKEN
    return output

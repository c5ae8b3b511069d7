"""Write the raw tables' BigQuery schemas and layouts, as the package creates them, for Terraform.

``shopstream.warehouse.bigquery.tables.raw_layout`` is the one definition of a raw table in
BigQuery (columns, day partitioning, clustering); the warehouse creates tables from it when
they are missing. Terraform creates the same tables ahead of time (so that they exist, with
deletion protection, before anything writes), from the files this script writes into
``schemas/``:

- ``events.json``, ``dead_letter.json``, ``source_schemas.json``, ``cdc.json`` (every
  ``cdc_<table>`` has the same columns): the schema in ``google_bigquery_table``'s form;
- ``layouts.json``: each of them's partitioning column and clustering columns.

Run it after changing a raw table's schema (tests/deploy/test_terraform.py fails until the
committed files match)::

    .venv/bin/python deploy/terraform/modules/bigquery/render_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shopstream.events.raw import SOURCE_SCHEMAS
from shopstream.warehouse.bigquery.tables import TableLayout, raw_layout

SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: File stem -> a raw table with that layout (every cdc_<table> shares cdc_orders' layout).
TABLES = {
    "events": "events",
    "dead_letter": "dead_letter",
    SOURCE_SCHEMAS: SOURCE_SCHEMAS,
    "cdc": "cdc_orders",
}


def schema_json(layout: TableLayout) -> list[dict[str, str]]:
    return [
        {
            "name": column.name,
            "type": column.type,
            "mode": "REQUIRED" if column.required else "NULLABLE",
        }
        for column in layout.columns
    ]


def _text(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def render() -> dict[str, str]:
    """File name -> contents, for every file of ``schemas/``."""
    files: dict[str, str] = {}
    layouts: dict[str, dict[str, object]] = {}
    for stem, table in TABLES.items():
        layout = raw_layout(table)
        files[f"{stem}.json"] = _text(schema_json(layout))
        layouts[stem] = {
            "partition_by": layout.partition_by,
            "cluster_by": list(layout.cluster_by),
        }
    files["layouts.json"] = _text(layouts)
    return files


def main() -> int:
    SCHEMAS.mkdir(exist_ok=True)
    for name, text in render().items():
        (SCHEMAS / name).write_text(text)
        print(f"wrote {SCHEMAS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

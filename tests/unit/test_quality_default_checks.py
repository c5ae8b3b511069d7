"""shopstream's default checks (quality/default_checks.yml): every check's options are valid for
its kind, nothing that needs CDC is required, and the status-transition rule allows exactly
the moves the shop makes (shopstream.generators.shop)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from shopstream.generators import shop
from shopstream.quality.checks import KINDS, kind
from shopstream.quality.spec import PIPELINE, load_config

CONFIG = load_config()
CHECKS = CONFIG.checks()


def _module_present(name: str) -> bool:
    try:
        importlib.import_module(KINDS[name])
    except ModuleNotFoundError:
        return False
    return True


def test_every_kind_is_used_and_known() -> None:
    used = {check.spec.kind for check in CHECKS}
    assert used == set(KINDS), f"unused: {set(KINDS) - used}, unknown: {used - set(KINDS)}"


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_options_are_valid_for_their_kind(kind_name: str) -> None:
    if not _module_present(kind_name):
        pytest.skip(f"kind {kind_name!r} is not on this branch yet ({KINDS[kind_name]})")
    check_kind = kind(kind_name)
    checks = [c for c in CHECKS if c.spec.kind == kind_name]
    assert checks
    for check in checks:
        check_kind.params.model_validate(check.spec.options)  # raises naming the option


def test_volume_watches_hours_and_days() -> None:
    granularities = {c.spec.options.get("granularity") for c in CHECKS if c.spec.kind == "volume"}
    assert granularities == {"hour", "day"}


def test_freshness_slas_of_the_issue() -> None:
    freshness = {c.table: c.spec.options for c in CHECKS if c.spec.kind == "freshness"}
    assert freshness["raw.events"]["warn_after_minutes"] == 30
    assert freshness["raw.cdc_orders"]["warn_after_minutes"] == 15


def test_tables_of_cdc_and_the_marts_are_not_required() -> None:
    required = {name for name, table in CONFIG.tables.items() if table.required}
    assert required <= {"raw.events"}, required
    assert not any(name.startswith(("raw.cdc_", "staging.stg_orders")) for name in required)


def test_pipeline_checks_do_not_read_a_table() -> None:
    for check in CHECKS:
        if check.table == PIPELINE:
            assert not kind(check.spec.kind).reads_table


def _allowed_moves() -> set[tuple[str, str]]:
    """The shop's moves, read from its code: advancing, paying, cancelling, refunding."""
    moves = set(shop._ADVANCE.items())
    moves.add(("PENDING", "PAID"))  # pay_order
    source = Path(shop.__file__).read_text(encoding="utf-8")
    cancel_from = re.search(r'for s in \(("[A-Z]+"(?:, "[A-Z]+")*)\)', source)
    assert cancel_from, "cancel_order's statuses not found in shop.py: update this test"
    for status in re.findall(r'"([A-Z]+)"', cancel_from.group(1)):
        moves.add((status, "CANCELLED"))
    moves.add(("DELIVERED", "REFUNDED"))  # refund_order takes open["DELIVERED"]
    return moves


def test_status_transition_rule_allows_exactly_the_shops_moves() -> None:
    [rule] = [c for c in CHECKS if c.name.endswith("valid_status_transitions")]
    sql = rule.spec.options["sql"]
    listed = set(re.findall(r"'([A-Z]+) -> ([A-Z]+)'", sql))
    assert listed == _allowed_moves()
    assert set(shop.ORDER_STATUSES) == {s for move in listed for s in move}

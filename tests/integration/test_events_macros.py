"""The privacy and bot macros of the events staging, run by dbt on DuckDB over literal cases.

One model of the test's own applies the macros to a table of inputs; the answers are checked
against Python's own reading (ipaddress for the networks, hashlib for the e-mail hashes).
"""

from __future__ import annotations

import hashlib
import ipaddress

import duckdb
import pytest

from tests.support.transform import DbtProject

SALT = "macro-salt"
IPS = (
    "203.0.113.7",
    "10.0.0.255",
    "2001:db8:85a3::8a2e:370:7334",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "2001:db8::1",
    "2001::1:2:3:4:5:6",
    "::1",
    "fe80::",
    "not an ip",
    "1.2.3",
)
AGENTS = {
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": True,
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36": False,
    "facebookexternalhit/1.1": True,
    "python-requests/2.32": True,
    "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0 Safari/537.36": True,
    "Mozilla/5.0 (iPhone) Mobile/15E148 DaumApps/6.0 KAKAOTALK 10.4": False,
    "Mozilla/5.0 (compatible; Yeti/1.1; +http://naver.me/spd)": True,
}
EMAILS = (" Alice@Example.COM ", "bob.smith+shop@mail.example.co.kr", "U000123", "not@mail")


def expected_prefix(ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    bits = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{ip}/{bits}", strict=False).network_address
    return str(network) if address.version == 4 else f"{network.compressed.rstrip(':')}::"


def expected_hash(value: str) -> str:
    is_email = "@" in value and "." in value.split("@", 1)[1]
    if not is_email:
        return value
    return hashlib.sha256((SALT + value.strip().lower()).encode()).hexdigest()


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("events_macros")
    project = DbtProject(root / "project", root / "macros.duckdb", {"email_salt": SALT})
    cases = [("ip", value) for value in IPS]
    cases += [("agent", value) for value in AGENTS]
    cases += [("email", value) for value in EMAILS]
    values = ", ".join(f"({literal(kind)}, {literal(value)})" for kind, value in cases)
    inline = (
        f"select kind, value, {{{{ truncate_ip('value') }}}} as prefix, "
        f"{{{{ is_bot('value') }}}} as bot, {{{{ hash_email('value') }}}} as hashed "
        f"from (values {values}) as cases(kind, value)"
    )
    project.add_model("shown.sql", inline)
    result = project.invoke("build", "--select", "shown")
    assert result.success, "\n".join(result.failures)
    with duckdb.connect(str(root / "macros.duckdb"), read_only=True) as con:
        rows = con.execute("select kind, value, prefix, bot, hashed from main.shown").fetchall()
    return {
        value: {"kind": kind, "prefix": prefix, "bot": bot, "hashed": hashed}
        for kind, value, prefix, bot, hashed in rows
    }


@pytest.mark.parametrize("ip", IPS)
def test_ip_addresses_keep_only_their_network(
    answers: dict[str, dict[str, object]], ip: str
) -> None:
    assert answers[ip]["prefix"] == expected_prefix(ip)


@pytest.mark.parametrize("agent", list(AGENTS))
def test_bots_are_recognised_by_their_user_agent(
    answers: dict[str, dict[str, object]], agent: str
) -> None:
    assert answers[agent]["bot"] is AGENTS[agent]


@pytest.mark.parametrize("value", EMAILS)
def test_email_like_values_are_hashed_with_the_salt(
    answers: dict[str, dict[str, object]], value: str
) -> None:
    assert answers[value]["hashed"] == expected_hash(value)

"""deploy/docker/Dockerfile: hadolint and checkov find nothing (checkov skips only with a
reason beside them), the image is what the Kubernetes manifests expect (non-root numeric user,
HOME and TMPDIR under /tmp, entrypoint `shopstream`, the production extras, pinned base), the
build context holds what it copies, every command the rendered manifests run is a real
`shopstream` command with the options they pass, and the HEALTHCHECK script tells a healthy
collector from a gone one. No container engine here: the image itself is not built (its build
command is at the top of the Dockerfile)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from shopstream.config import Settings
from tests.support.collector import CollectorProcess, free_port
from tests.support.deploy_tools import (
    DEPLOY,
    ROOT,
    SHOPSTREAM_BIN,
    deploy_tool,
    run_tool,
    system_tool,
)

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
BEAM_DOCKERFILE = DEPLOY / "beam" / "Dockerfile"
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"
EXTRAS = "[bigquery,kafka,pubsub,otlp]"
BASE_IMAGE = "python:3.11-slim-bookworm"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_is_clean() -> None:
    hadolint = deploy_tool("hadolint")
    result = run_tool([hadolint, "--no-color", DOCKERFILE])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_on_the_beam_image_is_clean() -> None:
    """deploy/beam/Dockerfile (the Dataflow workers' image) is linted too: it is cheap."""
    result = run_tool([deploy_tool("hadolint"), "--no-color", BEAM_DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, BEAM_DOCKERFILE], ids=["image", "beam"])
def test_checkov_dockerfile_is_clean(dockerfile: Path) -> None:
    result = run_tool(
        [
            deploy_tool("checkov"),
            *("--skip-download", "--quiet", "--compact", "-o", "json"),
            *("--framework", "dockerfile", "-f", dockerfile),
        ],
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    report = json.loads(result.stdout)
    assert report["summary"]["passed"] > 0 and report["summary"]["parsing_errors"] == 0, report
    failed = [f"{f['check_id']}: {f['check_name']}" for f in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    # A skip is `# checkov:skip=CKV_DOCKER_N: reason`, and the reason says something.
    for skip in re.findall(r"checkov:skip=(\S+)(.*)", dockerfile.read_text()):
        assert re.fullmatch(r"CKV2?_DOCKER_\d+:?", skip[0]) and len(skip[1].split()) >= 5, skip


def test_the_image_is_what_the_manifests_expect() -> None:
    steps = instructions(DOCKERFILE)
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert len(bases) >= 2, "multi-stage: a builder and a runtime"
    for base in bases:
        # The version pinned (a digest may follow: name:tag@sha256:...), never latest.
        assert base.split("@")[0] == BASE_IMAGE, base
    final = final_stage(DOCKERFILE)
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"USER {users[-1]}: numeric, not root"
    env = " ".join(rest for word, rest in final if word == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "SHOPSTREAM_DATA_DIR=/tmp/"):
        assert setting in env, f"read-only root: {setting}"
    assert any(word == "HEALTHCHECK" for word, _ in final)
    entrypoint = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoint == [["shopstream"]]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert EXTRAS in runs and "-c constraints.txt" in runs
    assert not [rest for word, rest in final if word == "RUN" and "pip install" in rest], (
        "the runtime stage installs nothing: it copies the builder's virtualenv"
    )


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go's filepath.Match, plus ``**``)."""
    regex = ""
    for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if token.startswith("**"):
            regex += "(?:.*/)?" if token.endswith("/") else ".*"
        elif token == "*":
            regex += "[^/]*"
        elif token == "?":
            regex += "[^/]"
        else:
            regex += re.escape(token)
    return re.compile(regex)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern matching the path or a parent of it wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for word, rest in instructions(DOCKERFILE):
        if word == "COPY" and "--from=" not in rest:
            copied += rest.split()[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
    for private in (".venv/bin/python", "data/shopstream.duckdb", "tests/conftest.py", ".git/HEAD"):
        assert _ignored(private, patterns), f"{private} would be sent to the builder"


# --- the commands the manifests run ---------------------------------------------------------


def _manifest_commands() -> list[list[str]]:
    """Every container's args in both rendered overlays (the image's entrypoint is
    `shopstream`, so args are its command line)."""
    kubectl = system_tool("kubectl")
    commands = []
    for overlay in ("dev", "prod"):
        result = run_tool([kubectl, "kustomize", DEPLOY / "k8s" / "overlays" / overlay])
        assert result.returncode == 0, result.stderr
        for obj in yaml.safe_load_all(result.stdout):
            pod: dict[str, Any] | None = None
            if obj and obj["kind"] in ("Deployment", "StatefulSet", "Job"):
                pod = obj["spec"]["template"]["spec"]
            elif obj and obj["kind"] == "CronJob":
                pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            for container in (pod or {}).get("containers", []):
                assert "command" not in container, "the entrypoint stays `shopstream`"
                commands.append(container["args"])
    return commands


def test_every_manifest_runs_a_real_shopstream_command() -> None:
    commands = {tuple(args) for args in _manifest_commands()}
    assert {args[0] for args in commands} >= {"collector", "cdc", "load", "quality"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    for args in sorted(commands):
        # The subcommand path: words before the first option.
        path = []
        for arg in args:
            if arg.startswith("-"):
                break
            path.append(arg)
        result = run_tool([SHOPSTREAM_BIN, *path, "--help"], env=env, timeout=60)
        assert result.returncode == 0, f"shopstream {shlex.join(path)}: {result.stderr}"
        assert "Usage: shopstream " + " ".join(path) in " ".join(result.stdout.split())
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            assert option in result.stdout, f"shopstream {shlex.join(path)} has no {option}"


# --- the HEALTHCHECK ------------------------------------------------------------------------


def _healthcheck(role: str, port: int) -> subprocess.CompletedProcess[str]:
    variable = {"collector": "SHOPSTREAM_COLLECTOR__PORT", "cdc": "SHOPSTREAM_CDC__METRICS_PORT"}
    return run_tool(
        [sys.executable, HEALTHCHECK, role],
        env={**os.environ, variable.get(role, "SHOPSTREAM_LOADER__METRICS_PORT"): str(port)},
        timeout=30,
    )


def test_healthcheck_asks_the_running_collector(tmp_path: Path) -> None:
    """The collector's /healthz on its port; and the metrics listener the cdc and load roles
    serve /healthz on (the same one, Platform._serve_metrics), here the collector's, asked as
    the cdc and load roles' check asks it."""
    metrics_port = free_port()
    collector = CollectorProcess(
        tmp_path, env={"SHOPSTREAM_COLLECTOR__METRICS_PORT": str(metrics_port)}
    ).start()
    try:
        healthy = _healthcheck("collector", collector.port)
        assert healthy.returncode == 0, healthy.stderr
        for role in ("cdc", "load"):
            listener = _healthcheck(role, metrics_port)
            assert listener.returncode == 0, f"{role}: {listener.stderr}"
    finally:
        collector.stop()
    gone = _healthcheck("collector", collector.port)
    assert gone.returncode == 1 and "healthz" in gone.stderr
    gone = _healthcheck("cdc", metrics_port)
    assert gone.returncode == 1 and f":{metrics_port}/healthz" in gone.stderr
    # One-shot commands serve nothing: their check passes without asking.
    assert _healthcheck("transform", collector.port).returncode == 0


def _image_env() -> dict[str, str]:
    """The runtime stage's ENV (``KEY=value`` pairs; no value holds a space)."""
    return dict(
        pair.split("=", 1)
        for word, rest in final_stage(DOCKERFILE)
        if word == "ENV"
        for pair in rest.split()
    )


def test_the_image_sets_the_ports_its_healthcheck_asks() -> None:
    """Outside Kubernetes (docker run, Compose) only the image's ENV sets the ports: each
    long-running role must listen where the HEALTHCHECK asks. cdc.metrics_port and
    loader.metrics_port default to None (no listener at all: the check would fail forever),
    and without collector.metrics_port the collector serves /metrics on its public port."""
    image_env = _image_env()
    healthcheck = _healthcheck_module()
    with mock.patch.dict(os.environ, image_env, clear=True):
        settings = Settings()
    listens = {
        "collector": settings.collector.port,
        "cdc": settings.cdc.metrics_port,
        "load": settings.loader.metrics_port,
    }
    for role, port in listens.items():
        assert port is not None, f"{role}: the image starts it with no /healthz listener"
        assert healthcheck.health_url(role, image_env) == f"http://127.0.0.1:{port}/healthz"
    assert settings.collector.metrics_port == 9464, "/metrics off the public intake port"
    assert settings.collector.metrics_port != settings.collector.port
    # The same ports as the pods' settings (deploy/k8s/base/settings.env) and EXPOSE.
    pods = dict(
        line.split("=", 1)
        for line in (DEPLOY / "k8s" / "base" / "settings.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for variable in (
        "SHOPSTREAM_COLLECTOR__METRICS_PORT",
        "SHOPSTREAM_CDC__METRICS_PORT",
        "SHOPSTREAM_LOADER__METRICS_PORT",
    ):
        assert image_env.get(variable) == pods[variable], variable
    exposed = {rest for word, rest in final_stage(DOCKERFILE) if word == "EXPOSE"}
    assert exposed == {f"{settings.collector.port} {settings.collector.metrics_port}"}


def _healthcheck_module() -> Any:
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("role", "variable"),
    [
        ("collector", "SHOPSTREAM_COLLECTOR__PORT"),
        ("cdc", "SHOPSTREAM_CDC__METRICS_PORT"),
        ("load", "SHOPSTREAM_LOADER__METRICS_PORT"),
    ],
)
def test_healthcheck_asks_each_role_on_the_port_the_pods_use(role: str, variable: str) -> None:
    """The port per role is the settings' (deploy/k8s/base/settings.env), with or without it,
    and the variable is the one shopstream reads that port from."""
    settings = dict(
        line.split("=", 1)
        for line in (DEPLOY / "k8s" / "base" / "settings.env").read_text().splitlines()
        if not line.startswith("#")
    )
    healthcheck = _healthcheck_module()
    url = f"http://127.0.0.1:{settings[variable]}/healthz"
    assert healthcheck.health_url(role, {}) == url, "its default is the port the pods use"
    assert healthcheck.health_url(role, {variable: "1234"}) == "http://127.0.0.1:1234/healthz"
    section, field = variable.removeprefix("SHOPSTREAM_").lower().split("__")
    with mock.patch.dict(os.environ, {variable: "1234"}, clear=True):
        assert getattr(getattr(Settings(), section), field) == 1234
    assert healthcheck.health_url("quality", {}) is None

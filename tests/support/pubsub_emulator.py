"""Google's official Pub/Sub emulator for tests, on a free loopback port.

The emulator ships with the Google Cloud CLI (component ``pubsub-emulator``, Debian package
``google-cloud-cli-pubsub-emulator``) and needs Java 11+. It keeps everything in memory:
a restart forgets topics and subscriptions (the sink and the source create them again when
``pubsub.create`` is on). Google's clients talk to it when ``PUBSUB_EMULATOR_HOST`` is set.

    def test_x(pubsub_emulator: PubSubEmulator, monkeypatch) -> None:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)

``pubsub_emulator`` is module-scoped (one emulator per test module); tests that stop it must
start it again (``start()`` reuses the port). ``pause()``/``resume()`` freeze it without losing
state (SIGSTOP/SIGCONT): requests hang, as with a broker that stops answering.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import free_port

INSTALL_HINT = (
    "the Pub/Sub emulator is not installed: install the Google Cloud CLI's "
    "'pubsub-emulator' component (apt: google-cloud-cli-pubsub-emulator; or "
    "`gcloud components install pubsub-emulator`) and Java 11+, or point "
    "SHOPSTREAM_PUBSUB_EMULATOR at its bin/cloud-pubsub-emulator"
)
_RELATIVE = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def _sdk_roots() -> Iterator[Path]:
    for name in ("CLOUDSDK_ROOT_DIR", "CLOUD_SDK_ROOT"):
        if os.environ.get(name):
            yield Path(os.environ[name])
    gcloud = shutil.which("gcloud")
    if gcloud:
        # .../google-cloud-sdk/bin/gcloud, usually behind a symlink in /usr/bin.
        yield Path(gcloud).resolve().parent.parent
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            printed = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
            if printed:
                yield Path(printed)
    yield Path("/usr/lib/google-cloud-sdk")
    yield Path("/opt/google-cloud-sdk")


def find_emulator() -> Path | None:
    """The emulator's start script, or None when it (or Java) is missing."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return None
    explicit = os.environ.get("SHOPSTREAM_PUBSUB_EMULATOR")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for root in _sdk_roots():
        script = root / _RELATIVE
        if script.is_file():
            return script
    return None


class PubSubEmulator:
    """One emulator process; ``host`` is what ``PUBSUB_EMULATOR_HOST`` takes."""

    def __init__(self, script: Path, data_dir: Path, port: int | None = None) -> None:
        self.script = script
        self.data_dir = data_dir
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "emulator.log"
        self._paused = False

    def start(self, timeout: float = 60.0) -> PubSubEmulator:
        """Start (again, on the same port) and wait for "Server started"."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the emulator is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ)
        # A small heap and the quick JIT tier: tests share 2 cores with much else.
        env.setdefault("JAVA_OPTS", "-Xmx384m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.script), "--host=127.0.0.1", f"--port={self.port}"],
                cwd=self.data_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # stop() signals the whole group (script and java)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Server started" in self.log(offset):
                self._paused = False
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited at start:\n{self.log(offset)}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the Pub/Sub emulator did not start in {timeout}s:\n{self.log()}")

    def log(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def pause(self) -> None:
        """Freeze the emulator (state kept): requests hang until :meth:`resume`."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the emulator (it forgets topics and subscriptions); ``start()`` brings it back
        on the same port."""
        if self.process is None:
            return
        if self._paused:
            self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """kill -9: the emulator vanishes without closing its connections."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(15)
        self.process = None


@contextlib.contextmanager
def running_emulator() -> Iterator[PubSubEmulator]:
    """A started emulator in a temporary directory, stopped afterwards (skips when the
    emulator is not installed)."""
    script = find_emulator()
    if script is None:
        pytest.skip(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="shopstream-pubsub-") as tmp:
        emulator = PubSubEmulator(script, Path(tmp))
        try:
            yield emulator.start()
        finally:
            emulator.stop()


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """One emulator per test module; tests that stop it start it again before they end."""
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def pubsub_host(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator's address, set as ``PUBSUB_EMULATOR_HOST`` for this test (and running:
    a test that stopped it left it stopped only if it failed; start it again then)."""
    if pubsub_emulator.process is None or pubsub_emulator.process.poll() is not None:
        pubsub_emulator.start()
    pubsub_emulator.resume()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator.host


# -- a test's own view of topics (not the code under test's) ----------------------------------


def subscribe(project: str, topic: str, name: str, **options: Any) -> str:
    """A fresh subscription on ``topic`` (created, with the topic, if missing), ordered:
    what a test reads back. Returns its path."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=topic_path)
    path = subscriber.subscription_path(project, name)
    subscriber.create_subscription(
        request={"name": path, "topic": topic_path, "enable_message_ordering": True, **options}
    )
    subscriber.close()
    publisher.stop()
    return path


def pull_once(subscriber: Any, subscription: str, max_messages: int, timeout: float) -> list[Any]:
    """One synchronous pull: what came within ``timeout`` (nothing rather than an error)."""
    from google.api_core.exceptions import DeadlineExceeded

    try:
        response = subscriber.pull(
            subscription=subscription, max_messages=max_messages, timeout=timeout, retry=None
        )
    except DeadlineExceeded:
        return []
    return list(response.received_messages)


def pull(subscription: str, count: int, timeout: float = 20.0) -> list[Any]:
    """At least ``count`` messages from ``subscription`` (acked), or all there were once
    ``timeout`` passed; then a short last pull, so that extra messages are seen too."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            last = len(messages) >= count or time.monotonic() > deadline
            got = pull_once(subscriber, subscription, 1000, 1.0 if last else 5.0)
            if got:
                subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in got])
                messages += [m.message for m in got]
            elif last:
                return messages
    finally:
        subscriber.close()

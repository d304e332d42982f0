"""Run the embedding service under ``mlmiddleware run`` and use it on real sentences.

Starts the launcher on a free 127.0.0.1 port and waits for readiness. It then embeds the
demo sentences with one concurrent request per sentence, so they share batches, and
prints their cosine similarities. Last, it posts a feedback record, shows the batch-size
metrics, sends SIGTERM and reports the exit status. Used by ``nox -s demo``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.embedding.sentences import PARAPHRASES, UNRELATED, all_sentences  # noqa: E402

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(port: int, feedback_dir: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "mlmiddleware", "run", "examples.embedding.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--drain-seconds", "0",
    ]  # fmt: skip
    env = {**os.environ, "MLMW_FEEDBACK_DIR": feedback_dir, "MLMW_CAPTURE_RATE": "1.0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = open(Path(feedback_dir) / "service.log", "wb")  # noqa: SIM115 - the service owns it
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base: str, service: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if service.poll() is not None:
            raise SystemExit(
                f"the service exited with status {service.returncode} before it was ready"
            )
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the service was not ready within {READY_TIMEOUT_S:.0f} s")


async def embed_all(base: str, sentences: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"inputs": text}) for text in sentences)
        )
    for response in responses:
        response.raise_for_status()
    vectors = {
        text: np.asarray(r.json()["outputs"]) for text, r in zip(sentences, responses, strict=True)
    }
    return vectors, [r.headers["x-request-id"] for r in responses]


def print_similarities(vectors: dict[str, np.ndarray]) -> None:
    def cosine(a: str, b: str) -> float:
        return float(vectors[a] @ vectors[b])

    print("\nCosine similarity (embeddings are unit vectors):")
    for label, pairs in (("paraphrase", PARAPHRASES), ("unrelated ", UNRELATED)):
        for first, second in pairs:
            print(f"  {label}  {cosine(first, second):5.3f}  {first[:38]!r} ~ {second[:38]!r}")

    lowest_paraphrase = min(cosine(a, b) for a, b in PARAPHRASES)
    highest_unrelated = max(cosine(a, b) for a, b in UNRELATED)
    verdict = "closer" if lowest_paraphrase > highest_unrelated else "NOT closer"
    print(
        f"  every paraphrase pair is {verdict} than every unrelated pair "
        f"(lowest paraphrase {lowest_paraphrase:.3f}, highest unrelated {highest_unrelated:.3f})"
    )


def print_batch_metrics(base: str) -> None:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    print("\nBatches executed, by size (from the batch_size histogram on /metrics):")
    for family in text_string_to_metric_families(text):
        if family.name != "batch_size":
            continue
        previous = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                # Buckets are cumulative: the difference is the count inside each one.
                inside = sample.value - previous
                previous = sample.value
                if inside:
                    print(f"  batches of <= {float(sample.labels['le']):g} items: {inside:g}")
            elif sample.name.endswith("_count"):
                print(f"  batches in total: {sample.value:g}")


async def compare_instances(base: str, vectors: dict[str, np.ndarray]) -> None:
    texts = [PARAPHRASES[0][0], PARAPHRASES[0][1]]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        response = await client.post("/v1/embeddings", json={"instances": texts})
    response.raise_for_status()
    batched = [np.asarray(v) for v in response.json()["predictions"]]
    difference = max(
        float(np.abs(b - vectors[t]).max()) for b, t in zip(batched, texts, strict=True)
    )
    print(
        f'\nPOST {{"instances": [2 sentences]}} -> {len(batched)} embeddings of '
        f"{batched[0].shape[0]} dimensions; largest difference from the single requests: "
        f"{difference:.1e}"
    )


def print_shutdown(feedback_dir: str) -> None:
    print("Launcher and worker lifecycle records (JSON lines from stderr):")
    for line in (Path(feedback_dir) / "service.log").read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            print(f"  NOT JSON: {line[:120]!r}")
            continue
        if record.get("logger", "").startswith(("mlmiddleware.launcher", "mlmiddleware.lifecycle")):
            print(f"  {record['ts']} {record['level']:7s} {record['logger']}: {record['message']}")


def count_records(feedback_dir: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in Path(feedback_dir).glob("feedback-*.jsonl*"):
        for line in path.read_bytes().splitlines():
            kind = json.loads(line)["kind"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def main() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    feedback_dir = tempfile.mkdtemp(prefix="mlmiddleware-demo-")
    print(f"Starting the example under the launcher on {base} (logs: {feedback_dir}/service.log)")
    service = start_service(port, feedback_dir)

    try:
        ready_after = wait_ready(base, service)
        print(f"/readyz answered 200 after {ready_after:.1f} s (model loaded and warmed up)")

        sentences = all_sentences()
        vectors, request_ids = asyncio.run(embed_all(base, sentences))
        print(f"Embedded {len(sentences)} sentences in {len(sentences)} concurrent requests")
        print_similarities(vectors)
        asyncio.run(compare_instances(base, vectors))

        feedback = httpx.post(
            f"{base}/feedback",
            json={"request_id": request_ids[0], "label": "relevant", "score": 1.0},
            timeout=10,
        )
        print(f"\nPOST /feedback -> {feedback.status_code} {feedback.text}")
        print_batch_metrics(base)
    finally:
        print("\nSending SIGTERM to the launcher")
        service.send_signal(signal.SIGTERM)
        status = service.wait(timeout=60)

    print_shutdown(feedback_dir)
    print(f"The launcher exited with status {status}")
    print(f"Records on disk under {feedback_dir}: {count_records(feedback_dir)}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

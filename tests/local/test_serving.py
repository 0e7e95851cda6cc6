"""The local servers (moto, the gateway) keep HTTP/1.1 connections alive: every
request on a connection gets its own whole answer, whatever the one before it did."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request

from infra.local.serving import ThreadedServer


def _echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answers with what it saw; ``/ignore`` never reads the body, ``/fail`` raises."""
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("the app failed")
    # Read as moto and the gateway read it: through werkzeug's Request.
    body = b"" if path == "/ignore" else Request(environ).get_data()
    answer = {"path": path, "body": body.decode(), "client_port": environ["REMOTE_PORT"]}
    payload = json.dumps(answer).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [payload]


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    serving = ThreadedServer(_echo, port=0, name="echo")
    serving.start()
    yield serving
    serving.stop()


@pytest.fixture
def connection(server: ThreadedServer) -> Iterator[http.client.HTTPConnection]:
    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    yield client
    client.close()


def _ask(client: http.client.HTTPConnection, method: str, path: str, body: bytes = b"") -> Any:
    client.request(method, path, body=body or None)
    response = client.getresponse()
    payload = response.read()
    assert response.status == 200, payload
    return json.loads(payload)


def test_requests_on_one_connection_are_all_answered_on_it(
    connection: http.client.HTTPConnection,
) -> None:
    answers = [_ask(connection, "POST", f"/call/{n}", f"body {n}".encode()) for n in range(3)]

    assert [(a["path"], a["body"]) for a in answers] == [
        (f"/call/{n}", f"body {n}") for n in range(3)
    ]
    assert len({answer["client_port"] for answer in answers}) == 1, "a new connection each time"


def test_a_body_the_app_left_unread_does_not_spill_into_the_next_request(
    connection: http.client.HTTPConnection,
) -> None:
    _ask(connection, "POST", "/ignore", b"GET /smuggled HTTP/1.1\r\n\r\n" * 50)

    assert _ask(connection, "GET", "/next")["path"] == "/next"


def test_a_chunked_body_reaches_the_app_whole(connection: http.client.HTTPConnection) -> None:
    connection.request("POST", "/chunked", body=iter([b"first ", b"second"]), encode_chunked=True)
    response = connection.getresponse()

    assert json.loads(response.read())["body"] == "first second"
    assert _ask(connection, "GET", "/after")["path"] == "/after"


def test_a_head_request_is_told_the_length_a_get_would_have(
    connection: http.client.HTTPConnection,
) -> None:
    connection.request("GET", "/sized")
    length = len(connection.getresponse().read())
    connection.request("HEAD", "/sized")
    head = connection.getresponse()

    assert head.getheader("Content-Length") == str(length)
    assert head.read() == b""
    assert _ask(connection, "GET", "/after")["path"] == "/after"


@pytest.mark.parametrize(
    ("length", "sent"),
    [("40", b"only ten b"), ("ten", b"0123456789")],
    ids=["body shorter than announced", "length not a number"],
)
def test_a_body_unlike_its_headers_is_a_400_and_the_connection_closes(
    server: ThreadedServer, length: str, sent: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        head = f"POST /bad HTTP/1.1\r\nHost: local\r\nContent-Length: {length}\r\n\r\n"
        raw.sendall(head.encode() + sent)
        raw.shutdown(socket.SHUT_WR)  # the client gives up sending
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Connection: close" in answer
    assert b'"path": "/bad"' not in answer, "the app ran on a broken body"


def test_a_failing_app_answers_500_and_the_connection_serves_on(
    connection: http.client.HTTPConnection,
) -> None:
    connection.request("GET", "/fail")
    response = connection.getresponse()

    assert (response.status, response.read()) == (500, b"internal error")
    assert _ask(connection, "GET", "/after")["path"] == "/after"


def test_stopping_the_server_closes_its_idle_connections(
    server: ThreadedServer, connection: http.client.HTTPConnection
) -> None:
    _ask(connection, "GET", "/first")
    assert connection.sock is not None, "the connection was not kept"

    server.stop()

    assert connection.sock.recv(1) == b"", "the idle connection outlived its server"

"""One way to serve a WSGI app on loopback from a background thread.

werkzeug's server closes the connection after every response: its request loop
cannot tell a body the app left unread from the next request. A local runtime's
clients (every worker's boto3, the pollers, the soak's API clients) then paid a
TCP handshake and a new server thread for each call, about a quarter of moto's
time per request. :class:`KeepAliveHandler` keeps connections open instead: it
reads the whole request body before the app runs and sends the whole response
with its length, so after each exchange the connection sits at a request boundary.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"
NO_BODY_STATUSES = frozenset({204, 304})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
# How often the serving loop looks for a stop (socketserver's default, 0.5 s, is what
# every runtime's stop waited, twice: the gateway's server and moto's).
SHUTDOWN_POLL = 0.05

log = logging.getLogger(__name__)


class ServerStartError(OSError):
    """The server could not listen (port busy...)."""


class _BadRequestBody(ValueError):
    """The request's body is not what its headers announce."""


class KeepAliveHandler(WSGIRequestHandler):
    """A WSGI request handler that keeps HTTP/1.1 connections open (see the module)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds
    # the body back until the client acknowledges the headers (up to 40 ms).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        connections = _connections_of(self.server)
        connections.open.add(self.connection)
        if connections.stopping:  # accepted as the server stopped: serve nothing
            _shut(self.connection)

    def finish(self) -> None:
        _connections_of(self.server).open.discard(self.connection)
        super().finish()

    def run_wsgi(self) -> None:
        environ = self.make_environ()
        try:
            request_body = _whole_body(environ, self.headers)
        except _BadRequestBody as problem:
            self.close_connection = True  # what is left on the wire is no request
            self._send("400 BAD REQUEST", [], str(problem).encode())
            return
        environ["wsgi.input"] = io.BytesIO(request_body)
        environ["CONTENT_LENGTH"] = str(len(request_body))
        # Read whole: no longer chunked for the app (werkzeug would read on past it).
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        self.environ = environ
        try:
            status, headers, response_body = run_to_end(self.server.app, environ)
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            status, headers, response_body = "500 INTERNAL SERVER ERROR", [], b"internal error"
        self._send(status, headers, response_body)

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        self.send_response(code, reason)
        declared = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length":
                declared = value
            elif lowered == "connection" and value.lower() == "close":
                self.close_connection = True
            elif lowered not in HOP_BY_HOP:
                self.send_header(name, value)
        has_body = code >= 200 and code not in NO_BODY_STATUSES
        if self.command == "HEAD" or code == 304:
            if declared is not None:  # the length the body would have
                self.send_header("Content-Length", declared)
        elif has_body:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":  # asked for keep-alive: say it is kept
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if has_body and self.command != "HEAD":
            self.wfile.write(body)


def _whole_body(environ: dict[str, Any], headers: Any) -> bytes:
    """The request's body, read to its end (werkzeug's environ has already wrapped
    a chunked one to stop at its last chunk)."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        try:
            return bytes(stream.read())
        except (OSError, ValueError) as error:
            raise _BadRequestBody(f"a malformed chunked body: {error}") from None
    announced = headers.get("Content-Length") or "0"
    if not announced.isdigit():
        raise _BadRequestBody(f"Content-Length {announced!r} is not a length")
    length = int(announced)
    body = bytes(stream.read(length)) if length else b""
    if len(body) < length:
        raise _BadRequestBody(f"the body ended after {len(body)} of its {length} bytes")
    return body


def run_to_end(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Runs the WSGI app to the end: its status, headers and whole body. Nothing is
    sent before the app returns, so an error page (``exc_info``) may always replace
    what it started."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if started and exc_info is None:
            raise RuntimeError("start_response called again without exc_info")
        if exc_info is not None:
            written.clear()
        started[:] = [(status, headers)]
        return written.append  # WSGI's legacy write()

    chunks: Iterable[bytes] = app(environ, start_response)
    try:
        written.extend(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the app returned without calling start_response")
    status, headers = started[0]
    return status, headers, b"".join(written)


@dataclass
class _Connections:
    """A server's open connections, shut by :meth:`ThreadedServer.stop`."""

    open: set[socket.socket] = field(default_factory=set)
    stopping: bool = False


def _connections_of(server: Any) -> _Connections:
    connections: _Connections = server.__dict__.setdefault("tbcss_connections", _Connections())
    return connections


class ThreadedServer:
    """A threaded werkzeug server for ``app``; port 0 picks a free port. Its
    connections are kept alive (:class:`KeepAliveHandler`, mixed into
    ``request_handler``) and closed when it stops."""

    def __init__(
        self,
        app: Any,
        *,
        port: int,
        name: str,
        host: str = LOOPBACK,
        request_handler: type[WSGIRequestHandler] | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._name = name
        self._request_handler = _keeping_alive(request_handler)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        try:
            self._server = make_server(
                self._host,
                self._requested_port,
                self._app,
                threaded=True,
                request_handler=self._request_handler,
            )
        except OSError as error:
            raise ServerStartError(
                f"cannot listen on {self._host}:{self._requested_port}: {error.strerror}"
            ) from None
        self._thread = threading.Thread(
            target=functools.partial(self._server.serve_forever, poll_interval=SHUTDOWN_POLL),
            daemon=True,
            name=self._name,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            connections = _connections_of(self._server)
            connections.stopping = True
            self._server.shutdown()
            self._server.server_close()
            # Every connection: an idle one's thread waits for a next request, and a
            # busy one's answer has no one left to use it.
            for connection in list(connections.open):
                _shut(connection)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _keeping_alive(handler: type[WSGIRequestHandler] | None) -> type[WSGIRequestHandler]:
    if handler is None or issubclass(handler, KeepAliveHandler):
        return handler or KeepAliveHandler
    return type(handler.__name__, (KeepAliveHandler, handler), {})


def _shut(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already gone
        connection.shutdown(socket.SHUT_RDWR)

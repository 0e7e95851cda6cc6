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
import io
import logging
import socket
import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"
NO_BODY_STATUSES = frozenset({204, 304})
HOP_BY_HOP = frozenset({"connection", "content-length", "keep-alive", "transfer-encoding"})

log = logging.getLogger(__name__)


class ServerStartError(OSError):
    """The server could not listen (port busy...)."""


class KeepAliveHandler(WSGIRequestHandler):
    """A WSGI request handler that keeps HTTP/1.1 connections open (see the module)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds
    # the body back until the client acknowledges the headers (up to 40 ms).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        _connections(self.server).add(self.connection)

    def finish(self) -> None:
        _connections(self.server).discard(self.connection)
        super().finish()

    def run_wsgi(self) -> None:
        environ = self.make_environ()
        body = _whole_body(environ, self.headers)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))  # a chunked request's too
        environ.pop("wsgi.input_terminated", None)
        self.environ = environ
        try:
            status, headers, body = _respond(self.server.app, environ)
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            status, headers, body = "500 INTERNAL SERVER ERROR", [], b"internal error"
        self._send(status, headers, body)

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        has_body = int(code) >= 200 and int(code) not in NO_BODY_STATUSES
        if has_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if has_body and self.command != "HEAD":
            self.wfile.write(body)


def _whole_body(environ: dict[str, Any], headers: Any) -> bytes:
    """The request's body, read to its end (werkzeug's environ has already wrapped
    a chunked one to stop at its last chunk)."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        return bytes(stream.read())
    length = int(headers.get("Content-Length") or 0)
    return bytes(stream.read(length)) if length > 0 else b""


def _respond(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Runs the WSGI app to the end: its status, headers and whole body."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started and written:
            raise exc_info[1].with_traceback(exc_info[2])
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


def _connections(server: Any) -> set[socket.socket]:
    """The server's open connections, closed by :meth:`ThreadedServer.stop`."""
    connections: set[socket.socket] = server.__dict__.setdefault("open_connections", set())
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
            target=self._server.serve_forever, daemon=True, name=self._name
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            # An idle kept-alive connection's thread waits for a next request.
            for connection in list(_connections(self._server)):
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

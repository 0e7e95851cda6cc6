"""One way to serve a WSGI app on loopback from a background thread."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"


class ServerStartError(OSError):
    """The server could not listen (port busy...)."""


class ThreadedServer:
    """A threaded werkzeug server for ``app``; port 0 picks a free port."""

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
        self._request_handler = request_handler
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
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

"""``memwarden serve``: a Warden for this machine or container, with the HTTP API and dashboard.

The server is uvicorn. memwarden binds the listening socket itself, so
``--port 0`` gets a free port and the URL printed is the one actually bound.
Ctrl-C (SIGINT) or SIGTERM stops it: uvicorn finishes the requests in flight
(open event streams are cut after a short grace period), then the Warden stops.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Generator
from typing import Any

import anyio

__all__: list[str] = []

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Bounds how long a stop waits for responses still open (streams are closed first).
_GRACE_SECONDS = 1

_DESCRIPTION = """\
Run a Warden for this machine or container and serve its HTTP API, Prometheus
metrics and live dashboard. The Warden reads its settings from the environment
(MEMWARDEN_* and the seed variables), as WardenConfig.from_env() does.

Binds 127.0.0.1 unless told otherwise. A host other than a loopback address
needs a token (--token or MEMWARDEN_API_TOKEN) unless --insecure is given.
Prefer MEMWARDEN_API_TOKEN: a command-line argument is visible to every user
of the machine.

Prints the URL it serves on (the real port when --port is 0); Ctrl-C stops it.
"""


class UsageError(Exception):
    """A command-line value that cannot be used; the message is one line for the user."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_token(given: str | None) -> str | None:
    """The token from ``--token`` (``given``) or MEMWARDEN_API_TOKEN, or None.

    Raises :class:`UsageError` for an empty one or one with spaces or
    non-ASCII characters (a bearer token is printable ASCII).
    """
    token = given if given is not None else os.environ.get("MEMWARDEN_API_TOKEN")
    if token is None:
        return None
    where = "--token" if given is not None else "MEMWARDEN_API_TOKEN"
    if not token.strip():
        raise UsageError(f"the token is empty ({where})")
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        # The value is a secret: described, never shown.
        raise UsageError(f"the token ({where}) must be printable ASCII without spaces")
    return token


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback ``host`` without a token unless ``insecure``.

    Raises :class:`UsageError` naming the way out.
    """
    if is_loopback(host) or token or insecure:
        return
    raise UsageError(
        f"refusing to serve on {host} without a token: set MEMWARDEN_API_TOKEN or pass "
        "--token, or pass --insecure to expose memory figures to anyone who can connect"
    )


def add_server_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """Add ``--host``, ``--port``, ``--token`` and ``--insecure``; ``prefix`` starts each help."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"{prefix}address to listen on (default: {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"{prefix}TCP port, 0 for any free port (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"{prefix}bearer token every API route requires "
        "(default: MEMWARDEN_API_TOKEN, or none on a loopback host)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help=f"{prefix}allow a non-loopback host without a token (default: refused)",
    )


def server_token(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> str | None:
    """Check the server arguments (a bad one exits through ``parser.error``); the token."""
    if not 0 <= ns.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {ns.port}")
    try:
        token = checked_token(ns.token)
        check_exposure(ns.host, token, ns.insecure)
    except UsageError as exc:
        parser.error(str(exc))
    return token


def format_url(host: str, port: int) -> str:
    """``http://host:port/``, with brackets around an IPv6 address."""
    host = host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one).

    Raises ``OSError`` when the address cannot be bound (in use, unknown host).
    """
    infos = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        # Listening before the URL is printed: a client that connects at once waits in
        # the backlog instead of being refused.
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        # memwarden handles SIGINT/SIGTERM itself (see serve_app): uvicorn's own
        # handlers would re-raise the signal after shutdown, ending in a traceback.
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return Server


async def serve_app(
    app: Any,
    sock: socket.socket,
    *,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the ASGI ``app`` with uvicorn on the listening ``sock`` until SIGINT or SIGTERM.

    ``announce`` is called with the URL once the socket listens. On the first
    signal the app's open event streams end (``app.state.events.close()``, as
    :func:`memwarden.http.create_app` provides), so uvicorn's graceful shutdown
    does not wait for them; a second signal stops at once, without waiting for
    requests in flight.
    """
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=_GRACE_SECONDS,
    )
    server = _server_class()(config)

    streams = getattr(getattr(app, "state", None), "events", None)
    close_streams = getattr(streams, "close", None)

    async def stop_on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if server.should_exit:
                    server.force_exit = True
                server.should_exit = True
                if callable(close_streams):
                    close_streams()

    if announce is not None:
        announce(format_url(host, port))
    async with anyio.create_task_group() as tg:
        if sys.platform != "win32":
            tg.start_soon(stop_on_signals)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


async def run(host: str, port: int, token: str | None) -> None:
    """Start a Warden from the environment and serve its app on ``host``:``port``.

    Raises ``OSError`` when the address cannot be bound.
    """
    from .config import WardenConfig
    from .http import create_app
    from .warden import Warden

    config = WardenConfig.from_env()
    sock = bind(host, port)
    with sock:
        async with Warden(config) as warden:
            app = create_app(warden, token=token)

            def announce(url: str) -> None:
                print(f"memwarden: serving the API and dashboard on {url}", file=sys.stderr)
                print(url, flush=True)

            await serve_app(app, sock, announce=announce)
    print("memwarden: stopped", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The ``memwarden serve`` argument parser."""
    from .cli import command_parser

    parser = command_parser("memwarden serve", _DESCRIPTION)
    add_server_arguments(parser)
    return parser


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden serve``."""
    from .errors import ConfigError

    parser = build_parser()
    ns = parser.parse_args(args)
    token = server_token(parser, ns)
    try:
        anyio.run(run, ns.host, ns.port, token)
    except ConfigError as exc:
        print(f"memwarden serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"memwarden serve: cannot listen on {ns.host}:{ns.port}: {exc}", file=sys.stderr)
        return 1
    return 0

"""`procure serve`: a Prefect server if none is configured, and every deployment, served."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from models.errors import InputError, Problem, ProcureError
from procure.orchestration import (
    DEPLOYMENTS,
    PrefectUnavailable,
    api_setting,
    load_flow,
    prepare_environment,
    runner_poll_seconds,
)

# The Prefect server `procure serve` starts listens here only (its UI has no login).
SERVER_HOST = "127.0.0.1"


def check_port(port: int, *, web_port: int | None = None) -> None:
    """Refuse a --port that the Prefect server `procure serve` starts could not listen on (in
    use, privileged, or the web app's), before anything starts: InputError naming --port, as
    for --web-port. Another Prefect server there would otherwise answer for the one that failed
    to start, and this serve would run (and, stopped, pause) that server's deployments."""
    if port == web_port:
        raise InputError(
            Problem(
                f"{port} is the approval web app's --web-port too: choose another --port",
                field="--port",
            )
        )
    listen(SERVER_HOST, port).close()  # bound as `prefect server start` binds it, then let go


def start_server(port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start `prefect server start` on loopback; returns the process and its API URL once it
    answers. Only this process's server counts: while another program answers on the port (it
    took the port after check_port), this one is waited for until it stops, and its stop is
    reported (a port in use: InputError naming --port; else PrefectUnavailable with its log)."""
    import httpx

    home = Path(os.environ["PREFECT_HOME"])
    path = home / "server.log"
    log = path.open("ab")
    offset = log.tell()  # what this start writes: the file keeps the earlier starts' too
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            SERVER_HOST,
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PREFECT_SERVER_LOGGING_LEVEL": os.environ.get(
                "PREFECT_SERVER_LOGGING_LEVEL", "WARNING"
            ),
        },
        # Its own session: Ctrl-C stops `procure serve` first, which then stops the server, so
        # the runner never loses its server in the middle of shutting down.
        start_new_session=True,
    )
    log.close()  # the server holds its own copy
    url = f"http://{SERVER_HOST}:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _stopped_at_start(port, path, offset)
        if _holds_listener(process.pid, port) is not False:
            try:
                answered = httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                answered = False
            if answered and process.poll() is None:
                return process, url
        time.sleep(0.5)
    process.terminate()
    raise PrefectUnavailable(
        f"the Prefect server procure serve started did not answer on {SERVER_HOST}:{port} "
        f"within 120 s; see {path}"
    )


def _stopped_at_start(port: int, path: Path, offset: int) -> ProcureError:
    """Why the Prefect server stopped as it started, from what it wrote to its log."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    if "already in use" in text or "already running on port" in text:
        return InputError(
            Problem(
                f"{port} is in use on {SERVER_HOST} (another program listens there): "
                "choose another --port",
                field="--port",
            )
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = f": {lines[-1]}" if lines else ""
    return PrefectUnavailable(
        f"the Prefect server procure serve started on {SERVER_HOST}:{port} stopped at "
        f"start{last}; see {path}"
    )


def _holds_listener(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on `port` (Linux's /proc tells); None
    where that cannot be told (then an answer on the port is taken to be its)."""
    inodes: set[str] = set()
    tables = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for row in rows:
            fields = row.split()
            # sl local_address rem_address st ... inode; 0A: listening
            if len(fields) > 9 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                inodes.add(fields[9])
    if not tables:
        return None
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        try:
            if os.readlink(fd) in wanted:
                return True
        except OSError:
            continue  # closed since it was listed
    return False


def base_url(host: str, port: int) -> str:
    """The address of a web app listening on host:port, as links in notifications give it: a
    wildcard address (every interface) by this machine's name."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (naming it, not binding it)
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


def links_without_web() -> str:
    """Where notifications link to when this command serves no web app: PROCURE_BASE_URL, or
    the default address, said to be one (people would open links to a page nobody serves)."""
    configured = os.environ.get("PROCURE_BASE_URL")
    if configured:
        return f"links in notifications: {configured} (PROCURE_BASE_URL)"
    from procure.settings import Settings

    default = Settings.model_fields["base_url"].default
    return (
        f"links in notifications: {default}, the default: set PROCURE_BASE_URL to the address "
        "people open procure web at"
    )


def use_base_url(host: str, port: int) -> str:
    """Links point at the web app this command serves unless PROCURE_BASE_URL says otherwise
    (behind a proxy); set in the environment, so the flows' processes render them alike."""
    os.environ.setdefault("PROCURE_BASE_URL", base_url(host, port))
    return os.environ["PROCURE_BASE_URL"]


def deployments(timezone: str) -> list[Any]:
    """Every deployment of procure, with its schedule in the organisation's time zone."""
    from prefect.schedules import Cron

    out = []
    for spec in DEPLOYMENTS:
        parameters = dict(spec.parameters)
        schedules = [Cron(spec.cron, timezone=timezone)] if spec.cron else None
        if spec.name == "hr-sync":
            export = os.environ.get("PROCURE_HR_EXPORT")
            if export:
                parameters["export"] = export
            else:
                schedules = None  # nothing to sync from: run it by hand with the export's path
        out.append(
            load_flow(spec).to_deployment(
                name=spec.name,
                description=spec.description,
                schedules=schedules,
                parameters=parameters,
            )
        )
    return out


def check_routes(settings: Any) -> None:
    """Refuse to start with a routes file that cannot be used (missing, unreadable, a bad line,
    an unset ${VAR} or Prefect Secret), as `procure notify check` names it: InputError, exit 2.
    Unset, nothing is sent and the web app and dispatcher say so, as before."""
    if settings.apprise_config is not None:
        from notifications.routing import load_routes

        load_routes(settings.apprise_config)


def listen(
    host: str, port: int, *, host_option: str = "--host", port_option: str = "--port"
) -> socket.socket:
    """The web app's socket, bound to host:port before anything says it listens; InputError
    naming the option when it cannot be: the port in use or not allowed, a host that is not
    this machine's address or no address at all."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            Problem(f"{host!r} is not an address or a known host name ({exc})", field=host_option)
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                Problem(
                    f"{port} is in use on {host} (another program listens there): "
                    f"choose another {port_option}",
                    field=port_option,
                )
            ) from None
        if exc.errno == errno.EACCES:
            raise InputError(
                Problem(
                    f"{port} needs privileges on this machine: choose one above 1023",
                    field=port_option,
                )
            ) from None
        raise InputError(
            Problem(
                f"cannot listen on {host} ({exc.strerror}): give one of this machine's "
                "addresses (127.0.0.1, or 0.0.0.0 for every one)",
                field=host_option,
            )
        ) from None
    return sock


def web_server(host: str, port: int) -> Any:
    """The approval web app under uvicorn. No access log: a link's path is its token."""
    import uvicorn

    from web.app import create_app

    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def start_web(
    host: str, port: int, sock: socket.socket | None = None
) -> tuple[Any, threading.Thread]:
    """The web app in a thread of this process (for `procure serve`), once it answers; on
    `sock` when bound already."""
    import httpx

    sock = sock or listen(host, port, port_option="--web-port")
    server = web_server(host, port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="procure-web", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the web app did not start on {host}:{port} (is the port free?)")
        try:
            if httpx.get(f"http://{host}:{port}/health", timeout=2).status_code == 200:
                return server, thread
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the web app did not answer on {host}:{port} within 30 s")


def serve_all(
    database_url: str,
    *,
    port: int,
    limit: int,
    web_host: str = "127.0.0.1",
    web_port: int | None = 8000,
    web_socket: socket.socket | None = None,
) -> int:
    """Serve until interrupted; returns the exit code. Whatever it starts (the Prefect server,
    the web app) is stopped when it returns or raises."""
    import httpx

    prepare_environment()
    os.environ["PROCURE_DATABASE_URL"] = database_url
    if web_port is not None:
        use_base_url(web_host, web_port)
    from models import pipeline
    from models.db import make_engine, transaction

    engine = make_engine(database_url)
    with transaction(engine, readonly=True) as session:
        _, spec = pipeline.active(session)
    engine.dispose()
    timezone = spec.calendar.timezone
    server = None
    web = None
    web_thread = None
    configured = api_setting()
    try:
        if configured is None:
            typer.echo(
                f"procure serve: no PREFECT_API_URL: starting a Prefect server on {SERVER_HOST} ..."
            )
            server, url = start_server(port)
            os.environ["PREFECT_API_URL"] = url
            where = "started by procure serve"
        else:
            url, where = configured
        if web_port is not None:
            web, web_thread = start_web(web_host, web_port, web_socket)
            typer.echo(
                f"procure serve: approval pages and API on http://{web_host}:{web_port}/; "
                f"links in notifications: {os.environ['PROCURE_BASE_URL']}"
            )
        else:
            typer.echo(f"procure serve: no web app (--no-web); {links_without_web()}")
        from prefect import serve

        typer.echo(f"procure serve: Prefect API {url} (UI: {url.removesuffix('/api')})")
        if not os.environ.get("PROCURE_HR_EXPORT"):
            typer.echo(
                "procure serve: hr-sync is not scheduled: PROCURE_HR_EXPORT is not set (set it "
                "to the HR export's path for the daily sync; procure run hr-sync FILE runs one)"
            )
        typer.echo(
            f"procure serve: serving {len(DEPLOYMENTS)} deployments, schedules in {timezone}; "
            "Ctrl-C stops"
        )
        poll = runner_poll_seconds()
        runner: dict[str, Any] = {"query_seconds": poll} if poll is not None else {}
        try:
            serve(*deployments(timezone), limit=limit, print_starting_message=False, **runner)
        except httpx.TransportError as exc:  # it stopped answering since it was checked
            reason = str(exc) or type(exc).__name__
            raise PrefectUnavailable(
                f"cannot reach the Prefect server at {url} ({where}): {reason}"
            ) from None
    except KeyboardInterrupt:
        pass
    finally:
        if web is not None and web_thread is not None:
            web.should_exit = True
            web_thread.join(timeout=10)
        elif web_socket is not None:
            web_socket.close()
        if server is not None:
            # Prefect's background observers still hold connections to the server as serve()
            # returns; losing them at shutdown is expected, not worth a traceback.
            import logging

            for name in (
                "prefect.FlowRunCancellingObserver",
                "prefect.events.clients",
                "prefect.runner",
            ):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0

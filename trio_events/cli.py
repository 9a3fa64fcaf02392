"""The ``trio-events`` command: serve, init, user, room, token, tail, migrate-storage.

Every subcommand but ``tail`` takes ``--config PATH`` and ``--data-dir DIR``
(``tail`` takes ``--config`` to find the server).  Errors are one line on
stderr and a non-zero exit status, never a traceback: a traceback is kept for
bugs.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import trio

from . import __version__
from .config import Config, ConfigError, default_config_path, load_config
from .errors import ApiError
from .logs import configure_logging
from .migrate_storage import migrate_storage
from .model import SYSTEM_USER
from .server import serve, ssl_context
from .services import Services
from .services.bootstrap import ensure_admin
from .store import open_store
from .tail import TailError, tail
from .workers import check_workers, run_workers

__all__ = ["main"]


class CliError(Exception):
    """A failure to report as one line."""


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a nested parser must not overwrite what an outer one has read.
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: ./config.toml)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="directory for the database and files",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-events", description="A Trio chat event server.")
    parser.add_argument("--version", action="version", version=f"trio-events {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server")
    _common(p)
    p.add_argument("--host", help="address to listen on")
    p.add_argument("--port", type=int, help="port to listen on (0 picks a free one)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on one port (needs PostgreSQL and Redis)",
    )
    # Set by a --workers supervisor for its workers: inherited listening sockets.
    p.add_argument("--listen-fds", default="", help=argparse.SUPPRESS)

    p = sub.add_parser("init", help="write a config file and create the first admin")
    _common(p)
    p.add_argument("--admin-password", metavar="PASS", help="password for the admin user")

    p = sub.add_parser("user", help="manage users")
    _common(p)
    users = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", help="create a user")
    _common(add)
    add.add_argument("name")
    add.add_argument("--password", required=True, help="the password, or - to read it from stdin")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    add.add_argument("--display-name", metavar="TEXT")
    lst = users.add_parser("list", help="list users")
    _common(lst)
    passwd = users.add_parser("passwd", help="set a user's password (ends their sessions)")
    _common(passwd)
    passwd.add_argument("name")
    passwd.add_argument(
        "--password", required=True, help="the password, or - to read it from stdin"
    )
    suspend = users.add_parser("suspend", help="suspend a user (ends their sessions)")
    _common(suspend)
    suspend.add_argument("name")

    p = sub.add_parser("room", help="manage rooms")
    _common(p)
    rooms = p.add_subparsers(dest="room_command", required=True, metavar="ACTION")
    radd = rooms.add_parser("add", help="create a room")
    _common(radd)
    radd.add_argument("name")
    radd.add_argument("--type", choices=["Public", "Private"], default="Private")
    radd.add_argument("--member", action="append", default=[], metavar="USER", help="repeatable")
    radd.add_argument("--moderator", action="append", default=[], metavar="USER", help="repeatable")
    rlist = rooms.add_parser("list", help="list rooms")
    _common(rlist)
    madd = rooms.add_parser("member-add", help="add a member (or change their moderator flag)")
    _common(madd)
    madd.add_argument("room", help="room id or exact name")
    madd.add_argument("user")
    madd.add_argument("--moderator", action="store_true")
    mdel = rooms.add_parser("member-remove", help="remove a member")
    _common(mdel)
    mdel.add_argument("room", help="room id or exact name")
    mdel.add_argument("user")

    p = sub.add_parser("tail", help="print a user's live event stream, one JSON per line")
    p.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="find the server from this config (default: ./config.toml if present)",
    )
    p.add_argument(
        "--url", help="the server's base URL (default: from the config, else http://127.0.0.1:7777)"
    )
    p.add_argument("--user", help="log in as this user (with --password)")
    p.add_argument("--password", help="the password, or - to read it from stdin")
    p.add_argument("--token", help="a Web API token instead (default: $TRIO_EVENTS_TOKEN)")

    p = sub.add_parser("token", help="print a new Web API token for a user")
    _common(p)
    p.add_argument("name")

    p = sub.add_parser(
        "migrate-storage",
        help="copy this deployment's SQLite database into an empty PostgreSQL database",
    )
    _common(p)
    p.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://user@host:port/database"
    )
    return parser


def _load(args: argparse.Namespace) -> Config:
    config_arg = getattr(args, "config", None)
    path = Path(config_arg) if config_arg else default_config_path()
    server: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        server["data_dir"] = args.data_dir
    if getattr(args, "host", None):
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        server["port"] = args.port
    return load_config(path, overrides={"server": server})


def _password(value: str) -> str:
    if value == "-":
        return sys.stdin.readline().rstrip("\r\n")
    return value


def _run_with_services(config: Config, fn: Callable[[Services], Awaitable[None]]) -> None:
    async def main() -> None:
        async with open_store(config) as store:
            await fn(Services.build(config, store))

    trio.run(main)


def tune_gc() -> None:
    """Keep full collections off the stream's latency tail.

    Everything allocated during start-up lives as long as the process, so it
    is moved out of the collector's sight (``gc.freeze``), and generation 0
    runs less often.  Python's full collections otherwise pause every stream
    for tens of milliseconds once a few hundred connections are open.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _serve_until_signal(config: Config, listen_fds: Sequence[int] = ()) -> None:
    shutdown = trio.Event()

    async def watch_signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                shutdown.set()
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        await nursery.start(partial(serve, config, shutdown, listen_fds=listen_fds))
        tune_gc()
        # serve() returns once `shutdown` is set and it has stopped gracefully;
        # watch_signals returned after the first signal, so a second Ctrl-C
        # interrupts a slow shutdown the usual way.


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    check_workers(config, args.workers)
    configure_logging(config.server.log_level)
    if args.workers > 1:
        return trio.run(_supervise_until_signal, config, args.argv, args.workers)
    try:
        fds = [int(fd) for fd in args.listen_fds.split(",") if fd]
    except ValueError:
        raise CliError(f"--listen-fds: expected descriptors, got {args.listen_fds!r}") from None
    _check_tls(config)
    try:
        try:
            trio.run(_serve_until_signal, config, fds)
        except BaseExceptionGroup as group:
            raise _sole_error(group) from None
    except OSError as exc:
        if exc.filename is not None:
            raise
        # Binding is the only step without a file name: say where it failed.
        where = f"{config.server.host}:{config.server.port}"
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another server is running there? choose another with --port)"
        raise CliError(f"cannot listen on {where}: {reason}") from None
    return 0


def _check_tls(config: Config) -> None:
    """Load the certificate once before starting, to name the file that is wrong."""
    if not config.server.tls:
        return
    try:
        ssl_context(config)
    except OSError as exc:  # ssl.SSLError is one too
        files = f"{config.server.certfile}, {config.server.keyfile}"
        raise CliError(
            f"server.certfile/keyfile: cannot load {files}: {exc.strerror or exc}"
        ) from None


async def _supervise_until_signal(config: Config, argv: Sequence[str], workers: int) -> int:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    shutdown.set()
                    return

        nursery.start_soon(watch_signals)
        code = await run_workers(config, argv, workers, shutdown)
        nursery.cancel_scope.cancel()
    return code


def cmd_init(args: argparse.Namespace) -> None:
    path = Path(getattr(args, "config", None) or "config.toml")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = resources.files("trio_events").joinpath("default_config.toml").read_text()
        if getattr(args, "data_dir", None):
            # The written file must name the directory this deployment uses,
            # or a later plain `serve` starts an empty one next to it.
            data_dir = json.dumps(str(Path(args.data_dir).resolve()))  # a TOML basic string
            text, found = re.subn(
                r'^data_dir = "data"', lambda _: f"data_dir = {data_dir}", text, flags=re.M
            )
            assert found == 1, "default_config.toml lost its data_dir line"
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    args.config = str(path)
    config = _load(args)

    async def init(svc: Services) -> None:
        password = await ensure_admin(svc, args.admin_password)
        name = config.bootstrap.admin_user
        if password is None:
            print(f"users exist already in {config.data_dir}; nothing to create", file=sys.stderr)
        elif not password:
            print(f"created admin user {name!r}", file=sys.stderr)
        else:
            print(f"created admin user {name!r}; its password (shown once):", file=sys.stderr)
            print(password)

    _run_with_services(config, init)


def cmd_user(args: argparse.Namespace) -> None:
    config = _load(args)

    async def run(svc: Services) -> None:
        if args.user_command == "add":
            user = await svc.users.create_user(
                None, args.name, _password(args.password), args.display_name, args.admin
            )
            print(f"created user {user.user_name!r} id={user.user_id}", file=sys.stderr)
        elif args.user_command == "list":
            for user in await svc.users.list_users():
                role = "admin" if user.is_admin else "user"
                print(
                    f"{user.user_id}\t{user.user_name}\t{user.display_name}\t{role}\t{user.status}"
                )
        elif args.user_command == "passwd":
            user = await svc.users.find_user(args.name)
            await svc.users.update_user(None, user.user_id, {"password": _password(args.password)})
            print(f"password changed for {user.user_name!r}; their sessions ended", file=sys.stderr)
        elif args.user_command == "suspend":
            user = await svc.users.find_user(args.name)
            await svc.users.update_user(None, user.user_id, {"status": "Suspended"})
            print(f"suspended {user.user_name!r}; their sessions ended", file=sys.stderr)

    _run_with_services(config, run)


def cmd_room(args: argparse.Namespace) -> None:
    config = _load(args)

    async def run(svc: Services) -> None:
        if args.room_command == "add":
            members = [(await svc.users.find_user(n)).user_id for n in args.member]
            moderators = [(await svc.users.find_user(n)).user_id for n in args.moderator]
            room = await svc.rooms.create(
                None,
                {
                    "displayName": args.name,
                    "roomType": args.type,
                    "memberIds": members,
                    "moderatorIds": moderators,
                },
            )
            print(f"created room {args.name!r} id={room['roomId']}", file=sys.stderr)
        elif args.room_command == "list":
            for room in await svc.rooms.list_rooms(SYSTEM_USER):
                archived = "\tarchived" if room["isArchived"] else ""
                print(f"{room['roomId']}\t{room['displayName']}\t{room['roomType']}{archived}")
        else:
            room_id = (await svc.rooms.find(args.room)).room_id
            user = await svc.users.find_user(args.user)
            if args.room_command == "member-add":
                body = {"isModerator": args.moderator}
                await svc.rooms.put_member(SYSTEM_USER, room_id, user.user_id, body)
                print(f"{user.user_name!r} is a member of room {room_id}", file=sys.stderr)
            else:
                await svc.rooms.remove_member(SYSTEM_USER, room_id, user.user_id)
                print(f"removed {user.user_name!r} from room {room_id}", file=sys.stderr)

    _run_with_services(config, run)


def cmd_token(args: argparse.Namespace) -> None:
    config = _load(args)

    async def run(svc: Services) -> None:
        user = await svc.users.find_user(args.name)
        if not user.is_active:
            raise CliError(f"user {user.user_name!r} is not active")
        print(await svc.auth.issue_token(user.user_id))

    _run_with_services(config, run)


def _tail_url(args: argparse.Namespace) -> str:
    """``--url``, else the configured server's own address, else the default one."""
    if args.url:
        return str(args.url)
    config_arg = getattr(args, "config", None)
    path = Path(config_arg) if config_arg else default_config_path()
    if path is None:
        return "http://127.0.0.1:7777"
    server = load_config(path).server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if server.tls else 'http'}://{host}:{server.port}"


def cmd_tail(args: argparse.Namespace) -> int:
    password = _password(args.password) if args.password is not None else None
    token = args.token or os.environ.get("TRIO_EVENTS_TOKEN")
    url = _tail_url(args)
    try:
        return trio.run(partial(tail, url, user=args.user, password=password, token=token))
    except TailError as exc:
        raise CliError(str(exc)) from None


def cmd_migrate_storage(args: argparse.Namespace) -> int:
    config = _load(args)
    source = config.sqlite_path
    print(f"copying {source} -> {_without_password(args.to)}")
    counts = migrate_storage(source, args.to, progress=print)
    width = max(len(c.table) for c in counts)
    print("verified: row counts and largest ids match in both databases")
    for c in counts:
        largest = "" if c.max_id is None else f"  (largest id {c.max_id})"
        print(f"  {c.table:<{width}}  {c.rows:>9} rows{largest}")
    print(
        'now set [storage] backend = "postgresql" and url to the new database;'
        f" keep {config.data_dir / 'files'} (attachment bytes) with the data directory"
    )
    return 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "serve": cmd_serve,
    "init": cmd_init,
    "user": cmd_user,
    "room": cmd_room,
    "token": cmd_token,
    "tail": cmd_tail,
    "migrate-storage": cmd_migrate_storage,
}


EXPECTED_ERRORS = (ConfigError, CliError, ApiError, OSError, sqlite3.Error, KeyboardInterrupt)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a user should read from a group raised out of nurseries.

    Start-up failures (a port in use, an unreadable database) surface from
    inside the server's nurseries wrapped in exception groups.  A group that
    holds exactly one error we expect is unwrapped to it; a group of several
    errors, or of one we did not expect (a bug), keeps its traceback.
    """
    leaves = _leaves(group)
    if len(leaves) == 1 and isinstance(leaves[0], EXPECTED_ERRORS):
        return leaves[0]
    return group


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    args.argv = raw
    try:
        try:
            status = COMMANDS[args.command](args)
        except BaseExceptionGroup as group:
            raise _sole_error(group) from None
    except (ConfigError, CliError) as exc:
        print(f"trio-events: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"trio-events: error: {exc.text}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trio-events: error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"trio-events: error: the database: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.command == "tail" else 130
    return status or 0

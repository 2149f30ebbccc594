"""PostgresStore: threads, and what guards learn, in PostgreSQL, shared by every process of a
deployment.

An optional part of prefill_guard (``pip install 'prefill-guard[postgres]'``, psycopg 3 and its
pool): importing this module needs psycopg; ``import prefill_guard`` never does. The store keeps
the contract of :class:`~prefill_guard.stores.SQLiteStore` (see ``docs/threads.md``) and adds
an async twin of every method (``aload``, ``aappend``...), on psycopg's async connections, which
the Agent's async drivers use so that a run never blocks its event loop on the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .contract import RawMessage
from .messages import MessageList
from .stores import (
    StoreError,
    ThreadStore,
    check_thread_id,
    decode_rows,
    encode_messages,
    starts_with,
)

__all__ = ["PostgresStore"]

logger = logging.getLogger("prefill_guard")

_T = TypeVar("_T")
Connection = psycopg.Connection[Any]
AsyncConnection = psycopg.AsyncConnection[Any]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # schema 1: messages numbered 0, 1, 2... within their thread; recent writes; facts
        """
        CREATE TABLE prefill_guard_thread_messages (
            thread_id text NOT NULL CHECK (length(thread_id) > 0),
            seq integer NOT NULL CHECK (seq >= 0),
            message text NOT NULL,
            PRIMARY KEY (thread_id, seq)
        )
        """,
        """
        CREATE TABLE prefill_guard_writes (
            write_id uuid PRIMARY KEY,
            thread_id text NOT NULL,
            written_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX ON prefill_guard_writes (thread_id, written_at)",
        """
        CREATE TABLE prefill_guard_knowledge (
            fact text NOT NULL,
            subject text NOT NULL,
            learned_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (fact, subject)
        )
        """,
    ),
)
"""Migration ``n`` (1-based) upgrades schema ``n - 1`` to ``n``: its statements run in order, in
the opening transaction, under the schema's lock; the schema version is this tuple's length."""

_ATTEMPTS = 3
"""Attempts of a call whose connection is lost: the first and two more."""

_SCHEMA_LOCK = (
    "SELECT pg_advisory_xact_lock("
    "hashtextextended('prefill_guard schema ' || coalesce(current_schema(), ''), 0))"
)
"""The lock every opening store takes to check or migrate the schema (per database schema)."""
_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended(coalesce(current_schema(), '') || ' ' || %s, 0))"
)
"""Every write to a thread first takes the thread's lock, held until its transaction ends:
writes to one thread queue there, so their numbers never clash (two threads whose ids hash
alike only queue together)."""
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"
"""Set on each new connection: a thread's lock is waited for no longer than ``timeout``."""
_LOAD = "SELECT message FROM prefill_guard_thread_messages WHERE thread_id = %s ORDER BY seq"
_NEXT = "SELECT COALESCE(max(seq) + 1, 0) FROM prefill_guard_thread_messages WHERE thread_id = %s"
_INSERT = "INSERT INTO prefill_guard_thread_messages (thread_id, seq, message) VALUES (%s, %s, %s)"
_DELETE = "DELETE FROM prefill_guard_thread_messages WHERE thread_id = %s"
_RECORD = """
    WITH pruned AS (
        DELETE FROM prefill_guard_writes
        WHERE thread_id = %(thread)s AND written_at < now() - interval '1 hour'
    )
    INSERT INTO prefill_guard_writes (write_id, thread_id) VALUES (%(write)s, %(thread)s)
"""
"""Records a write in its own transaction (and forgets the thread's writes older than an hour:
an attempt made again after a lost connection comes seconds later, not hours)."""
_RECORDED = "SELECT EXISTS (SELECT FROM prefill_guard_writes WHERE write_id = %s)"
_LIST = (
    'SELECT DISTINCT thread_id COLLATE "C" AS thread_id FROM prefill_guard_thread_messages '
    "ORDER BY 1"
)
_KNOWN = 'SELECT subject FROM prefill_guard_knowledge WHERE fact = %s ORDER BY subject COLLATE "C"'
_REMEMBER = (
    "INSERT INTO prefill_guard_knowledge (fact, subject) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)


def _lost(exc: psycopg.Error, conn: Connection | AsyncConnection) -> bool:
    """Whether ``exc`` means the connection was lost (so the server rolled back whatever the
    transaction had not committed), rather than the database refusing the statement."""
    return isinstance(exc, psycopg.OperationalError) and (conn.closed or conn.broken)


class PostgresStore(ThreadStore):
    """Threads in a PostgreSQL database, shared by any number of processes and machines.

    ``conninfo`` is a libpq URL or connection string (``postgresql://user:pass@host/db``;
    percent-encode ``@``, ``:``, ``/`` and ``%`` in a password; add
    ``?options=-csearch_path%3Dmyschema`` to keep the tables in a schema of their own).
    ``timeout`` (seconds) bounds connecting (it replaces any ``connect_timeout``), waiting for a
    free connection of the pool (up to ``max_connections``) and waiting for a thread's lock.
    Opening connects once, checks the schema (a newer one than this version knows is refused,
    untouched) and migrates an older one in one transaction. Every failure, then and later, is
    a :class:`StoreError` naming the server, the database and the thread, never the password.

    Each synchronous method has an async twin (``aload``, ``aappend``, ``arewrite``,
    ``alist_threads``, ``adelete``, ``arecall``, ``aclose``) on psycopg's async connections,
    which ``Agent.agenerate`` and ``Agent.astream`` use. The async pool opens on the first async
    call and belongs to that event loop; close the store in it (``async with store:``).

    A call whose connection is lost is made again, at most twice, on a connection the pool has
    checked. That is safe for writes: each write is recorded under an id in its own transaction,
    and a write made again first looks for its id under the thread's lock, so a write whose
    ``COMMIT`` reached the server before the connection dropped is not made twice.

    One store object may be shared by threads (its pool hands each call a connection) and by
    the tasks of its event loop. It must not cross ``fork()``: open a new store in each process.
    """

    def __init__(self, conninfo: str, *, max_connections: int = 4, timeout: float = 10.0) -> None:
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
        if not isinstance(max_connections, int) or isinstance(max_connections, bool):
            raise TypeError(f"max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        parts = _parsed(conninfo)
        self._conninfo = make_conninfo(conninfo, connect_timeout=max(1, math.ceil(timeout)))
        self._max_connections = max_connections
        self._timeout = float(timeout)
        host = str(parts.get("host") or os.environ.get("PGHOST") or "localhost")
        port = str(parts.get("port") or os.environ.get("PGPORT") or "5432")
        user = str(parts.get("user") or os.environ.get("PGUSER") or "")
        self.server = f"{host}:{port}"
        """Where the server is, as ``host:port`` (for messages)."""
        self.database = str(parts.get("dbname") or os.environ.get("PGDATABASE") or user or "?")
        """The database's name."""
        self._where = f"PostgreSQL at {self.server}, database {self.database!r}"
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._apool: psycopg_pool.AsyncConnectionPool | None = None
        self._apool_loop: asyncio.AbstractEventLoop | None = None
        self._apool_lock: asyncio.Lock | None = None
        self._open_schema()
        self._pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max_connections,
            timeout=self._timeout,
            configure=self._configure,
            open=False,
            name="prefill_guard",
        )
        self._pool.open()

    def __repr__(self) -> str:
        return f"PostgresStore(server={self.server!r}, database={self.database!r})"

    # -- opening and closing ------------------------------------------------------------

    def _open_schema(self) -> None:
        """Connect once, create or migrate the schema under its lock, or refuse it."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn, conn.transaction():
                conn.execute(_SCHEMA_LOCK)
                version = self._schema_version(conn)
                if version == 0:
                    conn.execute("CREATE TABLE prefill_guard_schema (version integer NOT NULL)")
                for number in range(version + 1, len(_MIGRATIONS) + 1):
                    try:
                        for statement in _MIGRATIONS[number - 1]:
                            conn.execute(statement)
                    except psycopg.Error as exc:
                        raise StoreError(
                            f"{self._where}: could not migrate to thread store schema version "
                            f"{number}: {exc}"
                        ) from exc
                    conn.execute("DELETE FROM prefill_guard_schema")
                    conn.execute("INSERT INTO prefill_guard_schema VALUES (%s)", (number,))
        except psycopg.Error as exc:
            raise StoreError(f"{self._where}: could not open the thread store: {exc}") from exc

    def _schema_version(self, conn: Connection) -> int:
        """The schema's version, 0 where there is none yet; a :class:`StoreError` for a newer
        one, or for a ``prefill_guard_schema`` table that is not this library's."""
        (exists,) = conn.execute(
            "SELECT to_regclass('prefill_guard_schema') IS NOT NULL"
        ).fetchone() or (False,)
        if not exists:
            return 0
        try:
            row = conn.execute("SELECT max(version) FROM prefill_guard_schema").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"{self._where}: prefill_guard_schema is unreadable: {exc}") from exc
        version = None if row is None else row[0]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreError(
                f"{self._where}: prefill_guard_schema holds {version!r}, not a thread store "
                "schema version; it was left untouched"
            )
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"{self._where} has thread store schema version {version}, but this "
                f"prefill_guard knows versions up to {len(_MIGRATIONS)}: it was written "
                "by a newer prefill_guard; upgrade prefill_guard to use it"
            )
        return version

    def _configure(self, conn: Connection) -> None:
        """Each new connection waits for a thread's lock no longer than ``timeout``."""
        conn.execute(_LOCK_TIMEOUT, (f"{round(self._timeout * 1000)}ms",))

    async def _aconfigure(self, conn: AsyncConnection) -> None:
        await conn.execute(_LOCK_TIMEOUT, (f"{round(self._timeout * 1000)}ms",))

    def close(self) -> None:
        """Close the connections; later calls raise :class:`StoreError`. Idempotent.

        If async calls were made, their pool is closed too when its event loop is not running
        (and gone with it when that loop is closed); from inside the running loop, use
        ``await store.aclose()`` (``close()`` then raises :class:`StoreError`).
        """
        with self._lock:
            if self._closed:
                return
            apool, loop = self._apool, self._apool_loop
            if apool is not None and loop is not None and loop.is_running():
                raise StoreError(
                    f"{self._where}: this store's async connections belong to a running event "
                    "loop; close it there with `await store.aclose()` (or `async with store:`)"
                )
            self._closed = True
            self._apool = None
        try:
            if apool is not None and loop is not None and not loop.is_closed():
                loop.run_until_complete(apool.close())
            elif apool is not None:
                logger.warning(
                    "%s: the event loop of this store's async connections was closed before "
                    "the store; they are released with it (close async stores in their loop)",
                    self._where,
                )
        finally:
            self._pool.close()

    async def aclose(self) -> None:
        """Close the sync and async connections; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            if self._apool is not None and self._apool_loop is not asyncio.get_running_loop():
                raise StoreError(
                    f"{self._where}: this store's async connections belong to another event "
                    "loop; close the store there"
                )
            self._closed = True
            apool, self._apool = self._apool, None
        try:
            if apool is not None:
                await apool.close()
        finally:
            await asyncio.to_thread(self._pool.close)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except StoreError:
            if exc is None:
                raise
            logger.exception("%s: could not close the store", self._where)  # exc goes on

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where}: the store is closed")
        if os.getpid() != self._pid:
            raise StoreError(
                f"{self._where}: this PostgresStore was opened in process {self._pid}; open a "
                f"new one in process {os.getpid()} (a connection must not cross fork)"
            )

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool:
        """The async pool of the running event loop, opened on first use."""
        self._check_usable()
        loop = asyncio.get_running_loop()
        if self._apool_loop is None:
            self._apool_loop, self._apool_lock = loop, asyncio.Lock()
        elif self._apool_loop is not loop:
            raise StoreError(
                f"{self._where}: this store's async connections belong to another event loop; "
                "open one PostgresStore per event loop"
            )
        assert self._apool_lock is not None
        async with self._apool_lock:
            if self._apool is None:
                pool = psycopg_pool.AsyncConnectionPool(
                    self._conninfo,
                    kwargs={"autocommit": True},
                    min_size=1,
                    max_size=self._max_connections,
                    timeout=self._timeout,
                    configure=self._aconfigure,
                    open=False,
                    name="prefill_guard-async",
                )
                await pool.open()
                self._apool = pool
            return self._apool

    # -- running a call: errors named, lost connections tried again ------------------------

    def _call(self, doing: str, work: Callable[[Connection, bool], _T]) -> _T:
        """``work(connection, again)`` on a pooled connection; made again (``again`` true) on
        a checked one if the connection is lost."""
        self._check_usable()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    try:
                        return work(conn, attempt > 1)
                    except psycopg.Error as exc:
                        if not _lost(exc, conn) or attempt == _ATTEMPTS:
                            raise
                        logger.warning("%s: connection lost; trying again: %s", self._where, exc)
                self._pool.check()  # the other idle connections may be gone too
            except psycopg.Error as exc:  # psycopg_pool.PoolTimeout included
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acall(
        self, doing: str, work: Callable[[AsyncConnection, bool], Awaitable[_T]]
    ) -> _T:
        """The async twin of :meth:`_call`."""
        pool = await self._async_pool()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    try:
                        return await work(conn, attempt > 1)
                    except psycopg.Error as exc:
                        if not _lost(exc, conn) or attempt == _ATTEMPTS:
                            raise
                        logger.warning("%s: connection lost; trying again: %s", self._where, exc)
                await pool.check()
            except psycopg.Error as exc:
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the thread store --------------------------------------------------------------

    def load(self, thread_id: str) -> MessageList:
        thread_id = check_thread_id(thread_id)

        def work(conn: Connection, again: bool) -> list[str]:
            return [row for (row,) in conn.execute(_LOAD, (thread_id,))]

        rows = self._call(f"load thread {thread_id!r}", work)
        return decode_rows(rows, f"{self._where}: thread {thread_id!r}")

    async def aload(self, thread_id: str) -> MessageList:
        """The async twin of :meth:`load`."""
        thread_id = check_thread_id(thread_id)

        async def work(conn: AsyncConnection, again: bool) -> list[str]:
            return [row for (row,) in await (await conn.execute(_LOAD, (thread_id,))).fetchall()]

        rows = await self._acall(f"load thread {thread_id!r}", work)
        return decode_rows(rows, f"{self._where}: thread {thread_id!r}")

    def append(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        if not rows:
            return
        write = {"write": uuid.uuid4(), "thread": thread_id}

        def work(conn: Connection, again: bool) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                if again and _recorded(cursor, write):
                    return
                start = _first(cursor.execute(_NEXT, (thread_id,)).fetchone())
                cursor.executemany(_INSERT, _numbered(thread_id, start, rows))
                cursor.execute(_RECORD, write)

        self._call(f"append to thread {thread_id!r}", work)

    async def aappend(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        """The async twin of :meth:`append`."""
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        if not rows:
            return
        write = {"write": uuid.uuid4(), "thread": thread_id}

        async def work(conn: AsyncConnection, again: bool) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                if again and await _arecorded(cursor, write):
                    return
                start = _first(await (await cursor.execute(_NEXT, (thread_id,))).fetchone())
                await cursor.executemany(_INSERT, _numbered(thread_id, start, rows))
                await cursor.execute(_RECORD, write)

        await self._acall(f"append to thread {thread_id!r}", work)

    def rewrite(self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]) -> bool:
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        write = {"write": uuid.uuid4(), "thread": thread_id}

        def work(conn: Connection, again: bool) -> bool:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                if again and _recorded(cursor, write):
                    return True
                current = [row for (row,) in cursor.execute(_LOAD, (thread_id,))]
                if not starts_with(current, expected):
                    return False
                cursor.execute(_DELETE, (thread_id,))
                cursor.executemany(
                    _INSERT, _numbered(thread_id, 0, [*rows, *current[len(expected) :]])
                )
                cursor.execute(_RECORD, write)
                return True

        return self._call(f"rewrite thread {thread_id!r}", work)

    async def arewrite(
        self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]
    ) -> bool:
        """The async twin of :meth:`rewrite`."""
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        write = {"write": uuid.uuid4(), "thread": thread_id}

        async def work(conn: AsyncConnection, again: bool) -> bool:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                if again and await _arecorded(cursor, write):
                    return True
                current = [
                    row for (row,) in await (await cursor.execute(_LOAD, (thread_id,))).fetchall()
                ]
                if not starts_with(current, expected):
                    return False
                await cursor.execute(_DELETE, (thread_id,))
                await cursor.executemany(
                    _INSERT, _numbered(thread_id, 0, [*rows, *current[len(expected) :]])
                )
                await cursor.execute(_RECORD, write)
                return True

        return await self._acall(f"rewrite thread {thread_id!r}", work)

    def list_threads(self) -> list[str]:
        def work(conn: Connection, again: bool) -> list[str]:
            return [thread for (thread,) in conn.execute(_LIST)]

        return self._call("list threads", work)

    async def alist_threads(self) -> list[str]:
        """The async twin of :meth:`list_threads`."""

        async def work(conn: AsyncConnection, again: bool) -> list[str]:
            return [thread for (thread,) in await (await conn.execute(_LIST)).fetchall()]

        return await self._acall("list threads", work)

    def delete(self, thread_id: str) -> bool:
        thread_id = check_thread_id(thread_id)
        write = {"write": uuid.uuid4(), "thread": thread_id}

        def work(conn: Connection, again: bool) -> bool:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                if again and _recorded(cursor, write):
                    return True
                if cursor.execute(_DELETE, (thread_id,)).rowcount == 0:
                    return False
                cursor.execute(_RECORD, write)
                return True

        return self._call(f"delete thread {thread_id!r}", work)

    async def adelete(self, thread_id: str) -> bool:
        """The async twin of :meth:`delete`."""
        thread_id = check_thread_id(thread_id)
        write = {"write": uuid.uuid4(), "thread": thread_id}

        async def work(conn: AsyncConnection, again: bool) -> bool:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                if again and await _arecorded(cursor, write):
                    return True
                if (await cursor.execute(_DELETE, (thread_id,))).rowcount == 0:
                    return False
                await cursor.execute(_RECORD, write)
                return True

        return await self._acall(f"delete thread {thread_id!r}", work)

    async def arecall(
        self, thread_id: str, *, include_system_reminders: bool = False
    ) -> list[RawMessage]:
        """The async twin of :meth:`recall`."""
        messages = await self.aload(thread_id)
        return list(messages) if include_system_reminders else messages.to_ui()

    # -- learned knowledge ---------------------------------------------------------------

    def known(self, fact: str) -> list[str]:
        """The subjects stored for ``fact`` (e.g. the models known to reject prefill), sorted."""
        fact = _check_name("fact", fact)

        def work(conn: Connection, again: bool) -> list[str]:
            return [subject for (subject,) in conn.execute(_KNOWN, (fact,))]

        return self._call(f"read what is known of {fact!r}", work)

    def remember(self, fact: str, subject: str) -> None:
        """Store that ``fact`` holds for ``subject``; storing it again changes nothing."""
        fact, subject = _check_name("fact", fact), _check_name("subject", subject)

        def work(conn: Connection, again: bool) -> None:
            conn.execute(_REMEMBER, (fact, subject))

        self._call(f"remember {fact!r} of {subject!r}", work)


def _parsed(conninfo: str) -> dict[str, Any]:
    """The parts of ``conninfo``, or a ``ValueError`` that does not repeat it (it may hold a
    password)."""
    try:
        parts = conninfo_to_dict(conninfo)
    except Exception:
        raise ValueError(
            "conninfo is not a PostgreSQL URL or connection string (in a URL, percent-encode "
            "'@', ':', '/' and '%' in the user name and password)"
        ) from None
    if "@" in str(parts.get("host") or ""):
        raise ValueError(
            "conninfo's host holds an '@': percent-encode '@' in the password (as %40)"
        )
    return parts


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode text, got {value!r}") from None
    return value


def _recorded(cursor: psycopg.Cursor[Any], write: dict[str, Any]) -> bool:
    """Whether ``write`` was committed (by an attempt whose answer was lost)."""
    return bool(_first(cursor.execute(_RECORDED, (write["write"],)).fetchone()))


async def _arecorded(cursor: psycopg.AsyncCursor[Any], write: dict[str, Any]) -> bool:
    return bool(_first(await (await cursor.execute(_RECORDED, (write["write"],))).fetchone()))


def _first(row: tuple[Any, ...] | None) -> Any:
    return None if row is None else row[0]


def _numbered(thread_id: str, start: int, rows: Sequence[str]) -> list[tuple[str, int, str]]:
    return [(thread_id, start + offset, row) for offset, row in enumerate(rows)]

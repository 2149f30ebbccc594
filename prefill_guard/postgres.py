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

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # schema 1: one row per message, numbered 0, 1, 2... within its thread; learned facts
        """
        CREATE TABLE prefill_guard_thread_messages (
            thread_id text NOT NULL CHECK (length(thread_id) > 0),
            seq integer NOT NULL CHECK (seq >= 0),
            message text NOT NULL,
            write_id uuid NOT NULL,
            PRIMARY KEY (thread_id, seq)
        )
        """,
        "CREATE INDEX ON prefill_guard_thread_messages (write_id)",
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
the opening transaction, under an advisory lock; the schema version is this tuple's length."""

SCHEMA_LOCK = 0x50475453  # the advisory lock every opening store takes to check or migrate
_ATTEMPTS = 3
"""Calls made again after the connection was lost: the first attempt and two more."""

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
"""Every write to a thread first takes the thread's lock, held until its transaction ends:
writes to one thread queue there, so their numbers never clash (a hash collision only makes
two threads' writes queue together)."""
_LOAD = "SELECT message FROM prefill_guard_thread_messages WHERE thread_id = %s ORDER BY seq"
_LOAD_FOR_REWRITE = (
    "SELECT message, write_id FROM prefill_guard_thread_messages WHERE thread_id = %s ORDER BY seq"
)
_NEXT = "SELECT COALESCE(max(seq) + 1, 0) FROM prefill_guard_thread_messages WHERE thread_id = %s"
_INSERT = (
    "INSERT INTO prefill_guard_thread_messages (thread_id, seq, message, write_id) "
    "VALUES (%s, %s, %s, %s)"
)
_DELETE = "DELETE FROM prefill_guard_thread_messages WHERE thread_id = %s"
_WRITTEN = "SELECT EXISTS (SELECT FROM prefill_guard_thread_messages WHERE write_id = %s)"
_LIST = (
    'SELECT DISTINCT thread_id COLLATE "C" AS thread_id FROM prefill_guard_thread_messages '
    "ORDER BY 1"
)
_KNOWN = 'SELECT subject FROM prefill_guard_knowledge WHERE fact = %s ORDER BY subject COLLATE "C"'
_REMEMBER = (
    "INSERT INTO prefill_guard_knowledge (fact, subject) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)


def _lost(exc: psycopg.Error, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``exc`` means the connection was lost (so the server rolled back whatever the
    transaction had not committed), rather than the database refusing the statement."""
    return isinstance(exc, psycopg.OperationalError) and (conn.closed or conn.broken)


class PostgresStore(ThreadStore):
    """Threads in a PostgreSQL database, shared by any number of processes and machines.

    ``conninfo`` is a libpq connection string or URL (``postgresql://user:pass@host/db``; add
    ``?options=-csearch_path%3Dmyschema`` to keep the tables in a schema of their own). Opening
    connects once, checks the schema (a newer one than this version knows is refused, untouched)
    and migrates an older one in one transaction; every failure, then and later, is a
    :class:`StoreError` naming the server, the database and the thread.

    Each synchronous method has an async twin (``aload``, ``aappend``, ``arewrite``,
    ``alist_threads``, ``adelete``, ``arecall``) on psycopg's async connections, which
    ``Agent.agenerate`` and ``Agent.astream`` use. The sync pool opens with the store; the async
    pool opens on the first async call and belongs to that event loop. Close the store with
    :meth:`close` (sync use only) or ``await store.aclose()`` (``async with store:``) after any
    async call. A call whose connection is lost is made again on a new connection, at most
    twice, when that is safe: every write is tagged with an id, so a write whose commit was sent
    before the connection dropped is found and not made twice.

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
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"conninfo is not a PostgreSQL URL or connection string: {exc}"
            ) from None
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
            open=False,
            name="prefill_guard",
        )
        self._pool.open()

    def __repr__(self) -> str:
        return f"PostgresStore(server={self.server!r}, database={self.database!r})"

    # -- opening and closing ------------------------------------------------------------

    def _open_schema(self) -> None:
        """Connect once, create or migrate the schema under the advisory lock, or refuse it."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS prefill_guard_schema (version integer NOT NULL)"
                )
                row = conn.execute("SELECT max(version) FROM prefill_guard_schema").fetchone()
                version = 0 if row is None or row[0] is None else int(row[0])
                if version > len(_MIGRATIONS):
                    raise StoreError(
                        f"{self._where} has thread store schema version {version}, but this "
                        f"prefill_guard knows versions up to {len(_MIGRATIONS)}: it was written "
                        "by a newer prefill_guard; upgrade prefill_guard to use it"
                    )
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

    def close(self) -> None:
        """Close the connections; later calls raise :class:`StoreError`. Idempotent.

        After an async call, use ``await store.aclose()``: the async pool can only be closed
        in its event loop, so ``close()`` then raises :class:`StoreError`, closing nothing.
        """
        with self._lock:
            if self._closed:
                return
            if self._apool is not None:
                raise StoreError(
                    f"{self._where}: this store opened async connections; close it with "
                    "`await store.aclose()` (or `async with store:`) in their event loop"
                )
            self._closed = True
        self._pool.close()

    async def aclose(self) -> None:
        """Close the sync and async connections; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            apool, self._apool = self._apool, None
        if apool is not None:
            await apool.close()
        await asyncio.to_thread(self._pool.close)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
                    open=False,
                    name="prefill_guard-async",
                )
                await pool.open()
                self._apool = pool
            return self._apool

    # -- running a call: errors named, lost connections tried again ------------------------

    def _call(
        self,
        doing: str,
        work: Callable[[psycopg.Connection[Any]], _T],
        written: Callable[[psycopg.Connection[Any]], bool] | None = None,
        done: _T | None = None,
    ) -> _T:
        """``work`` on a pooled connection. If the connection is lost, it is made again on a
        new one, unless ``written`` finds that the lost attempt committed (then ``done``)."""
        self._check_usable()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    try:
                        if attempt > 1 and written is not None and written(conn):
                            return done  # type: ignore[return-value]
                        return work(conn)
                    except psycopg.Error as exc:
                        if not _lost(exc, conn) or attempt == _ATTEMPTS:
                            raise
                        logger.warning("%s: connection lost; trying again: %s", self._where, exc)
            except psycopg_pool.PoolTimeout as exc:
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acall(
        self,
        doing: str,
        work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]],
        written: Callable[[psycopg.AsyncConnection[Any]], Awaitable[bool]] | None = None,
        done: _T | None = None,
    ) -> _T:
        """The async twin of :meth:`_call`."""
        pool = await self._async_pool()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    try:
                        if attempt > 1 and written is not None and await written(conn):
                            return done  # type: ignore[return-value]
                        return await work(conn)
                    except psycopg.Error as exc:
                        if not _lost(exc, conn) or attempt == _ATTEMPTS:
                            raise
                        logger.warning("%s: connection lost; trying again: %s", self._where, exc)
            except psycopg_pool.PoolTimeout as exc:
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"{self._where}: could not {doing}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the thread store --------------------------------------------------------------

    def load(self, thread_id: str) -> MessageList:
        thread_id = check_thread_id(thread_id)

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            return [row for (row,) in conn.execute(_LOAD, (thread_id,))]

        rows = self._call(f"load thread {thread_id!r}", work)
        return decode_rows(rows, f"{self._where}: thread {thread_id!r}")

    async def aload(self, thread_id: str) -> MessageList:
        """The async twin of :meth:`load`."""
        thread_id = check_thread_id(thread_id)

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            return [row for (row,) in await (await conn.execute(_LOAD, (thread_id,))).fetchall()]

        rows = await self._acall(f"load thread {thread_id!r}", work)
        return decode_rows(rows, f"{self._where}: thread {thread_id!r}")

    def append(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        if not rows:
            return
        write_id = uuid.uuid4()

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                start = _first(cursor.execute(_NEXT, (thread_id,)).fetchone())
                cursor.executemany(_INSERT, _numbered(thread_id, start, rows, write_id))

        def written(conn: psycopg.Connection[Any]) -> bool:
            return bool(_first(conn.execute(_WRITTEN, (write_id,)).fetchone()))

        self._call(f"append to thread {thread_id!r}", work, written)

    async def aappend(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        """The async twin of :meth:`append`."""
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        if not rows:
            return
        write_id = uuid.uuid4()

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                start = _first(await (await cursor.execute(_NEXT, (thread_id,))).fetchone())
                await cursor.executemany(_INSERT, _numbered(thread_id, start, rows, write_id))

        async def written(conn: psycopg.AsyncConnection[Any]) -> bool:
            return bool(_first(await (await conn.execute(_WRITTEN, (write_id,))).fetchone()))

        await self._acall(f"append to thread {thread_id!r}", work, written)

    def rewrite(self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]) -> bool:
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        write_id = uuid.uuid4()

        def work(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                current = cursor.execute(_LOAD_FOR_REWRITE, (thread_id,)).fetchall()
                plan = _rewritten(thread_id, current, expected, rows, write_id)
                if plan is None:
                    return False
                cursor.execute(_DELETE, (thread_id,))
                cursor.executemany(_INSERT, plan)
                return True

        def written(conn: psycopg.Connection[Any]) -> bool:
            return bool(rows) and bool(_first(conn.execute(_WRITTEN, (write_id,)).fetchone()))

        return self._call(f"rewrite thread {thread_id!r}", work, written, True)

    async def arewrite(
        self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]
    ) -> bool:
        """The async twin of :meth:`rewrite`."""
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        write_id = uuid.uuid4()

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                current = await (await cursor.execute(_LOAD_FOR_REWRITE, (thread_id,))).fetchall()
                plan = _rewritten(thread_id, current, expected, rows, write_id)
                if plan is None:
                    return False
                await cursor.execute(_DELETE, (thread_id,))
                await cursor.executemany(_INSERT, plan)
                return True

        async def written(conn: psycopg.AsyncConnection[Any]) -> bool:
            if not rows:
                return False
            return bool(_first(await (await conn.execute(_WRITTEN, (write_id,))).fetchone()))

        return await self._acall(f"rewrite thread {thread_id!r}", work, written, True)

    def list_threads(self) -> list[str]:
        def work(conn: psycopg.Connection[Any]) -> list[str]:
            return [thread for (thread,) in conn.execute(_LIST)]

        return self._call("list threads", work)

    async def alist_threads(self) -> list[str]:
        """The async twin of :meth:`list_threads`."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            return [thread for (thread,) in await (await conn.execute(_LIST)).fetchall()]

        return await self._acall("list threads", work)

    def delete(self, thread_id: str) -> bool:
        thread_id = check_thread_id(thread_id)

        def work(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_LOCK, (thread_id,))
                return cursor.execute(_DELETE, (thread_id,)).rowcount > 0

        return self._call(f"delete thread {thread_id!r}", work)

    async def adelete(self, thread_id: str) -> bool:
        """The async twin of :meth:`delete`."""
        thread_id = check_thread_id(thread_id)

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(_LOCK, (thread_id,))
                return (await cursor.execute(_DELETE, (thread_id,))).rowcount > 0

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

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            return [subject for (subject,) in conn.execute(_KNOWN, (fact,))]

        return self._call(f"read what is known of {fact!r}", work)

    def remember(self, fact: str, subject: str) -> None:
        """Store that ``fact`` holds for ``subject``; storing it again changes nothing."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_REMEMBER, (fact, subject))

        self._call(f"remember {fact!r} of {subject!r}", work)


def _first(row: tuple[Any, ...] | None) -> Any:
    return None if row is None else row[0]


def _numbered(
    thread_id: str, start: int, rows: Sequence[str], write_id: uuid.UUID
) -> list[tuple[str, int, str, uuid.UUID]]:
    return [(thread_id, start + offset, row, write_id) for offset, row in enumerate(rows)]


def _rewritten(
    thread_id: str,
    current: Sequence[tuple[str, uuid.UUID]],
    expected: Sequence[str],
    rows: Sequence[str],
    write_id: uuid.UUID,
) -> list[tuple[str, int, str, uuid.UUID]] | None:
    """The thread's rows after replacing ``expected`` with ``rows`` (``None`` if it no longer
    starts with ``expected``). The messages after them keep their own write ids, so a lost
    append of another run is still found as written."""
    if not starts_with([message for message, _ in current], expected):
        return None
    kept = [(row, write_id) for row in rows] + list(current[len(expected) :])
    return [(thread_id, seq, row, tag) for seq, (row, tag) in enumerate(kept)]

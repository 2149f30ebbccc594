"""Thread stores: a conversation's raw history, kept between runs under a thread id.

A store keeps the *raw* messages, hidden system reminders and metadata included, because the
raw history is what the next request is rebuilt from: dropping a reminder would change the
request prefix (breaking prompt caching) and make the next run repair the same turn again.
What a person sees is derived on the way out (:meth:`ThreadStore.recall`, which uses
:meth:`MessageList.to_ui`). :meth:`ThreadStore.append` adds messages after whatever the thread holds
now, in one atomic step; :meth:`ThreadStore.rewrite` replaces the messages a run loaded with the
ones it sent, when a processor repaired a stored message (see ``docs/threads.md``).

:class:`MemoryStore` lives in one process; :class:`SQLiteStore` is the embedded default, a
single SQLite file (standard library ``sqlite3``, WAL mode, versioned schema) that several
threads and processes may share. See ``docs/threads.md``.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from .contract import RawMessage
from .messages import MessageList

__all__ = [
    "AsyncThreadStore",
    "MemoryStore",
    "SQLiteStore",
    "StoreError",
    "ThreadStore",
    "check_thread_id",
]

_S = TypeVar("_S", bound="_ClosingStore")


class StoreError(Exception):
    """A thread store cannot be opened or used: not a store, a newer schema, closed, locked...

    The message names the file for :class:`SQLiteStore`. Bad arguments (a thread id that is
    not a non-empty str, a message that is not a valid JSON-serialisable message) raise
    ``TypeError`` / ``ValueError`` instead.
    """


@runtime_checkable
class ThreadStore(Protocol):
    """Where threads live: raw messages per thread id, appended atomically, read back exactly.

    Any object with these methods is a store. Subclass this protocol to inherit the default
    :meth:`recall`, which is derived from :meth:`load`.
    """

    def load(self, thread_id: str) -> MessageList:
        """The thread's raw messages in order, metadata exact; empty for an unknown thread."""
        ...

    def append(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        """Atomically add ``messages``, in order, after whatever the thread holds now.

        All or nothing: the messages are validated and serialised before anything is written,
        and they end up contiguous even when other threads or processes append concurrently.
        Appending nothing is a no-op; appending to an unknown thread creates it.
        """
        ...

    def rewrite(self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]) -> bool:
        """Atomically replace the thread's first ``len(old)`` messages with ``new``, if they
        are still exactly ``old``; messages after them (appended by other runs) stay after.

        Returns ``False``, writing nothing, when the thread no longer starts with ``old``.
        The Agent calls it when a processor repaired a message the thread had stored, so the
        repaired message replaces the original instead of being stored beside it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot rewrite a thread; implement rewrite() to keep "
            "processors' repairs of stored messages"
        )

    def list_threads(self) -> list[str]:
        """The ids of all threads holding at least one message, sorted."""
        ...

    def delete(self, thread_id: str) -> bool:
        """Remove the thread and all its messages; ``False`` if there was no such thread."""
        ...

    def close(self) -> None:
        """Release the store's resources; later calls raise :class:`StoreError`. Idempotent."""
        ...

    def recall(self, thread_id: str, *, include_system_reminders: bool = False) -> list[RawMessage]:
        """The thread as a person sees it (:meth:`MessageList.to_ui`), or raw on request."""
        messages = self.load(thread_id)
        return list(messages) if include_system_reminders else messages.to_ui()


@runtime_checkable
class AsyncThreadStore(Protocol):
    """A store whose reads and writes can be awaited, like ``prefill_guard.postgres.PostgresStore``.

    ``Agent.agenerate`` and ``Agent.astream`` await these on a thread of such a store; on any
    other store they run the synchronous calls in a worker thread, off the event loop.
    """

    async def aload(self, thread_id: str) -> MessageList:
        """The async twin of :meth:`ThreadStore.load`."""
        ...

    async def aappend(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        """The async twin of :meth:`ThreadStore.append`."""
        ...

    async def arewrite(
        self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]
    ) -> bool:
        """The async twin of :meth:`ThreadStore.rewrite`."""
        ...


class _ClosingStore(ThreadStore):
    """``with store:`` closes the store on the way out."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- shared: thread ids and the JSON form of a message -----------------------------------


def check_thread_id(thread_id: object) -> str:
    """``thread_id`` if every store accepts it, else a ``TypeError``/``ValueError`` saying why:
    a non-blank str of valid Unicode text without NUL characters."""
    if not isinstance(thread_id, str):
        raise TypeError(f"thread_id must be a str, got {type(thread_id).__name__}")
    if not thread_id.strip():
        raise ValueError(f"thread_id must be a non-blank str, got {thread_id!r}")
    if "\x00" in thread_id:
        raise ValueError(f"thread_id must not contain NUL characters, got {thread_id!r}")
    try:
        thread_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"thread_id must be valid Unicode text, got {thread_id!r}") from None
    return thread_id


def encode_messages(messages: Iterable[RawMessage]) -> list[str]:
    """Validate the batch (as :class:`MessageList` does) and give one JSON text per message.

    The JSON is strict (no NaN or Infinity) and ASCII-only, so every Python str, lone
    surrogates included, comes back exactly and any JSON tool can read the stored rows.
    """
    if messages is None or isinstance(messages, (str, bytes)):
        raise TypeError(
            f"messages must be an iterable of message dicts, got {type(messages).__name__}"
        )
    rows = []
    for index, message in enumerate(MessageList(messages)):
        try:
            rows.append(json.dumps(message, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"messages[{index}] is not JSON-serialisable: {exc}") from None
    return rows


def decode_rows(rows: Iterable[str], where: str) -> MessageList:
    try:
        return MessageList(json.loads(row) for row in rows)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{where} holds a damaged message: {exc}") from exc
    except RecursionError:
        raise StoreError(f"{where} holds a damaged message: nested too deeply to read") from None


def starts_with(rows: Sequence[str], expected: Sequence[str]) -> bool:
    """Whether the stored ``rows`` begin with the messages ``expected`` (compared as JSON
    values, so rows written by another encoder's spelling still match)."""
    if len(rows) < len(expected):
        return False
    head = rows[: len(expected)]
    return all(
        json.loads(row) == json.loads(want) for row, want in zip(head, expected, strict=True)
    )


# -- MemoryStore ---------------------------------------------------------------------------


class MemoryStore(_ClosingStore):
    """Threads in this process's memory, lost when it ends: for tests and short-lived agents.

    Messages are kept in the same JSON form :class:`SQLiteStore` writes, so both stores
    accept, refuse and return exactly the same things. Safe to share between threads.
    """

    def __init__(self) -> None:
        self._threads: dict[str, list[str]] | None = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def _live(self) -> dict[str, list[str]]:
        if self._threads is None:
            raise StoreError("this MemoryStore is closed")
        return self._threads

    def load(self, thread_id: str) -> MessageList:
        thread_id = check_thread_id(thread_id)
        with self._lock:
            rows = list(self._live().get(thread_id, ()))
        return decode_rows(rows, f"thread {thread_id!r}")

    def append(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        with self._lock:
            threads = self._live()
            if rows:
                threads.setdefault(thread_id, []).extend(rows)

    def rewrite(self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]) -> bool:
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        with self._lock:
            threads = self._live()
            current = threads.get(thread_id, [])
            if not starts_with(current, expected):
                return False
            kept = [*rows, *current[len(expected) :]]
            if kept:
                threads[thread_id] = kept
            else:
                threads.pop(thread_id, None)
            return True

    def list_threads(self) -> list[str]:
        with self._lock:
            return sorted(self._live())

    def delete(self, thread_id: str) -> bool:
        thread_id = check_thread_id(thread_id)
        with self._lock:
            return self._live().pop(thread_id, None) is not None

    def close(self) -> None:
        with self._lock:
            self._threads = None


# -- SQLiteStore ---------------------------------------------------------------------------

APPLICATION_ID = 0x50475453  # "PGTS": PRAGMA application_id of every prefill_guard thread store


def _migration_1(db: sqlite3.Connection) -> None:
    """Schema 1: one row per message, numbered 0, 1, 2... within its thread."""
    db.execute(
        """
        CREATE TABLE thread_messages (
            thread_id TEXT NOT NULL CHECK (length(thread_id) > 0),
            seq INTEGER NOT NULL CHECK (seq >= 0),
            message TEXT NOT NULL,
            PRIMARY KEY (thread_id, seq)
        ) WITHOUT ROWID
        """
    )


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1,)
"""Migration ``n`` (1-based) upgrades schema ``n - 1`` to ``n``; the schema version is the
length of this tuple. Each runs inside the opening transaction: it must use ``db.execute``
only (never ``executescript``, which commits) and leave ``PRAGMA user_version`` alone."""


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock first) ... ``COMMIT``; roll back on any error."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SQLiteStore(_ClosingStore):
    """Threads in one SQLite file (created if missing): the embedded default store.

    The file is checked when the store opens: a file that is not a prefill_guard thread store
    (text, random bytes, another application's database) or that has a newer schema than this
    version knows raises :class:`StoreError` and is left untouched. An older schema is
    migrated in one transaction. The database runs in WAL mode, so readers never block the
    writer; writers from several processes queue for up to ``timeout`` seconds.

    One store object may be shared by threads: it holds one connection, used under a lock.
    It must not cross ``fork()``: open a new store in each process. Close it with
    :meth:`close` or ``with SQLiteStore(path) as store:``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._db: sqlite3.Connection | None = _open(self.path, float(timeout))

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @contextmanager
    def _connection(self, doing: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite errors become :class:`StoreError`."""
        with self._lock:
            if self._db is None:
                raise StoreError(f"{self.path}: the store is closed")
            if os.getpid() != self._pid:
                raise StoreError(
                    f"{self.path}: this SQLiteStore was opened in process {self._pid}; "
                    f"open a new one in process {os.getpid()} (a connection must not cross fork)"
                )
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: could not {doing}: {exc}") from exc

    def load(self, thread_id: str) -> MessageList:
        thread_id = check_thread_id(thread_id)
        with self._connection(f"load thread {thread_id!r}") as db:
            rows = [
                row
                for (row,) in db.execute(
                    "SELECT message FROM thread_messages WHERE thread_id = ? ORDER BY seq",
                    (thread_id,),
                )
            ]
        return decode_rows(rows, f"{self.path}: thread {thread_id!r}")

    def append(self, thread_id: str, messages: Iterable[RawMessage]) -> None:
        thread_id = check_thread_id(thread_id)
        rows = encode_messages(messages)
        if not rows:
            return
        with self._connection(f"append to thread {thread_id!r}") as db, _transaction(db):
            (start,) = db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM thread_messages WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
            db.executemany(
                "INSERT INTO thread_messages (thread_id, seq, message) VALUES (?, ?, ?)",
                [(thread_id, start + offset, row) for offset, row in enumerate(rows)],
            )

    def rewrite(self, thread_id: str, old: Sequence[RawMessage], new: Iterable[RawMessage]) -> bool:
        thread_id = check_thread_id(thread_id)
        expected, rows = encode_messages(old), encode_messages(new)
        with self._connection(f"rewrite thread {thread_id!r}") as db, _transaction(db):
            current = [
                row
                for (row,) in db.execute(
                    "SELECT message FROM thread_messages WHERE thread_id = ? ORDER BY seq",
                    (thread_id,),
                )
            ]
            if not starts_with(current, expected):
                return False
            db.execute("DELETE FROM thread_messages WHERE thread_id = ?", (thread_id,))
            db.executemany(
                "INSERT INTO thread_messages (thread_id, seq, message) VALUES (?, ?, ?)",
                [
                    (thread_id, seq, row)
                    for seq, row in enumerate([*rows, *current[len(expected) :]])
                ],
            )
            return True

    def list_threads(self) -> list[str]:
        with self._connection("list threads") as db:
            query = "SELECT DISTINCT thread_id FROM thread_messages ORDER BY thread_id"
            return [thread_id for (thread_id,) in db.execute(query)]

    def delete(self, thread_id: str) -> bool:
        thread_id = check_thread_id(thread_id)
        with self._connection(f"delete thread {thread_id!r}") as db:
            cursor = db.execute("DELETE FROM thread_messages WHERE thread_id = ?", (thread_id,))
            return cursor.rowcount > 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _open(path: Path, timeout: float) -> sqlite3.Connection:
    """Connect, recognise the file, switch to WAL and migrate; raise :class:`StoreError`."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a prefill_guard thread store")
    if not path.parent.is_dir():
        raise StoreError(f"cannot create {path}: directory {path.parent} does not exist")
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        _prepare(db, path, timeout)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path, timeout: float) -> None:
    doing = "read"
    try:
        # Recognise the file before changing anything (WAL mode is written into its header),
        # reading its header and tables in one snapshot: another process may be creating it.
        with _transaction(db, "BEGIN"):
            version = _schema_version(db, path)
        doing = "switch to WAL mode"
        _switch_to_wal(db, time.monotonic() + timeout)
        if version == len(_MIGRATIONS):
            return
        with _transaction(db):
            version = _schema_version(db, path)  # again: another process may have migrated
            for target in range(version + 1, len(_MIGRATIONS) + 1):
                doing = f"migrate to thread store schema version {target}"
                _MIGRATIONS[target - 1](db)
                db.execute(f"PRAGMA user_version = {target}")
            if version == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: could not {doing}: {exc}") from exc


def _switch_to_wal(db: sqlite3.Connection, deadline: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried until ``deadline`` while the file is locked.

    A no-op once the file is in WAL mode. Converting a new file needs an exclusive lock, and
    SQLite answers "database is locked" at once, without its busy handler, when another
    process is creating the same file: hence the loop.
    """
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    """This store's schema version, 0 for a new (empty) file; refuse anything else."""
    try:
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master ORDER BY name")]
    except sqlite3.OperationalError:
        raise  # locked, unreadable...: reported by the caller
    except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
        raise StoreError(f"{path} is not a prefill_guard thread store: {exc}") from exc
    known = len(_MIGRATIONS)
    if application_id == APPLICATION_ID:
        if version > known:
            raise StoreError(
                f"{path} has thread store schema version {version}, but this prefill_guard "
                f"knows versions up to {known}: it was written by a newer prefill_guard; "
                "upgrade prefill_guard to use it"
            )
        return int(version)
    if application_id == 0 and version == 0 and not tables:
        return 0
    listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "") if tables else "none"
    raise StoreError(
        f"{path} is not a prefill_guard thread store: it is an SQLite database of another "
        f"application (application_id {application_id:#x}, user_version {version}, "
        f"tables: {listed}); it was left untouched"
    )

"""PostgresStore beyond the shared store contract: errors naming the server, the schema and its
migrations, lost connections (retried, never written twice), the async twins and their event
loop, and the Agent's async drivers awaiting it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prefill_guard import Agent, MessageList, StoreError
from prefill_guard.testing import DEFAULT_REPLY_TEXT, AnthropicEmulator

from .conftest import postgres_schema, postgres_url, require

psycopg = require("psycopg")
postgres = require("prefill_guard.postgres")
PostgresStore = postgres.PostgresStore

USER = {"role": "user", "content": "hello"}
REPLY = {"role": "assistant", "content": "hi", "metadata": {"n": 1}}


@pytest.fixture
def conninfo() -> Iterator[str]:
    """A connection string to a schema of this test's own."""
    with postgres_schema() as where:
        yield where


def test_a_wrong_password_is_a_store_error_naming_server_and_database(conninfo: str) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    wrong = psycopg.conninfo.make_conninfo(conninfo, password="not-the-password")
    with pytest.raises(StoreError) as caught:
        PostgresStore(wrong)
    message = str(caught.value)
    assert f"PostgreSQL at {parts['host']}:{parts['port']}, database {parts['dbname']!r}" in message
    assert "password authentication failed" in message


def test_a_server_that_refuses_connections_is_a_store_error_naming_it() -> None:
    port = _free_port()
    with pytest.raises(StoreError, match=rf"PostgreSQL at 127\.0\.0\.1:{port}, database 'x'"):
        PostgresStore(f"postgresql://u:p@127.0.0.1:{port}/x", timeout=2)


def test_bad_arguments_are_refused_before_connecting() -> None:
    with pytest.raises(TypeError, match="conninfo must be a str"):
        PostgresStore(b"postgresql://")
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        PostgresStore("postgresql://[::1")
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        PostgresStore("postgresql://h/db", max_connections=0)
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        PostgresStore("postgresql://h/db", timeout=float("nan"))


def test_a_new_database_gets_schema_1(conninfo: str) -> None:
    with PostgresStore(conninfo), psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT version FROM prefill_guard_schema").fetchall() == [(1,)]
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
    assert tables == [
        ("prefill_guard_knowledge",),
        ("prefill_guard_schema",),
        ("prefill_guard_thread_messages",),
        ("prefill_guard_writes",),
    ]


def test_a_newer_schema_is_refused_and_left_untouched(conninfo: str) -> None:
    with PostgresStore(conninfo) as store:
        store.append("t1", [USER])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE prefill_guard_schema SET version = 7")
    with pytest.raises(StoreError, match="schema version 7, but this prefill_guard knows"):
        PostgresStore(conninfo)
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT version FROM prefill_guard_schema").fetchall() == [(7,)]
        assert conn.execute("SELECT count(*) FROM prefill_guard_thread_messages").fetchone() == (1,)


def test_stores_opening_a_new_database_at_once_migrate_it_once(conninfo: str) -> None:
    """Eight stores open the same new database at the same moment: one migrates, all open."""
    start = threading.Barrier(8)
    opened: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            start.wait()
            opened.append(PostgresStore(conninfo, max_connections=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=open_one) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for store in opened:
        store.close()
    assert errors == []
    assert len(opened) == 8
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT version FROM prefill_guard_schema").fetchall() == [(1,)]


def test_a_failed_migration_changes_nothing(conninfo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails rolls the whole opening back: no table is left behind."""
    broken = (*postgres._MIGRATIONS[0][:1], "CREATE TABLE no_such_syntax (")
    monkeypatch.setattr(postgres, "_MIGRATIONS", (broken,))
    with pytest.raises(StoreError, match="could not migrate to thread store schema version 1"):
        PostgresStore(conninfo)
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    assert tables == []


def test_history_is_shared_by_two_stores_on_one_database(conninfo: str) -> None:
    with PostgresStore(conninfo) as first, PostgresStore(conninfo) as second:
        first.append("t1", [USER])
        second.append("t1", [REPLY])
        assert list(first.load("t1")) == [USER, REPLY]


def test_a_store_refuses_to_be_used_after_fork(
    conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresStore(conninfo) as store:
        parent = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: parent + 1)
        with pytest.raises(StoreError, match="must not cross fork"):
            store.load("t1")
        monkeypatch.undo()
        assert store.load("t1") == MessageList()


# -- lost connections ------------------------------------------------------------------------


class FlakyProxy:
    """A TCP proxy on loopback in front of the test server that can lose a connection for real:
    right after forwarding the client's ``COMMIT`` (the server commits, the client never hears
    so), or by refusing everything."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.drop_after_commit = 0
        """How many connections to cut right after they send COMMIT."""
        self.commit_delay = 0.0
        """With a drop: cut the client first, and pass its COMMIT on this much later."""
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
                if self._closed:  # accepted just before close(): cut at once
                    _cut(client)
                    _cut(server)
                    continue
            muted = threading.Event()  # set: the server's answers are no longer forwarded
            for source, sink, from_client in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, from_client, muted), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, from_client: bool, muted: threading.Event
    ) -> None:
        try:
            while data := source.recv(65536):
                if not from_client:
                    if not muted.is_set():
                        sink.sendall(data)
                    continue
                if b"COMMIT" in data and self._take_drop():
                    muted.set()
                    if self.commit_delay:  # the client hears nothing; the COMMIT arrives late
                        _cut(source)
                        time.sleep(self.commit_delay)
                    sink.sendall(data)
                    time.sleep(0.2)  # the server commits; its answer is never forwarded
                    break
                sink.sendall(data)
        except OSError:
            pass
        for each in (source, sink):
            _cut(each)

    def _take_drop(self) -> bool:
        with self._lock:
            if self.drop_after_commit <= 0:
                return False
            self.drop_after_commit -= 1
            self.dropped += 1
            return True

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            self._closed = True
            for each in self._sockets:
                _cut(each)


def _cut(connection: socket.socket) -> None:
    """Shut the socket down both ways (waking a thread blocked reading it), then close it."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


@pytest.fixture
def proxy(conninfo: str) -> Iterator[tuple[FlakyProxy, str]]:
    """A proxy in front of the server, and a connection string through it."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    flaky = FlakyProxy((str(parts["host"]), int(parts["port"])))
    try:
        yield flaky, psycopg.conninfo.make_conninfo(conninfo, host="127.0.0.1", port=flaky.port)
    finally:
        flaky.close()


def test_an_append_whose_commit_answer_was_lost_is_not_written_twice(
    proxy: tuple[FlakyProxy, str],
) -> None:
    """The connection drops after COMMIT reached the server: the store cannot know whether the
    append committed, looks for its write id on a new connection, finds it, and is done."""
    flaky, through = proxy
    with PostgresStore(through) as store:
        flaky.drop_after_commit = 1
        store.append("t1", [USER, REPLY])
        assert flaky.dropped == 1
        assert list(store.load("t1")) == [USER, REPLY]


async def test_an_async_append_whose_commit_answer_was_lost_is_not_written_twice(
    proxy: tuple[FlakyProxy, str],
) -> None:
    flaky, through = proxy
    async with PostgresStore(through) as store:
        await store.aappend("t1", [USER])
        flaky.drop_after_commit = 1
        await store.aappend("t1", [REPLY])
        assert flaky.dropped == 1
        assert list(await store.aload("t1")) == [USER, REPLY]


def test_a_rewrite_whose_commit_answer_was_lost_reports_success_once(
    proxy: tuple[FlakyProxy, str],
) -> None:
    flaky, through = proxy
    with PostgresStore(through) as store:
        store.append("t1", [USER, REPLY])
        flaky.drop_after_commit = 1
        repaired = {"role": "user", "content": "hello, repaired"}
        assert store.rewrite("t1", [USER], [repaired]) is True
        assert flaky.dropped == 1
        assert list(store.load("t1")) == [repaired, REPLY]


def test_an_append_cut_off_before_commit_is_made_again_once(conninfo: str) -> None:
    """The append's connection is killed while it waits for the thread's lock (before it
    committed anything): the store appends again on a new connection, and the thread holds
    the messages once."""
    with PostgresStore(conninfo) as store, psycopg.connect(conninfo) as holder:
        holder.execute(postgres._LOCK, ("t1",))  # another writer holds the thread's lock
        appending = threading.Thread(target=store.append, args=("t1", [USER, REPLY]))
        appending.start()
        with psycopg.connect(conninfo, autocommit=True) as admin:
            waiting = _wait_for_lock_waiter(admin)
            admin.execute("SELECT pg_terminate_backend(%s)", (waiting,))
        holder.rollback()  # the other writer lets go; the new attempt goes through
        appending.join(10)
        assert not appending.is_alive()
        assert list(store.load("t1")) == [USER, REPLY]


def test_a_server_gone_for_good_is_a_store_error_naming_the_thread(
    proxy: tuple[FlakyProxy, str],
) -> None:
    flaky, through = proxy
    with PostgresStore(through, timeout=1) as store:
        assert store.load("t1") == MessageList()  # the pool's connection is through the proxy
        flaky.close()  # every connection cut, and no new one accepted
        with pytest.raises(StoreError, match=r"PostgreSQL at 127\.0\.0\.1:\d+.*thread 't1'"):
            store.append("t1", [USER])


def _wait_for_lock_waiter(admin: Any) -> int:
    """The pid of the backend waiting for an advisory lock (within 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' LIMIT 1"
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.01)
    raise AssertionError("no backend waited for the thread's lock")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the async twins and their event loop ------------------------------------------------------


async def test_the_async_twins_read_and_write_like_the_sync_methods(conninfo: str) -> None:
    async with PostgresStore(conninfo) as store:
        await store.aappend("t1", [USER])
        store.append("t1", [REPLY])
        assert list(await store.aload("t1")) == [USER, REPLY]
        assert await store.arecall("t1") == [USER, REPLY]
        assert await store.alist_threads() == ["t1"]
        assert await store.arewrite("t1", [USER, REPLY], [REPLY]) is True
        assert await store.arewrite("t1", [USER], []) is False
        assert await store.adelete("t1") is True
        assert await store.adelete("t1") is False
    with pytest.raises(StoreError, match="closed"):
        await store.aload("t1")


def test_async_calls_belong_to_one_event_loop(conninfo: str) -> None:
    """The async pool opens in the first event loop that uses it: another loop is told to open
    its own store, close() from inside the running loop is told to use aclose(), and close()
    from outside it closes both pools."""
    store = PostgresStore(conninfo)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(store.aappend("t1", [USER]))
        with pytest.raises(StoreError, match="belong to another event loop"):
            asyncio.run(store.aload("t1"))

        async def close_inside() -> None:
            with pytest.raises(StoreError, match=r"await store\.aclose\(\)"):
                store.close()

        loop.run_until_complete(close_inside())
        store.close()  # the loop is not running: its pool is closed in it
        with pytest.raises(StoreError, match="closed"):
            loop.run_until_complete(store.aload("t1"))
    finally:
        loop.close()


class SyncCallsRefused(PostgresStore):  # type: ignore[misc,valid-type]
    """A PostgresStore whose blocking calls fail: only the async twins can be used."""

    def load(self, thread_id: str) -> MessageList:
        raise AssertionError("the sync load() was called")

    def append(self, thread_id: str, messages: Any) -> None:
        raise AssertionError("the sync append() was called")

    def rewrite(self, thread_id: str, old: Any, new: Any) -> bool:
        raise AssertionError("the sync rewrite() was called")


@pytest.mark.parametrize("driver", ["agenerate", "astream"])
async def test_the_async_drivers_await_the_store(
    anthropic_emulator: AnthropicEmulator, conninfo: str, driver: str
) -> None:
    """agenerate and astream read and save a PostgresStore thread with its async twins, so
    the event loop never waits on the database."""
    async with SyncCallsRefused(conninfo) as store, anthropic_emulator.async_client() as client:
        agent = Agent("claude-opus-4-6", client=client, store=store)
        for text in ("one", None):  # new input, then a reply again (the thread ends on it)
            if driver == "agenerate":
                await agent.agenerate(text, thread_id="t1")
            else:
                async with agent.astream(text, thread_id="t1") as stream:
                    await stream.get_final_message()
        stored = await store.arecall("t1")
    reply = {"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY_TEXT}]}
    assert stored == [{"role": "user", "content": "one"}, reply, reply]


def test_repr_names_server_and_database_but_never_the_password(conninfo: str) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(postgres_url())
    with PostgresStore(conninfo) as store:
        assert store.server == f"{parts['host']}:{parts['port']}"
        assert repr(store) == f"PostgresStore(server={store.server!r}, database={store.database!r})"
        assert str(parts.get("password")) not in repr(store)


def test_a_delayed_commit_of_a_lost_append_is_waited_for_not_repeated(
    proxy: tuple[FlakyProxy, str],
) -> None:
    """The client is cut off and its COMMIT reaches the server half a second later: the attempt
    made again waits for that session's lock, then finds its write and writes nothing."""
    flaky, through = proxy
    with PostgresStore(through) as store:
        store.append("t1", [USER])
        flaky.drop_after_commit, flaky.commit_delay = 1, 0.5
        store.append("t1", [REPLY])
        assert flaky.dropped == 1
        assert list(store.load("t1")) == [USER, REPLY]


@pytest.mark.parametrize("operation", ["rewrite to nothing", "delete"])
def test_a_write_leaving_no_message_whose_answer_was_lost_reports_it_done(
    proxy: tuple[FlakyProxy, str], operation: str
) -> None:
    """Writes are recorded apart from the messages, so a rewrite to nothing or a delete whose
    answer was lost is still found as done (True), and nothing else is removed."""
    flaky, through = proxy
    with PostgresStore(through) as store:
        store.append("t1", [USER, USER, REPLY])
        flaky.drop_after_commit = 1
        if operation == "delete":
            assert store.delete("t1") is True
            assert store.list_threads() == []
        else:
            assert store.rewrite("t1", [USER], []) is True
            assert list(store.load("t1")) == [USER, REPLY]
        assert flaky.dropped == 1


def test_a_write_made_again_after_another_run_rewrote_the_thread_is_not_repeated(
    proxy: tuple[FlakyProxy, str], conninfo: str
) -> None:
    """Between the lost answer and the attempt made again, another run rewrites the messages
    just appended: the write is found in the store's record of writes, not in the rows."""
    flaky, through = proxy
    with PostgresStore(through) as store, PostgresStore(conninfo) as other:
        store.append("t1", [USER])
        flaky.drop_after_commit, flaky.commit_delay = 1, 0.3
        appending = threading.Thread(target=store.append, args=("t1", [REPLY]))
        appending.start()
        deadline = time.monotonic() + 5
        while len(other.load("t1")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        edited = {**REPLY, "content": "edited"}
        assert other.rewrite("t1", [USER, REPLY], [USER, edited]) is True
        appending.join(10)
        assert list(store.load("t1")) == [USER, edited]


def test_stale_connections_are_replaced_after_the_server_drops_them_all(conninfo: str) -> None:
    """After every connection of the pool is terminated (a server restart), the next call
    succeeds on a new one instead of trying the other stale ones."""
    named = psycopg.conninfo.make_conninfo(conninfo, application_name="pg-stale-test")
    with PostgresStore(named, max_connections=4) as store:
        threads = [threading.Thread(target=store.load, args=("t1",)) for _ in range(8)]
        for each in threads:
            each.start()
        for each in threads:
            each.join()
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pg-stale-test'"
            )
        store.append("t1", [USER])
        assert list(store.load("t1")) == [USER]


def test_a_thread_locked_longer_than_the_timeout_is_a_store_error(conninfo: str) -> None:
    """Another session holds the thread's lock: a write waits ``timeout`` seconds, then fails
    naming the thread, having written nothing."""
    with PostgresStore(conninfo, timeout=1) as store, psycopg.connect(conninfo) as holder:
        holder.execute(postgres._LOCK, ("t1",))
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"could not append to thread 't1'.*lock timeout"):
            store.append("t1", [USER])
        assert 0.9 < time.monotonic() - started < 5
        holder.rollback()
        assert store.load("t1") == MessageList()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("text", "'abc'", "holds 'abc', not a thread store schema version"),
        ("integer", "-3", "holds -3, not a thread store schema version"),
    ],
)
def test_a_schema_table_that_is_not_ours_is_refused_untouched(
    conninfo: str, column: str, value: str, message: str
) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE prefill_guard_schema (version {column})")
        conn.execute(f"INSERT INTO prefill_guard_schema VALUES ({value})")
    with pytest.raises(StoreError, match=message):
        PostgresStore(conninfo)
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    assert tables == [("prefill_guard_schema",)]


@pytest.mark.parametrize(
    "conninfo_text",
    ["postgresql://u:pa%ss@127.0.0.1:1/db", "postgresql://u:pa@ss@127.0.0.1:1/db"],
)
def test_a_password_that_is_not_percent_encoded_is_refused_without_repeating_it(
    conninfo_text: str,
) -> None:
    with pytest.raises(ValueError, match="percent-encode") as caught:
        PostgresStore(conninfo_text)
    assert "ss" not in str(caught.value).replace("password", "")


def test_knowledge_names_are_checked(conninfo: str) -> None:
    with PostgresStore(conninfo) as store:
        with pytest.raises(TypeError, match="subject must be a non-empty str"):
            store.remember("rejects-prefill", 123)
        with pytest.raises(ValueError, match="valid Unicode"):
            store.remember("rejects-prefill", "\ud800")
        assert store.known("rejects-prefill") == []

"""Thread stores: exact raw round trips, the UI view, ids, files that are not stores,
migrations, WAL, and concurrent appends from threads and real processes."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefill_guard import MessageList, SQLiteStore, StoreError, ThreadStore
from prefill_guard import stores as stores_module
from prefill_guard.messages import system_reminder

from .conftest import STORE_KINDS, open_store, require, store_class, store_location

REMINDER = system_reminder("continue", "anthropic-prefill-processor-retry")
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Suggest a name for a grey cat.", "id": "m1"},
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "How about Ash? ☁️"}],
        "metadata": {"model": "claude-opus-4-6", "usage": [3, 2.5, None, True], "n": 1.0},
    },
    REMINDER,
    {"role": "assistant", "content": "Or Smokey.", "metadata": {}},
]
REPO = Path(__file__).resolve().parents[1]


def exact(value: Any) -> str:
    """A comparison key that tells 1 from 1.0 from True and keeps key order."""
    return json.dumps(value)


@pytest.fixture
def store(any_store: ThreadStore) -> ThreadStore:
    """Each store kind, new and empty, closed afterwards."""
    return any_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


def raw_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def pragma(path: Path, name: str) -> Any:
    db = raw_connection(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def assert_batches_intact(messages: MessageList, writers: int, batches: int) -> None:
    """Every batch of two is present once, contiguous, and each writer's batches are in order."""
    keys = [
        (m["metadata"]["writer"], m["metadata"]["batch"], m["metadata"]["part"]) for m in messages
    ]
    assert len(keys) == writers * batches * 2
    assert len(set(keys)) == len(keys), "duplicates"
    for first, second in zip(keys[0::2], keys[1::2], strict=True):
        assert first[:2] == second[:2], f"batch split: {first} then {second}"
        assert (first[2], second[2]) == (0, 1)
    for writer in range(writers):
        assert [k[1] for k in keys[0::2] if k[0] == writer] == list(range(batches))


def batch(writer: int, number: int) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": f"{writer}:{number}:{part}",
            "metadata": {"writer": writer, "batch": number, "part": part},
        }
        for part in range(2)
    ]


# -- the protocol, on both stores -----------------------------------------------------------


def test_every_store_satisfies_the_thread_store_protocol(store: ThreadStore) -> None:
    """MemoryStore, SQLiteStore and PostgresStore are ThreadStores (checked at runtime too)."""
    assert isinstance(store, ThreadStore)


def test_a_custom_store_subclassing_the_protocol_inherits_recall() -> None:
    """recall() is derived from load(): a store needs only load, append, rewrite, list,
    delete and close."""

    class ListStore(ThreadStore):
        def __init__(self) -> None:
            self.messages = MessageList()

        def load(self, thread_id: str) -> MessageList:
            return self.messages.copy()

        def append(self, thread_id: str, messages: Iterable[dict[str, Any]]) -> None:
            self.messages.extend(messages)

        def rewrite(
            self, thread_id: str, old: Sequence[dict[str, Any]], new: Iterable[dict[str, Any]]
        ) -> bool:
            if self.messages[: len(old)] != list(old):
                return False
            self.messages[: len(old)] = list(new)
            return True

        def list_threads(self) -> list[str]:
            return ["only"]

        def delete(self, thread_id: str) -> bool:
            return False

        def close(self) -> None:
            pass

    custom = ListStore()
    custom.append("only", HISTORY)
    assert custom.recall("only") == MessageList(HISTORY).to_ui()
    assert custom.recall("only", include_system_reminders=True) == HISTORY


def test_round_trip_keeps_reminders_and_metadata_exactly(store: ThreadStore) -> None:
    """load() gives back the raw messages, reminders, extra keys and metadata, exactly."""
    store.append("t1", HISTORY)
    loaded = store.load("t1")
    assert isinstance(loaded, MessageList)
    assert exact(list(loaded)) == exact(HISTORY)
    assert loaded == MessageList.from_json(MessageList(HISTORY).to_json())


def test_appends_go_after_what_the_thread_holds(store: ThreadStore) -> None:
    """Each append adds its messages in order after the thread's existing ones."""
    store.append("t1", HISTORY[:1])
    store.append("t1", MessageList(HISTORY[1:3]))
    store.append("t1", iter(HISTORY[3:]))
    assert exact(list(store.load("t1"))) == exact(HISTORY)


def test_recall_hides_system_reminders_by_default(store: ThreadStore) -> None:
    """recall() is the UI view: MessageList.to_ui(), reminders dropped, metadata kept."""
    store.append("t1", HISTORY)
    assert exact(store.recall("t1")) == exact([HISTORY[0], HISTORY[1], HISTORY[3]])


def test_recall_shows_system_reminders_on_request(store: ThreadStore) -> None:
    """recall(include_system_reminders=True) is the raw history."""
    store.append("t1", HISTORY)
    assert exact(store.recall("t1", include_system_reminders=True)) == exact(HISTORY)


def test_unknown_thread_is_empty(store: ThreadStore) -> None:
    """An unknown thread loads as an empty MessageList and recalls as []; it is not created."""
    assert store.load("nobody") == MessageList()
    assert store.recall("nobody") == []
    assert store.list_threads() == []


def test_appending_nothing_creates_no_thread(store: ThreadStore) -> None:
    """append(thread, []) is a no-op."""
    store.append("t1", [])
    assert store.list_threads() == []


def test_rewrite_replaces_the_messages_a_run_loaded(store: ThreadStore) -> None:
    """rewrite(old, new) puts new in place of old; what was appended after old stays after."""
    store.append("t1", HISTORY[:2])
    loaded = list(store.load("t1"))
    store.append("t1", [HISTORY[3]])  # another run's message, after the load
    repaired = [{**loaded[0], "content": "repaired"}, loaded[1], REMINDER]
    assert store.rewrite("t1", loaded, repaired) is True
    assert exact(list(store.load("t1"))) == exact([*repaired, HISTORY[3]])


def test_rewrite_writes_nothing_when_the_thread_no_longer_starts_with_old(
    store: ThreadStore,
) -> None:
    """A thread changed (or deleted) since old was loaded is left exactly as it is."""
    store.append("t1", HISTORY[:2])
    stale = [{"role": "user", "content": "not what is stored"}, HISTORY[1]]
    assert store.rewrite("t1", stale, [REMINDER]) is False
    assert store.rewrite("gone", HISTORY[:1], [REMINDER]) is False
    assert exact(list(store.load("t1"))) == exact(HISTORY[:2])
    assert store.list_threads() == ["t1"]


def test_rewrite_to_nothing_leaves_no_thread(store: ThreadStore) -> None:
    """Rewriting every message away deletes the thread, as if it had never held any."""
    store.append("t1", HISTORY[:1])
    assert store.rewrite("t1", HISTORY[:1], []) is True
    assert store.list_threads() == []


def test_append_of_none_or_a_string_is_a_type_error(store: ThreadStore) -> None:
    """append(t, None) is a mistake, not a silent no-op."""
    for bad in (None, "hello"):
        with pytest.raises(TypeError, match="iterable of message dicts"):
            store.append("t1", bad)  # type: ignore[arg-type]
    assert store.list_threads() == []


def test_list_threads_gives_sorted_ids_of_non_empty_threads(store: ThreadStore) -> None:
    """list_threads() lists every thread holding messages, sorted by id."""
    for thread_id in ("b", "a", "ä", "a b", "B"):
        store.append(thread_id, HISTORY[:1])
    assert store.list_threads() == ["B", "a", "a b", "b", "ä"]


def test_delete_removes_one_thread_and_reports_whether_it_existed(store: ThreadStore) -> None:
    """delete() drops that thread's messages only; True if it existed, False otherwise."""
    store.append("t1", HISTORY)
    store.append("t2", HISTORY[:1])
    assert store.delete("t1") is True
    assert store.delete("t1") is False
    assert store.load("t1") == MessageList()
    assert store.list_threads() == ["t2"]
    store.append("t1", HISTORY[3:])  # a deleted id starts afresh
    assert exact(list(store.load("t1"))) == exact(HISTORY[3:])


def test_stored_messages_are_copies(store: ThreadStore) -> None:
    """Changing the appended dicts or a loaded list never changes what is stored."""
    message: dict[str, Any] = {
        "role": "user",
        "content": [{"type": "text", "text": "hi"}],
        "metadata": {"k": 1},
    }
    store.append("t1", [message])
    message["metadata"]["k"] = 2
    loaded = store.load("t1")
    loaded[0]["content"][0]["text"] = "changed"
    loaded.add("user", "extra")
    assert exact(list(store.load("t1"))) == exact(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}], "metadata": {"k": 1}}]
    )


def test_any_python_text_round_trips(store: ThreadStore) -> None:
    """Non-ASCII text, NULs and even lone surrogates come back exactly (ASCII-escaped JSON)."""
    messages = [{"role": "user", "content": "ü 猫 \x00 \ud800 🐈", "metadata": {"ß\udfff": "\n"}}]
    store.append("t1", messages)
    assert exact(list(store.load("t1"))) == exact(messages)


@pytest.mark.parametrize(
    ("thread_id", "error"),
    [
        (None, TypeError),
        (1, TypeError),
        (b"t1", TypeError),
        ("", ValueError),
        ("   ", ValueError),
        ("a\x00b", ValueError),
        ("\ud800", ValueError),
    ],
)
def test_bad_thread_ids_are_refused_by_every_method(
    store: ThreadStore, thread_id: Any, error: type[Exception]
) -> None:
    """A thread id must be a non-empty str of valid text without NULs: TypeError/ValueError."""
    calls: list[Callable[[], object]] = [
        lambda: store.load(thread_id),
        lambda: store.recall(thread_id),
        lambda: store.append(thread_id, HISTORY),
        lambda: store.delete(thread_id),
    ]
    for call in calls:
        with pytest.raises(error, match="thread_id"):
            call()
    assert store.list_threads() == []


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        ({"role": "system", "content": "x"}, ValueError, r"messages\[1\]: unknown role"),
        ({"role": "user"}, ValueError, r"messages\[1\]: missing 'content'"),
        ({"role": "user", "content": "x", "metadata": {"o": object()}}, TypeError, r"\[1\]"),
        ({"role": "user", "content": "x", "metadata": {"f": float("nan")}}, ValueError, r"\[1\]"),
        ("not a message", TypeError, r"messages\[1\]"),
    ],
)
def test_a_bad_message_refuses_the_whole_batch(
    store: ThreadStore, bad: Any, error: type[Exception], text: str
) -> None:
    """Validation and JSON encoding happen before writing: nothing of the batch is stored."""
    store.append("t1", HISTORY[:1])
    with pytest.raises(error, match=text):
        store.append("t1", [HISTORY[1], bad])
    assert exact(list(store.load("t1"))) == exact(HISTORY[:1])


def test_a_single_dict_is_not_a_batch(store: ThreadStore) -> None:
    """append() wants an iterable of messages; one bare dict is a TypeError, not its keys."""
    with pytest.raises(TypeError, match="list of message dicts"):
        store.append("t1", HISTORY[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_closed_store_raises_store_error(kind: str, tmp_path: Path) -> None:
    """After close() (idempotent; also at the end of a with block) every call is a StoreError."""
    with open_store(kind, tmp_path) as opened:
        opened.append("t1", HISTORY)
        opened.close()
        opened.close()
        calls: list[Callable[[], object]] = [
            lambda: opened.load("t1"),
            lambda: opened.recall("t1"),
            lambda: opened.append("t1", HISTORY),
            opened.list_threads,
            lambda: opened.delete("t1"),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="closed"):
                call()


def test_threads_appending_through_one_store_lose_nothing(store: ThreadStore) -> None:
    """8 threads x 25 batches through one store object: all there, each batch contiguous."""
    writers, batches = 8, 25
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            start.wait()
            for number in range(batches):
                store.append("shared", batch(writer, number))
                store.load("shared")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert_batches_intact(store.load("shared"), writers, batches)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant"]),
        "content": st.text()
        | st.lists(st.builds(lambda t: {"type": "text", "text": t}, st.text()), max_size=2),
    },
    optional={"metadata": st.dictionaries(st.text(), _JSON, max_size=4)},
)


@pytest.fixture(scope="module", params=STORE_KINDS)
def long_lived_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadStore]:
    """One store of each kind for all hypothesis examples (each example uses a new thread)."""
    with open_store(request.param, tmp_path_factory.mktemp("property")) as opened:
        yield opened


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(_MESSAGE, max_size=4), min_size=1, max_size=3))
def test_append_then_load_is_the_identity_for_any_json_metadata(
    long_lived_store: ThreadStore, batches: list[list[dict[str, Any]]]
) -> None:
    """Whatever JSON metadata the messages carry, load() returns exactly what was appended."""
    store = long_lived_store
    thread_id = uuid.uuid4().hex
    for messages in batches:
        store.append(thread_id, messages)
    expected = [message for messages in batches for message in messages]
    assert exact(list(store.load(thread_id))) == exact(expected)


# -- SQLiteStore: the file ----------------------------------------------------------------


def test_history_survives_closing_and_reopening_the_file(db_path: Path) -> None:
    """A thread written by one SQLiteStore is read back exactly by a later one."""
    with SQLiteStore(db_path) as first:
        first.append("t1", HISTORY)
    with SQLiteStore(str(db_path)) as second:
        assert exact(list(second.load("t1"))) == exact(HISTORY)
        assert second.list_threads() == ["t1"]


def test_a_missing_file_is_created_as_a_schema_1_store_in_wal_mode(db_path: Path) -> None:
    """A new file gets our application_id, user_version 1, the messages table and WAL mode."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY)
        assert pragma(db_path, "journal_mode") == "wal"
    assert pragma(db_path, "application_id") == stores_module.APPLICATION_ID
    assert pragma(db_path, "user_version") == 1
    header = db_path.read_bytes()[:100]
    assert header[18:20] == b"\x02\x02"  # file format: WAL
    db = raw_connection(db_path)
    try:
        rows = db.execute("SELECT thread_id, seq, message FROM thread_messages ORDER BY seq")
        stored = [(thread_id, seq, json.loads(message)) for thread_id, seq, message in rows]
    finally:
        db.close()
    assert stored == [("t1", seq, message) for seq, message in enumerate(HISTORY)]


def test_a_missing_parent_directory_is_a_store_error(tmp_path: Path) -> None:
    """SQLiteStore creates the file, not its directory, and says which one is missing."""
    path = tmp_path / "no-such-dir" / "threads.db"
    with pytest.raises(StoreError, match=r"no-such-dir.*does not exist"):
        SQLiteStore(path)
    assert not path.parent.exists()


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    """A path naming a directory is a StoreError naming it."""
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(tmp_path)


def test_a_bad_timeout_is_refused(db_path: Path) -> None:
    """timeout must be a non-negative number of seconds."""
    for timeout in (-1, "5", True, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            SQLiteStore(db_path, timeout=timeout)  # type: ignore[arg-type]
    assert not db_path.exists()


def _text_file(path: Path) -> None:
    path.write_text("these are my notes, not a database\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(5).randbytes(16384))


def _other_apps_database(path: Path) -> None:
    db = raw_connection(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.close()


def _other_apps_empty_database(path: Path) -> None:
    db = raw_connection(path)
    db.execute("PRAGMA application_id = 1234")
    db.execute("PRAGMA user_version = 3")
    db.close()


def _newer_store(path: Path) -> None:
    with SQLiteStore(path) as store:
        store.append("t1", HISTORY)
    db = raw_connection(path)
    db.execute("PRAGMA user_version = 2")
    db.close()


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (_text_file, "is not a prefill_guard thread store: file is not a database"),
        (_random_bytes, "is not a prefill_guard thread store: file is not a database"),
        (_other_apps_database, r"another application .*tables: users\); it was left untouched"),
        (_other_apps_empty_database, r"another application \(application_id 0x4d2, user_v"),
        (_newer_store, "schema version 2, but this prefill_guard knows versions up to 1"),
    ],
    ids=["text", "random-bytes", "other-app", "other-app-empty", "newer-schema"],
)
def test_files_that_are_not_our_stores_are_refused_untouched(
    tmp_path: Path, make: Callable[[Path], None], text: str
) -> None:
    """A foreign, corrupt or newer file is a StoreError naming it; its bytes stay the same."""
    path = tmp_path / "threads.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=text) as caught:
        SQLiteStore(path)
    assert str(caught.value).startswith(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["threads.db"]


def test_a_damaged_store_is_a_store_error_naming_the_file(db_path: Path) -> None:
    """A store whose pages were cut off reports the damage as a StoreError, not sqlite3's."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY * 50)
    db_path.write_bytes(db_path.read_bytes()[:4096])
    with pytest.raises(StoreError, match=re.escape(str(db_path))), SQLiteStore(db_path) as damaged:
        damaged.load("t1")


def test_a_damaged_message_row_is_a_store_error(db_path: Path) -> None:
    """A row that is not a valid message (edited by hand, say) names the file and thread."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY)
        db = raw_connection(db_path)
        db.execute('UPDATE thread_messages SET message = \'{"role": "robot"\' WHERE seq = 1')
        db.close()
        with pytest.raises(StoreError, match=r"threads\.db: thread 't1' holds a damaged message"):
            store.load("t1")


# -- SQLiteStore: migrations ----------------------------------------------------------------


def test_a_row_nested_too_deeply_is_a_store_error(db_path: Path) -> None:
    """A hand-edited row nested 100,000 deep (json.loads raises RecursionError) names the file
    and the thread, as every damaged row does."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY)
        deep = '{"role": "user", "content": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
        db = raw_connection(db_path)
        db.execute("UPDATE thread_messages SET message = ? WHERE seq = 1", (deep,))
        db.close()
        with pytest.raises(StoreError, match=r"threads\.db: thread 't1' holds a damaged message"):
            store.load("t1")


def test_an_older_schema_is_migrated_once_keeping_its_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding migration 2 upgrades a version-1 file once, on open, and keeps every message."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY)
    runs: list[int] = []

    def migration_2(db: sqlite3.Connection) -> None:
        runs.append(2)
        db.execute("CREATE TABLE thread_info (thread_id TEXT PRIMARY KEY, title TEXT)")

    monkeypatch.setattr(stores_module, "_MIGRATIONS", (*stores_module._MIGRATIONS, migration_2))
    with SQLiteStore(db_path) as store:
        assert exact(list(store.load("t1"))) == exact(HISTORY)
    with SQLiteStore(db_path) as store:
        pass
    assert runs == [2]
    assert pragma(db_path, "user_version") == 2
    assert pragma(db_path, "application_id") == stores_module.APPLICATION_ID


def test_a_new_file_runs_every_migration_in_order(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file is brought from nothing to the latest version in one go."""
    runs: list[int] = []
    monkeypatch.setattr(
        stores_module,
        "_MIGRATIONS",
        (*stores_module._MIGRATIONS, lambda db: runs.append(2), lambda db: runs.append(3)),
    )
    SQLiteStore(db_path).close()
    assert runs == [2, 3]
    assert pragma(db_path, "user_version") == 3


def test_a_failed_migration_changes_nothing(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails rolls back entirely: StoreError, still version 1, data intact."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY)

    def broken_migration_2(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE thread_info (thread_id TEXT)")
        db.execute("ALTER TABLE no_such_table ADD COLUMN x TEXT")

    monkeypatch.setattr(
        stores_module, "_MIGRATIONS", (*stores_module._MIGRATIONS, broken_migration_2)
    )
    with pytest.raises(StoreError, match=r"threads\.db: could not migrate to .* version 2"):
        SQLiteStore(db_path)
    monkeypatch.undo()
    assert pragma(db_path, "user_version") == 1
    with SQLiteStore(db_path) as store:
        assert exact(list(store.load("t1"))) == exact(HISTORY)
    db = raw_connection(db_path)
    try:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        db.close()
    assert tables == [("thread_messages",)]


# -- SQLiteStore: transactions, locks and processes ------------------------------------------


def test_append_is_all_or_nothing_when_the_database_fails_midway(db_path: Path) -> None:
    """If SQLite fails on a batch's second row, its first row is rolled back too."""
    with SQLiteStore(db_path) as store:
        store.append("t1", HISTORY[:1])
        db = raw_connection(db_path)
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON thread_messages WHEN NEW.seq = 2 "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
        db.close()
        with pytest.raises(StoreError, match=r"could not append to thread 't1': refused by test"):
            store.append("t1", HISTORY[1:3])
        assert exact(list(store.load("t1"))) == exact(HISTORY[:1])


def test_a_writer_waits_for_another_writer_to_finish(db_path: Path) -> None:
    """While another connection holds the write lock, append() waits instead of failing."""
    with SQLiteStore(db_path, timeout=10) as store:
        other = raw_connection(db_path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO thread_messages VALUES ('t1', 0, ?)", (json.dumps(HISTORY[0]),))
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        started = time.monotonic()
        store.append("t1", HISTORY[1:])
        waited = time.monotonic() - started
        release.join()
        other.close()
        assert waited >= 0.2
        assert exact(list(store.load("t1"))) == exact(HISTORY)


def test_a_writer_that_waits_too_long_gets_a_store_error(db_path: Path) -> None:
    """Past the busy timeout, append() raises StoreError ('database is locked'), writes nothing."""
    with SQLiteStore(db_path, timeout=0.1) as store:
        other = raw_connection(db_path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match=r"threads\.db: could not append.*locked"):
                store.append("t1", HISTORY)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.load("t1") == MessageList()


def test_opening_a_new_file_waits_while_another_connection_creates_it(db_path: Path) -> None:
    """Switching a new file to WAL needs it to itself; SQLiteStore retries until it gets it."""
    other = raw_connection(db_path)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    with SQLiteStore(db_path, timeout=10) as store:
        waited = time.monotonic() - started
        store.append("t1", HISTORY)
    release.join()
    other.close()
    assert waited >= 0.2
    assert pragma(db_path, "journal_mode") == "wal"


def test_opening_gives_up_after_the_timeout_with_a_store_error(db_path: Path) -> None:
    """If the new file stays locked past the timeout, opening is a StoreError naming it."""
    other = raw_connection(db_path)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"threads\.db: could not switch to WAL.*locked"):
            SQLiteStore(db_path, timeout=0.1)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_readers_see_committed_history_while_a_write_is_open(db_path: Path) -> None:
    """WAL: load() is not blocked by an open write transaction and sees only committed rows."""
    with SQLiteStore(db_path, timeout=0) as store:
        store.append("t1", HISTORY[:1])
        other = raw_connection(db_path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO thread_messages VALUES ('t1', 1, ?)", (json.dumps(REMINDER),))
        try:
            assert exact(list(store.load("t1"))) == exact(HISTORY[:1])
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_a_store_refuses_to_be_used_after_fork(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store object carried into another process raises StoreError instead of corrupting."""
    with SQLiteStore(db_path) as store:
        parent = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: parent + 1)
        with pytest.raises(StoreError, match="must not cross fork"):
            store.load("t1")
        monkeypatch.undo()
        assert store.load("t1") == MessageList()


_WRITERS = """
import multiprocessing
import sys
import time

from prefill_guard.stores import SQLiteStore


def write(kind, where, writer, batches, start):
    if kind == "postgres":
        from prefill_guard.postgres import PostgresStore as open_store
    else:
        open_store = SQLiteStore
    start.wait()  # all writers open the new store and append at the same moment
    with open_store(where) as store:
        for number in range(batches):
            store.load("shared")  # a run reads the thread, waits for the API, then appends
            time.sleep(0.002)
            store.append("shared", [
                {"role": "user", "content": f"{writer}:{number}:{part}",
                 "metadata": {"writer": writer, "batch": number, "part": part}}
                for part in range(2)
            ])


kind, where, writers, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = multiprocessing.get_context("fork")  # a fresh interpreter: no threads to inherit
start = context.Barrier(writers)
processes = [
    context.Process(target=write, args=(kind, where, writer, batches, start))
    for writer in range(writers)
]
for process in processes:
    process.start()
for process in processes:
    process.join(60)
sys.exit(max(process.exitcode or 0 for process in processes))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the writers are forked")
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_processes_appending_to_one_thread_lose_nothing(kind: str, tmp_path: Path) -> None:
    """4 processes open a new store at once and append 50 batches of 2 each: all 400 are
    there, numbered 0..399, each batch contiguous, each process's batches in order, no
    duplicates.

    One interpreter imports prefill_guard once and forks the writers (importing the SDK four
    times would cost seconds); each writer opens its own store after the fork.
    """
    writers, batches = 4, 50
    with store_location(kind, tmp_path) as where:
        result = subprocess.run(
            [sys.executable, "-c", _WRITERS, kind, where, str(writers), str(batches)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        with store_class(kind)(where) as store:
            assert_batches_intact(store.load("shared"), writers, batches)
        assert stored_numbers(kind, where) == list(range(writers * batches * 2))


def stored_numbers(kind: str, where: str) -> list[int]:
    """The sequence numbers of the stored rows, read with the database's own client."""
    if kind == "sqlite":
        db = raw_connection(Path(where))
        try:
            return [seq for (seq,) in db.execute("SELECT seq FROM thread_messages ORDER BY seq")]
        finally:
            db.close()
    with require("psycopg").connect(where) as conn:
        query = "SELECT seq FROM prefill_guard_thread_messages ORDER BY seq"
        return [seq for (seq,) in conn.execute(query)]

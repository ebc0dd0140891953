"""One body of tests for both stores: the embedded SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer, postgres_server
from video.store import Session, SessionGone, SpeechSegment, SpeechWindow, Store, Summary, open_store

__all__ = ["postgres_server"]

pytestmark = pytest.mark.service


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'video.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url, tmp_path)
    yield opened
    opened.close()


def _session(session_id: str, owner: str | None = "alice", status: str = "queued") -> Session:
    path = f"/media/{session_id}.mp4"
    return Session(session_id, owner, f"{session_id}.mp4", path, status, {"fps": 1.0}, None, 60, 60)


def test_sessions_round_trip_in_creation_order(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.create_session(_session(name, status="processing" if name == "b" else "queued"))
    store.create_session(_session("a"))  # a retried create is a no-op
    store.update_session("c", status="failed", error="bad video", warnings=["gap at 3s"])
    found = store.get_session("c")
    assert found is not None
    assert (found.status, found.error, found.warnings) == ("failed", "bad video", ["gap at 3s"])
    assert found.options == {"fps": 1.0}
    assert [s.id for s in store.sessions_with_status("queued", "processing")] == ["a", "b"]
    assert {s.id for s in store.list_sessions("alice")} == {"a", "b", "c"}
    assert store.list_sessions(None) == []
    assert store.get_session("zzz") is None


def test_frame_writes_are_idempotent_and_streamable(store: Store) -> None:
    store.create_session(_session("s"))
    before = store.clock()
    store.save_frame("s", 0, 0.0, "a red car", None, b"jpeg0")
    store.save_frame("s", 1, 1.0, None, "the gateway answered 503")
    store.save_frame("s", 1, 1.0, "a blue car")  # the retried frame replaces its failure
    store.save_frame("s", 0, 0.0, "a red car", None, None)  # a second write keeps the thumbnail
    assert store.counts("s") == (2, 0)
    assert store.thumbnail("s", 0) == b"jpeg0"
    assert store.thumbnail("s", 1) is None
    assert store.described_indices("s") == {0, 1}
    assert store.described_indices("s", 1, 5) == {1}
    assert [f.description for f in store.frames("s")] == ["a red car", "a blue car"]
    stored = store.frames_stored_since("s", before)
    assert sorted(s.frame.index for s in stored) == [0, 1]
    assert store.frames_stored_since("s", store.clock() + 1) == []


def test_a_later_failure_never_erases_a_stored_description(store: Store) -> None:
    store.create_session(_session("s"))
    store.save_frame("s", 0, 0.0, "a red bicycle", None, b"jpeg0")
    # A segment run twice (at-least-once): its second attempt got a 429 for the same frame.
    store.save_frame("s", 0, 0.0, None, "the gateway answered 429")
    assert store.counts("s") == (1, 0)
    assert [(f.description, f.error) for f in store.frames("s")] == [("a red bicycle", None)]
    assert store.rank_frames("s", ["bicycle"], 10) == [0]  # its search row is still there
    assert store.described_indices("s") == {0}
    assert store.thumbnail("s", 0) == b"jpeg0"


def test_full_text_ranking_and_search_by_owner(store: Store) -> None:
    store.create_session(_session("s"))
    store.create_session(_session("other", owner="bob"))
    texts = ["a cat sleeps on the sofa", "a man rides a bicycle", "two bicycles and a cat", "an empty kitchen"]
    for index, text in enumerate(texts):
        store.save_frame("s", index, float(index), text)
        store.save_frame("other", index, float(index), text)
    ranked = store.rank_frames("s", ["bicycle"], 10)
    assert set(ranked) == {1, 2}  # stemmed: "bicycles" matches
    assert store.rank_frames("s", [], 10) == []
    assert store.rank_frames("s", ["giraffe"], 10) == []
    hits = store.search("alice", ["kitchen"], 10)
    assert [(m.session_id, m.index) for m in hits] == [("s", 3)]
    store.save_summary("s", Summary(0, 0, 3, 4, "cats and bicycles in a flat"))
    store.save_summary("s", Summary(1, 4, 7, 4, "an empty kitchen"))
    assert store.rank_summaries("s", ["kitchen"], 5) == [1]


def test_summaries_overviews_and_embeddings(store: Store) -> None:
    store.create_session(_session("s"))
    for index in range(3):
        store.save_frame("s", index, float(index), f"frame {index}")
    store.save_summary("s", Summary(0, 0, 2, 3, "first"))
    store.save_summary("s", Summary(0, 0, 2, 3, "first, again"))
    store.save_summary("s", Summary(0, 0, 2, 3, "top", level=1))
    assert [s.summary for s in store.summaries("s")] == ["first, again"]
    assert store.summary_count("s") == 1  # overviews are not batch summaries
    assert [(s.level, s.summary) for s in store.overviews("s")] == [(1, "top")]
    store.save_embeddings("s", "embed", {0: b"\x00" * 8, 7: b"\x01" * 8})  # frame 7 does not exist
    assert store.embeddings(["s"], "embed") == [("s", 0, b"\x00" * 8)]
    assert [f.index for f in store.frames_without_embedding("s", "embed", 10)] == [1, 2]
    assert [f.index for f in store.frames_at("s", [2, 0])] == [0, 2]


def test_a_deleted_session_takes_everything_with_it(store: Store) -> None:
    store.create_session(_session("s"))
    store.save_frame("s", 0, 0.0, "x")
    store.save_summary("s", Summary(0, 0, 0, 1, "x"))
    store.delete_session("s")
    assert store.frames("s") == []
    assert store.summaries("s") == []
    with pytest.raises(SessionGone):
        store.save_frame("s", 1, 1.0, "late result of a cancelled job")
    with pytest.raises(SessionGone):
        store.save_summary("s", Summary(1, 0, 0, 1, "late"))


def test_migrations_run_once(database_url: str, tmp_path: Path) -> None:
    first = open_store(database_url, tmp_path)
    first.create_session(_session("kept"))
    first.close()
    second = open_store(database_url, tmp_path)
    assert second.get_session("kept") is not None
    second.close()


@pytest.mark.unit
def test_unknown_database_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        open_store("mysql://x", tmp_path)


def test_a_database_from_before_migrations_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3

    from video.store.migrations import migrations

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(migrations("sqlite")[0][2])  # the schema as it was, without a migrations table
    old.execute(
        "INSERT INTO sessions VALUES ('kept', NULL, 'a.mp4', '/a.mp4', 'completed', '{}', NULL, 1, 1, '[]', NULL, 0, 0)"
    )
    old.commit()
    old.close()
    store = open_store(f"sqlite:///{path}", tmp_path)
    assert store.get_session("kept") is not None
    store.close()
    check = sqlite3.connect(path)
    versions = [r[0] for r in check.execute("SELECT version FROM schema_migrations ORDER BY version")]
    indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    check.close()
    assert versions == [v for v, _, _ in migrations("sqlite")]
    assert "frames_stored" in indexes


@pytest.mark.unit
def test_an_unreachable_database_is_named_in_one_line(tmp_path: Path) -> None:
    from tests.fakes import free_port
    from video.store import StoreUnavailable

    port = free_port()
    with pytest.raises(StoreUnavailable, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}: Connection refused"):
        open_store(f"postgresql://video@127.0.0.1:{port}/video", tmp_path)


@pytest.mark.unit
def test_a_wrong_database_url_is_refused_by_the_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from video.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDEO_DATABASE_URL", "mysql://video@db/video")
    assert main(["serve"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: VIDEO_DATABASE_URL: ")
    assert error.count("\n") == 1


def test_processes_opening_a_new_sqlite_database_together_all_succeed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    # Each process imports, says it is ready, then spins until "go": the opens start within microseconds.
    code = (
        "import os, sys; from pathlib import Path; from video.store import SQLiteStore\n"
        "open(sys.argv[2] + '.' + sys.argv[3], 'w').close()\n"
        "while not os.path.exists(sys.argv[2]): pass\n"
        "SQLiteStore(Path(sys.argv[1]))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    for attempt in range(5):
        path, go = tmp_path / f"shared-{attempt}.db", tmp_path / f"go-{attempt}"
        processes = [
            subprocess.Popen([sys.executable, "-c", code, str(path), str(go), str(n)], cwd=root, stderr=subprocess.PIPE)
            for n in range(6)
        ]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(f"go-{attempt}.*"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        errors = [p.communicate(timeout=60)[1].decode() for p in processes]
        assert [p.returncode for p in processes] == [0] * 6, errors


def test_a_clip_is_stored_on_its_frames_with_its_time_range(store: Store) -> None:
    store.create_session(_session("s"))
    for index in range(3):
        store.save_frame("s", index, float(index), "a box is opened", None, b"jpeg", (0.0, 10.0))
    store.save_frame("s", 3, 3.0, "a cat")
    frames = store.frames("s")
    assert [f.clip for f in frames] == [(0.0, 10.0)] * 3 + [None]
    assert store.frames_at("s", [1])[0].clip == (0.0, 10.0)
    assert store.frame_at_time("s", 2.5) == 2
    assert store.frame_at_time("s", -1.0) == 0


def test_speech_windows_are_idempotent_and_a_transcript_survives_a_later_failure(store: Store) -> None:
    store.create_session(_session("s"))
    store.create_session(_session("other", owner="bob"))
    heard = [SpeechSegment(31.0, 33.5, "the deadline is on Friday"), SpeechSegment(40.0, 41.0, "open the box")]
    assert store.save_speech("s", SpeechWindow(1, 30.0, 60.0), heard)
    assert store.save_speech("s", SpeechWindow(1, 30.0, 60.0), heard)  # a retried window replaces its rows
    assert store.save_speech("s", SpeechWindow(0, 0.0, 30.0, "the gateway answered 503"), [])
    assert store.save_speech("other", SpeechWindow(0, 0.0, 30.0), [SpeechSegment(1.0, 2.0, "a deadline elsewhere")])
    # An activity run twice (at-least-once): its second attempt of window 1 failed.
    assert not store.save_speech("s", SpeechWindow(1, 30.0, 60.0, "the gateway answered 429"), [])
    assert store.speech("s") == heard
    assert store.speech("s", 35.0, 60.0) == heard[1:]
    assert [(w.index, w.error) for w in store.speech_windows("s")] == [(0, "the gateway answered 503"), (1, None)]
    assert store.rank_speech("s", ["deadline"], 5) == heard[:1]  # its search row is still there
    assert [(m.session_id, m.start_s) for m in store.search_speech("alice", ["deadline"], 5)] == [("s", 31.0)]
    assert store.save_speech("s", SpeechWindow(0, 0.0, 30.0), [])  # the failed window succeeds later
    assert [w.error for w in store.speech_windows("s")] == [None, None]
    store.delete_session("s")
    assert store.speech("s") == []
    assert store.speech_windows("s") == []
    with pytest.raises(SessionGone):
        store.save_speech("s", SpeechWindow(2, 60.0, 90.0), [])


def test_speech_embeddings_follow_their_segments(store: Store) -> None:
    store.create_session(_session("s"))
    heard = [SpeechSegment(1.0, 2.0, "a bicycle"), SpeechSegment(3.0, 4.0, "a box")]
    store.save_speech("s", SpeechWindow(0, 0.0, 30.0), heard)
    missing = store.speech_without_embedding("s", "m", 10)
    assert [(m.window_index, m.segment_index, m.segment) for m in missing] == [(0, 0, heard[0]), (0, 1, heard[1])]
    store.save_speech_embeddings("s", "m", {(0, 0): b"\x00" * 8, (0, 1): b"\x01" * 8, (5, 0): b"\x02" * 8})
    assert store.speech_without_embedding("s", "m", 10) == []
    assert sorted(key for _, key, _ in store.speech_embeddings(["s"], "m")) == [(0, 0), (0, 1)]  # (5, 0) is no segment
    assert store.speech_at("s", [(0, 1), (9, 9), (0, 0)]) == [heard[1], heard[0]]
    store.save_speech("s", SpeechWindow(0, 0.0, 30.0), heard[:1])  # a retried window's segments are new rows
    assert [m.segment for m in store.speech_without_embedding("s", "m", 10)] == heard[:1]

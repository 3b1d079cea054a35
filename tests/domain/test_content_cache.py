"""The host's content cache of delivered videos (keys/provenance/content_cache.py): entries
appear whole or not at all, stay within their bound, and one that does not hold together is
dropped, never served."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from keys.provenance import content_cache
from keys.provenance.content_cache import CachedVideo, ContentCache, entry_name

ASSERTION = {"alg": "sha256", "hash": "AAAA", "name": "jumbf manifest"}


def video_for(data: bytes, etag: str = '"v1"') -> CachedVideo:
    return CachedVideo(
        etag=etag,
        length=len(data),
        original_sha256=hashlib.sha256(data).hexdigest(),
        media_sha256=hashlib.sha256(data[8:]).hexdigest(),
        assertion=ASSERTION,
        headers={"Content-Type": "video/mp4"},
    )


def put(cache: ContentCache, name: str, data: bytes, etag: str = '"v1"') -> None:
    pending = cache.pending(name, len(data))
    assert pending is not None
    pending.file.write(data)
    pending.commit(video_for(data, etag))


def read(cache: ContentCache, name: str) -> bytes | None:
    hit = cache.open(name)
    if hit is None:
        return None
    try:
        return hit.file.read()
    finally:
        hit.close()


def visible(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir() if path.name != ".lock"}


def test_an_entry_is_written_private_and_read_back(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", 10_000)
    name = entry_name("video_1", "video")
    assert cache.open(name) is None
    put(cache, name, b"x" * 1000)

    hit = cache.open(name)
    assert hit is not None
    assert hit.video == video_for(b"x" * 1000)
    assert hit.file.read() == b"x" * 1000
    hit.close()
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    for path in (tmp_path / "cache").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The bytes file and its sidecar, nothing else left behind.
    assert len(visible(tmp_path / "cache")) == 2


def test_nothing_is_visible_until_commit_and_a_discard_leaves_nothing(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 10_000)
    name = entry_name("video_1", "video")
    put(cache, name, b"old" * 100)
    pending = cache.pending(name, 600)
    assert pending is not None
    pending.file.write(b"n" * 300)  # half written: readers still get the old entry whole
    assert read(cache, name) == b"old" * 100
    pending.file.write(b"n" * 300)
    pending.commit(video_for(b"n" * 600, '"v2"'))
    assert read(cache, name) == b"n" * 600
    assert len(visible(tmp_path)) == 2  # the old bytes are gone

    other = cache.pending(entry_name("video_2", "video"), 10)
    assert other is not None
    other.file.write(b"y" * 10)
    other.discard()
    assert cache.open(entry_name("video_2", "video")) is None
    assert len(visible(tmp_path)) == 2


def test_a_reader_keeps_the_bytes_it_opened_when_the_entry_is_replaced(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 10_000)
    name = entry_name("video_1", "video")
    put(cache, name, b"a" * 500)
    hit = cache.open(name)
    assert hit is not None
    put(cache, name, b"b" * 700, '"v2"')
    assert hit.file.read() == b"a" * 500 and hit.video.etag == '"v1"'
    hit.close()
    assert read(cache, name) == b"b" * 700


def test_the_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 3_000)
    names = [entry_name(f"video_{n}", "video") for n in range(4)]
    for index, name in enumerate(names[:3]):
        put(cache, name, bytes([index]) * 1000)
        past = time.time() - 100 + index
        for path in tmp_path.glob(f"{name}.*.mp4"):
            os.utime(path, (past, past))
    assert read(cache, names[0]) is not None  # a hit touches it: now the most recent

    put(cache, names[3], b"d" * 1000)

    assert read(cache, names[1]) is None  # the least recently used went
    assert [read(cache, name) is not None for name in (names[0], names[2], names[3])] == [
        True,
        True,
        True,
    ]
    sizes = sum(path.stat().st_size for path in tmp_path.glob("*.mp4"))
    assert sizes <= 3_000
    # Larger than the whole bound: never written.
    assert cache.pending(entry_name("huge", "video"), 3_001) is None


def test_zero_bytes_turns_the_cache_off(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "never", 0)
    assert not cache.enabled
    assert cache.pending("x", 1) is None and cache.open("x") is None
    assert not (tmp_path / "never").exists()


def test_a_directory_that_is_not_ours_turns_the_cache_off(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert not ContentCache(tmp_path / "link", 10_000).enabled
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    assert ContentCache(wide, 10_000).enabled
    assert stat.S_IMODE(wide.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "damage", ["truncated", "longer", "sidecar_garbage", "sidecar_file", "sidecar_types"]
)
def test_an_entry_that_does_not_hold_together_is_dropped(tmp_path: Path, damage: str) -> None:
    cache = ContentCache(tmp_path, 10_000)
    name = entry_name("video_1", "video")
    put(cache, name, b"z" * 1000)
    (data,) = tmp_path.glob("*.mp4")
    sidecar = tmp_path / f"{name}.json"
    if damage == "truncated":
        os.truncate(data, 999)
    elif damage == "longer":
        with data.open("ab") as out:
            out.write(b"!")
    elif damage == "sidecar_garbage":
        sidecar.write_bytes(b"{not json")
    elif damage == "sidecar_file":
        record = json.loads(sidecar.read_bytes())
        record["file"] = "../../etc/passwd"
        sidecar.write_text(json.dumps(record))
    else:
        record = json.loads(sidecar.read_bytes())
        record["video"]["etag"] = 7
        sidecar.write_text(json.dumps(record))

    assert cache.open(name) is None
    assert visible(tmp_path) == set()
    put(cache, name, b"z" * 1000)  # and the next delivery writes it again
    assert read(cache, name) == b"z" * 1000


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path) -> None:
    """Threads of a worker replacing the same entry with other bytes while others read it:
    every read is one whole version, and one version is left, alone."""
    cache = ContentCache(tmp_path, 1_000_000)
    name = entry_name("video_1", "video")
    versions = {bytes([n]) * (1000 + n) for n in range(8)}
    seen: list[bytes | None] = []
    stop = threading.Event()

    def writer(data: bytes) -> None:
        for _ in range(20):
            put(cache, name, data, f'"{data[0]}"')

    def reader() -> None:
        fresh = ContentCache(tmp_path, 1_000_000)  # as another process would
        while not stop.is_set():
            seen.append(read(fresh, name))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(data,)) for data in versions]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()

    assert {data for data in seen if data is not None} <= versions
    final = read(cache, name)
    assert final in versions
    assert len(visible(tmp_path)) == 2


def test_a_reader_whose_file_went_keeps_the_entry_written_again_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a reader's look at the sidecar and its opening the bytes, other writers
    replace the entry and then write the same bytes again (the same sidecar, to the byte):
    the reader misses, and drops nothing."""
    reader, writer = ContentCache(tmp_path, 1_000_000), ContentCache(tmp_path, 1_000_000)
    name = entry_name("video_1", "video")
    put(writer, name, b"a" * 1000)
    real_open, calls = open, []

    def open_between_two_commits(path: Path, mode: str) -> object:
        calls.append(path)
        put(writer, name, b"b" * 1001)  # the file the reader saw is unlinked
        try:
            return real_open(path, mode)
        finally:
            put(writer, name, b"a" * 1000)  # and the same entry is back, whole

    monkeypatch.setattr(content_cache, "open", open_between_two_commits, raising=False)
    assert reader.open(name) is None
    assert len(calls) == 1
    monkeypatch.undo()

    assert read(reader, name) == b"a" * 1000
    assert len(visible(tmp_path)) == 2


def _write_many(directory: str, marker: int) -> None:
    cache = ContentCache(Path(directory), 1_000_000)
    for _ in range(15):
        put(cache, entry_name("video_1", "video"), bytes([marker]) * (2000 + marker))


def test_concurrent_writer_processes_leave_one_whole_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_many, args=(str(tmp_path), n)) for n in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    cache = ContentCache(tmp_path, 1_000_000)
    hit = cache.open(entry_name("video_1", "video"))
    assert hit is not None
    data = hit.file.read()
    hit.close()
    assert data == bytes([data[0]]) * (2000 + data[0])
    assert hit.video.original_sha256 == hashlib.sha256(data).hexdigest()
    assert len(visible(tmp_path)) == 2


def test_the_sha256_state_of_an_original_is_kept_per_process(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, 1_000)
    digest = hashlib.sha256(b"original")
    assert cache.digest_of(digest.hexdigest()) is None
    cache.keep_digest(digest)
    kept = cache.digest_of(digest.hexdigest())
    assert kept is not None
    kept.update(b"box")
    assert kept.hexdigest() == hashlib.sha256(b"originalbox").hexdigest()
    again = cache.digest_of(digest.hexdigest())
    assert again is not None and again.hexdigest() == digest.hexdigest()  # a copy each time

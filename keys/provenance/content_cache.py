"""A host's cache of delivered videos: the backend's bytes of a video, kept on local disk with
what was computed for them (their SHA-256, media hash and c2pa BMFF binding), so that a
later delivery the backend confirms unchanged (``304 Not Modified`` to ``If-None-Match``)
streams from the local file and signs with the stored binding: no download, no hashing.

One directory per host, shared by its worker processes: mode 0700, files 0600. An entry is
two files, named after the video (``name``): the bytes, ``<name>.<sha256 prefix>.mp4``, and
a JSON sidecar ``<name>.json`` naming that file, with the backend's strong ETag, the length
and the hashes. Bytes are written to a temporary file in the same directory and renamed into
place, then the sidecar is replaced (``os.replace``) under a lock file (``flock``), so a
reader sees the old entry or the new one, never half of one; a reader opens the bytes
before it asks the backend, so an entry replaced or evicted meanwhile stays readable to it.
An entry whose file does not have its sidecar's length, or whose sidecar is unreadable, is
dropped. The directory is bounded (``max_bytes``): committing an entry evicts the least
recently used ones (by the bytes file's mtime, touched on each hit).

Per process, the SHA-256 state of each original (``hashlib`` object, a few hundred bytes)
is kept in memory: the hash of a delivery (original + its manifest box) is then a copy and
an update, without reading the file again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

SIDECAR = ".json"
DATA = ".mp4"
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
VERSION = 1
# A temporary file this old belongs to a writer that died.
STALE_TEMP_SECONDS = 3600
MAX_DIGESTS = 4096


@dataclass(frozen=True)
class CachedVideo:
    """What the cache knows of one video's bytes."""

    etag: str  # the backend's strong ETag for them
    length: int
    original_sha256: str
    media_sha256: str
    assertion: dict[str, Any]  # the c2pa.hash.bmff.v3 assertion over them
    headers: dict[str, str]  # the backend's headers to pass on (Content-Type, Last-Modified)


class CacheHit:
    """An entry opened for reading: its facts and its bytes file (of the right length)."""

    def __init__(self, name: str, video: CachedVideo, file: IO[bytes], sidecar: bytes) -> None:
        self.name, self.video, self.file, self._sidecar = name, video, file, sidecar

    def close(self) -> None:
        self.file.close()


def entry_name(video_id: str, variant: str) -> str:
    """The cache's name for a backend video's content (a hex digest: safe as a file name)."""
    return hashlib.sha256(f"{video_id}\0{variant}".encode()).hexdigest()[:32]


class PendingEntry:
    """The bytes of an entry being written (a temporary file in the cache directory), made
    an entry by ``commit`` or thrown away by ``discard``."""

    def __init__(self, cache: ContentCache, name: str, file: IO[bytes], path: Path) -> None:
        self.cache, self.name, self.file, self.path = cache, name, file, path
        self._done = False

    def commit(self, video: CachedVideo) -> None:
        """Make the written bytes the entry (replacing any older one). A failure only means
        no entry."""
        self._done = True
        try:
            self.file.flush()
            self.file.close()
            size = os.stat(self.path).st_size
            if size != video.length:
                raise OSError(f"wrote {size} bytes, not {video.length}")
            self.cache._commit(self.name, self.path, video)
        except OSError as exc:
            log.warning("provenance cache: entry not kept: %s", exc)
            with contextlib.suppress(OSError):
                self.path.unlink()

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class ContentCache:
    """The cache directory of this host (``max_bytes`` 0: no cache). Made on first use;
    one that cannot be made or is not private turns the cache off, with a warning."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._ready: bool | None = None if max_bytes > 0 else False
        self._lock = threading.Lock()
        self._digests: OrderedDict[str, hashlib._Hash] = OrderedDict()
        # Told each cacheable delivery's outcome ("hit", "miss", "refused"), for the metrics.
        self.observe: Callable[[str], None] = lambda outcome: None

    @property
    def enabled(self) -> bool:
        if self._ready is None:
            with self._lock:
                if self._ready is None:
                    self._ready = self._prepare()
        return self._ready

    def _prepare(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.directory.lstat()
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
                raise OSError("not a directory of this user's")
            if info.st_mode & 0o077:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            log.warning("provenance cache: off, %s is unusable: %s", self.directory, exc)
            return False
        return True

    # -- reading -----------------------------------------------------------------------

    def open(self, name: str) -> CacheHit | None:
        """The entry, its bytes file open; None if there is none. An entry that does not
        hold together (unreadable sidecar, a file of another length) is dropped."""
        if not self.enabled:
            return None
        sidecar_path = self._sidecar(name)
        try:
            raw = sidecar_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("provenance cache: entry %s unreadable: %s", name, exc)
            return None
        try:
            record = json.loads(raw)
            video = CachedVideo(**record["video"])
            file_name = str(record["file"])
            if record.get("version") != VERSION or _file_of(raw) != file_name:
                raise ValueError("unknown sidecar")
            if not _well_formed(video):
                raise ValueError("malformed sidecar")
        except (ValueError, KeyError, TypeError):
            log.warning("provenance cache: entry %s dropped: its sidecar is unreadable", name)
            self._drop(name, raw)
            return None
        try:
            file = open(self.directory / file_name, "rb")  # noqa: SIM115 (the hit owns it)
        except OSError:
            # Evicted or replaced between the two reads (or gone): the normal way.
            log.warning("provenance cache: entry %s dropped: its file is missing", name)
            self._drop(name, raw, unless_whole=(file_name, video.length))
            return None
        size = os.fstat(file.fileno()).st_size
        if size != video.length:
            file.close()
            log.warning(
                "provenance cache: entry %s dropped: its file has %d bytes, not %d",
                name,
                size,
                video.length,
            )
            self._drop(name, raw, unless_whole=(file_name, video.length))
            return None
        with contextlib.suppress(OSError):
            os.utime(file.fileno())  # least recently used goes first
        return CacheHit(name, video, file, raw)

    def discard(self, name: str) -> None:
        """Remove the entry of this name, whatever it holds (its video was deleted)."""
        if not self.enabled:
            return
        try:
            seen = self._sidecar(name).read_bytes()
        except OSError:
            return
        self._drop(name, seen)

    def drop(self, hit: CacheHit) -> None:
        """Remove this entry (not a newer one written meanwhile)."""
        self._drop(hit.name, hit._sidecar)

    def _drop(self, name: str, seen: bytes, *, unless_whole: tuple[str, int] | None = None) -> None:
        """Remove the entry if its sidecar is still ``seen``; with ``unless_whole`` (the file
        it names and its length), only if that file is still missing or of another length:
        other writers may have replaced the entry and then written the same bytes again
        (the same sidecar, to the byte) between the reader's look and this lock."""
        with self._locked():
            sidecar_path = self._sidecar(name)
            try:
                if sidecar_path.read_bytes() != seen:
                    return  # replaced meanwhile by a good one
            except OSError:
                return
            if unless_whole is not None:
                file_name, length = unless_whole
                with contextlib.suppress(OSError):
                    if os.stat(self.directory / file_name).st_size == length:
                        return  # written whole again meanwhile
            with contextlib.suppress(OSError):
                sidecar_path.unlink()
            # Bytes are renamed into place under this lock, just before their sidecar: with
            # the sidecar gone, every bytes file of this name is no one's.
            for orphan in self.directory.glob(f"{name}.*{DATA}"):
                with contextlib.suppress(OSError):
                    orphan.unlink()

    # -- writing -----------------------------------------------------------------------

    def pending(self, name: str, length: int) -> PendingEntry | None:
        """A temporary file to write an entry's ``length`` bytes to; None when the cache is
        off or they could never fit."""
        if not self.enabled or length > self.max_bytes:
            return None
        try:
            fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=self.directory)
        except OSError as exc:
            log.warning("provenance cache: cannot write to %s: %s", self.directory, exc)
            return None
        return PendingEntry(self, name, os.fdopen(fd, "w+b"), Path(path))

    def _commit(self, name: str, written: Path, video: CachedVideo) -> None:
        file_name = f"{name}.{video.original_sha256[:16]}{DATA}"
        record = {"version": VERSION, "file": file_name, "video": asdict(video)}
        encoded = json.dumps(record, separators=(",", ":")).encode()
        with self._locked():
            sidecar_path = self._sidecar(name)
            try:
                previous = _file_of(sidecar_path.read_bytes())
            except OSError:
                previous = None
            os.replace(written, self.directory / file_name)
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=SIDECAR, dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(encoded)
                os.replace(temp, sidecar_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            if previous is not None and previous != file_name:
                with contextlib.suppress(OSError):
                    (self.directory / previous).unlink()
            self._evict(keep=file_name)

    def _evict(self, keep: str) -> None:
        """Remove the least recently used entries until the directory fits ``max_bytes``
        (and temporary files that writers which died left)."""
        files, total, now = [], 0, time.time()
        with os.scandir(self.directory) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.startswith(TEMP_PREFIX):
                    if now - info.st_mtime > STALE_TEMP_SECONDS:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                    continue
                if entry.name.endswith(DATA):
                    files.append((info.st_mtime, entry.name, info.st_size))
                    total += info.st_size
        files.sort()
        for _, file_name, size in files:
            if total <= self.max_bytes:
                break
            if file_name == keep:
                continue
            name = file_name.split(".", 1)[0]
            sidecar_path = self._sidecar(name)
            with contextlib.suppress(OSError):
                if _file_of(sidecar_path.read_bytes()) == file_name:
                    sidecar_path.unlink()
            with contextlib.suppress(OSError):
                (self.directory / file_name).unlink()
            total -= size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive among this host's writers (processes and threads): flock on a lock
        file of the directory, one open file description per holder."""
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sidecar(self, name: str) -> Path:
        return self.directory / f"{name}{SIDECAR}"

    # -- this process's SHA-256 states ---------------------------------------------------

    def digest_of(self, original_sha256: str) -> hashlib._Hash | None:
        """A copy of the SHA-256 state of the original with this hash, if this process kept
        it (``keep_digest``); else None."""
        with self._lock:
            digest = self._digests.get(original_sha256)
            if digest is None:
                return None
            self._digests.move_to_end(original_sha256)
            return digest.copy()

    def keep_digest(self, digest: hashlib._Hash) -> None:
        """Keep the SHA-256 state of an original (a copy) for its next deliveries here."""
        sha256 = digest.hexdigest()
        with self._lock:
            self._digests[sha256] = digest.copy()
            self._digests.move_to_end(sha256)
            while len(self._digests) > MAX_DIGESTS:
                self._digests.popitem(last=False)


def _well_formed(video: CachedVideo) -> bool:
    """Whether a sidecar's fields have the types and shapes the gateway wrote."""
    texts = (video.etag, video.original_sha256, video.media_sha256)
    return (
        all(isinstance(text, str) for text in texts)
        and len(video.original_sha256) == len(video.media_sha256) == 64
        and type(video.length) is int
        and video.length > 0
        and isinstance(video.assertion, dict)
        and isinstance(video.headers, dict)
        and all(isinstance(v, str) for v in (*video.headers, *video.headers.values()))
    )


def _file_of(sidecar: bytes) -> str | None:
    """The bytes file a sidecar names, if it is one of ours (``<name>.<hex>.mp4``)."""
    try:
        name = json.loads(sidecar)["file"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not name.endswith(DATA):
        return None
    parts = name.removesuffix(DATA).split(".")
    if len(parts) != 2 or not all(part.isalnum() and part.isascii() for part in parts):
        return None
    return name

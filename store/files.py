"""Checksummed, atomic files for stage results (plain Python; no Prefect).

Layout of one file: an 8-byte magic, a 4-byte little-endian format version, the
32-byte SHA-256 of the payload, then the payload (a pickle, protocol 5, of plain Python
and numpy objects; files of format 3 hold a joblib pickle and still load). Writes go to a temporary file in the same folder, then are renamed
over the target, so a kill at any moment leaves either the old file or the new one,
never a mix. Stage records are not fsynced: they can be recomputed, and a file an
operating-system crash garbled fails its checksum and is recomputed (an fsync cost
7 ms of a tutorial round's 35, measured); what cannot be recomputed, a person's
answers, is fsynced (``store/ledger.py``). Loads verify all three fields; any mismatch raises
:class:`DamagedFile` naming the file and what is wrong.

Stage records (:func:`save_record`, :func:`load_record`) are stored with the key
they were computed under (stage, parameters, code version) and the numeric platform
that computed them: a file whose key is not the one asked for raises
:class:`StaleFile`, so a file written by other code or for other parameters is never
trusted; the platform is the store's to compare (``store.experiment``).
"""

import contextlib
import errno
import hashlib
import io
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

import joblib

MAGIC = b"BALSTAT\x00"
# 4: a plain pickle (a round's record 0.3 ms to write, 0.14 ms to read, against joblib's
# 2.1 and 1.5 ms, measured on the tutorial's); 3: the same in a joblib pickle, still read;
# 2: {"key", "record"}; 1: bare payloads
FORMAT_VERSION = 4
READABLE_VERSIONS = (3, 4)
_HEADER = struct.Struct("<8sI32s")


class StaleFile(Exception):
    """A result file computed under another key (other code version or parameters)."""

    def __init__(self, path: Path, found: str, expected: str):
        super().__init__(f"{path}: written under key {found}, expected {expected}")
        self.path, self.found, self.expected = Path(path), found, expected


class CannotWrite(Exception):
    """A result could not be written: a full disk, a read-only or unwritable folder.
    The message names the file and says what to do; nothing half-written is left."""

    ADVICE = {
        errno.ENOSPC: "free space on that filesystem",
        errno.EDQUOT: "free space (the disk quota is used up)",
        errno.EROFS: "the filesystem is read-only: remount it writable",
        errno.EACCES: "make the folder writable for this user",
        errno.EPERM: "make the folder writable for this user",
    }

    def __init__(self, path: Path, error: OSError):
        advice = self.ADVICE.get(error.errno, "fix the folder")
        super().__init__(
            f"cannot write {path}: {error.strerror or error}; {advice} (or choose another --artifacts-dir), "
            "then run the same command again: every finished stage is saved and it resumes from there"
        )
        self.path, self.errno = Path(path), error.errno


@contextlib.contextmanager
def writing(path: Path):
    """An OSError while writing ``path`` (in this context) becomes :class:`CannotWrite`."""
    try:
        yield
    except OSError as e:
        raise CannotWrite(path, e) from e


class DamagedFile(Exception):
    """A result file that cannot be trusted (truncated, corrupted, unknown format)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _replace(path: Path, chunks: tuple[bytes, ...], *, durable: bool) -> None:
    """Write ``chunks`` to a temporary file beside ``path`` (fsynced if ``durable``),
    then rename it over ``path``: a reader or a kill sees the old file or the new one,
    and two writers at once both succeed. Nothing half-written is left; an OSError
    becomes :class:`CannotWrite`."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # nothing half-written is left
            raise


def save(path: Path, obj: Any, *, durable: bool = True) -> str:
    """Write ``obj`` to ``path`` atomically (and fsynced, with its folder, if
    ``durable``); returns the payload's SHA-256 (hex)."""
    path = Path(path)
    payload = pickle.dumps(obj, protocol=5)
    digest = hashlib.sha256(payload).digest()
    _replace(path, (_HEADER.pack(MAGIC, FORMAT_VERSION, digest), payload), durable=durable)
    if durable:
        _fsync_dir(path.parent)
    return digest.hex()


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (a temporary file of its own, then a rename), so
    two processes writing the same file at once both succeed and a reader never sees
    half of it."""
    _replace(Path(path), (text.encode(),), durable=False)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically, as :func:`write_text` does."""
    _replace(Path(path), (data,), durable=False)


def load(path: Path) -> Any:
    """Read a file written by :func:`save`, verifying it; raises :class:`DamagedFile`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DamagedFile(path, f"unreadable ({e})") from e
    if len(data) < _HEADER.size:
        raise DamagedFile(path, f"truncated: {len(data)} bytes, shorter than the header")
    magic, version, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DamagedFile(path, "not a result file (bad magic bytes)")
    if version not in READABLE_VERSIONS:
        versions = " and ".join(map(str, READABLE_VERSIONS))
        raise DamagedFile(path, f"format version {version}, this code reads versions {versions}")
    payload = data[_HEADER.size :]
    if hashlib.sha256(payload).digest() != digest:
        raise DamagedFile(path, "checksum mismatch (truncated or corrupted payload)")
    try:
        return pickle.loads(payload) if version == 4 else joblib.load(io.BytesIO(payload))
    except Exception as e:  # a payload that hashes right but does not unpickle
        raise DamagedFile(path, f"payload does not load ({type(e).__name__}: {e})") from e


def verify(path: Path) -> str | None:
    """None if ``path`` loads cleanly, else the reason it does not (missing included)."""
    try:
        load(path)
    except FileNotFoundError:
        return "missing"
    except DamagedFile as e:
        return e.reason
    return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_record(path: Path, key: str, record: tuple, platform: dict | None = None, seconds: float | None = None) -> str:
    """Save a stage's record (a NamedTuple) under its key, with the numeric platform
    that computed it (``alcore.numerics.platform``) and the seconds it took; returns
    the payload digest. Atomic, not fsynced (see the module docstring).

    The record is stored as a dict of its fields, so a changed record type never
    unpickles into the wrong shape (and a changed type changes the code version, so
    the key, first).
    """
    content = {"key": key, "record": record._asdict(), "platform": platform, "seconds": seconds}
    return save(path, content, durable=False)


def load_record(path: Path, key: str, record_type: type) -> tuple[tuple, dict | None, float | None]:
    """Load a record saved by :func:`save_record` under ``key``: (record, platform, seconds).

    Raises:
        FileNotFoundError: no file.
        DamagedFile: unreadable, truncated, corrupted, or of another format.
        StaleFile: saved under another key.
    """
    content = load(path)
    if not isinstance(content, dict) or set(content) != {"key", "record", "platform", "seconds"}:
        raise DamagedFile(path, "not a stage record")
    if content["key"] != key:
        raise StaleFile(path, content["key"], key)
    try:
        return record_type(**content["record"]), content["platform"], content["seconds"]
    except TypeError as e:
        raise DamagedFile(path, f"record does not fit {record_type.__name__} ({e})") from e

"""Write to a temporary name in the same folder, then rename: readers never see half a file.

One helper for every file the library writes (shards, manifests, PNGs, labels, results, models,
exports): a crash or a kill leaves either the old file or the new one, never a torn one. The
temporary name carries the process id, so two writers never share a temporary file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil

from keras_cadstn.errors import DataError


def temporary_path(path: str, suffix: str = "") -> str:
    """``<dir>/.<name>.<pid>.tmp<suffix>``: hidden, unique per process, same file system as ``path``.

    ``suffix`` keeps an extension some writers insist on (Keras: ``.keras``, ``.weights.h5``).
    Temporaries of ``path`` left by killed processes (their pid no longer runs) are removed first.
    """
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale_temporaries(folder, name)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp{suffix}")


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str, name: str) -> None:
    """Remove ``.<name>.<pid>.tmp*`` in ``folder`` whose process is gone (a SIGKILL or a power cut)."""
    if not os.path.isdir(folder):
        return
    prefix = f".{name}."
    for entry in os.listdir(folder):
        pid, sep, _ = entry[len(prefix):].partition(".tmp")
        if entry.startswith(prefix) and sep and pid.isdigit() and int(pid) != os.getpid() and not pid_running(int(pid)):
            remove(os.path.join(folder, entry))


def remove(path: str) -> None:
    """Remove a file or folder if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temporary path to write (a file or a folder); on success it replaces ``path``.

    On an exception the temporary is removed and ``path`` is left as it was.
    """
    tmp = temporary_path(path, suffix)
    remove(tmp)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    publish(tmp, path)


def publish(tmp: str, path: str) -> None:
    """Move a finished temporary file or folder to ``path``, replacing what was there."""
    if os.path.isdir(tmp):
        old = temporary_path(path, ".old")
        if os.path.exists(path):
            os.replace(path, old)
        os.replace(tmp, path)
        remove(old)
    else:
        os.replace(tmp, path)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=1))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str):
    """A JSON file written by this library; unreadable JSON is a DataError naming the file."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


@contextlib.contextmanager
def folder_lock(folder: str, name: str, error):
    """One writer per folder at a time: an exclusive lock on ``folder/name`` held for the block;
    where another process holds it, ``error`` (an exception) is raised at once instead."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


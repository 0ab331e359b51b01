"""File writes that never leave half a file, and npz reads that name the file they failed on.

Every file hmr-fast writes (annotation and cache npz files, crops, checkpoints, results) goes
through :func:`atomic_write`: the bytes go to a hidden temporary file in the destination's
folder (``.<name>.<random>.tmp``), which is flushed, fsynced, given the permissions a plain
``open()`` would have given it (``0o666 & ~umask``; ``mkstemp`` creates 0600 files, which
other users of a shared dataset or run folder could not read), and renamed over the final
name. A reader therefore sees the old file or the whole new one; a writer killed midway
leaves only a hidden ``*.tmp`` file, which no loader matches (:func:`is_temp_file`) and the
next write of the same file removes.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Names of our temporary files, and of those the previous writer (mkstemp(suffix=".npz"),
# default prefix) could leave behind after a kill.
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
_LEGACY_TEMP_RE = re.compile(r"^tmp[A-Za-z0-9_]{8}\.npz$")
STALE_AFTER_S = 600.0  # a temporary file this old is a dead write, not one in progress


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is racy)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a temporary file of an interrupted write (ours or the legacy mkstemp ones)."""
    name = Path(path).name
    return bool(_TEMP_RE.match(name) or _LEGACY_TEMP_RE.match(name))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: str | os.PathLike, min_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporary files that earlier, killed writes of ``path`` left beside it.

    Only those untouched for ``min_age_s`` seconds: a younger one may belong to a write of
    the same file still running in another process.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    now = time.time()
    stale = []
    for p in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            old = now - p.stat().st_mtime >= min_age_s
        except OSError:  # removed meanwhile
            continue
        if old and p.is_file() and _TEMP_RE.match(p.name):
            stale.append(p)
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write(path: str | os.PathLike, write, mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then publish it atomically.

    The temporary file is fsynced, chmod-ed to ``0o666 & ~umask`` and renamed over ``path``;
    the folder is fsynced. On any error (including the one ``write`` raises) the temporary
    file is removed and the error re-raised, so no partial file is ever left under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), "wb")


def atomic_savez(path: str | os.PathLike, **arrays) -> Path:
    """``np.savez`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Make sure a file can be written at ``path`` (folder created if needed), before the work
    that produces it starts. Raises ValueError naming the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(
            f"cannot write the {what} {path}: {exc.strerror or exc} in {path.parent}; "
            "choose a writable location"
        ) from None
    return path


# Errors a damaged npz raises from np.load or when an array is read.
NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError)


def read_npz(path: str | os.PathLike, what: str, fix: str) -> dict:
    """All arrays of an npz file, loaded without pickle.

    Raises FileNotFoundError for a missing file and ValueError naming the file, saying that
    it is damaged (truncated download, interrupted copy) and how to get a good one (``fix``),
    for a file numpy cannot read; object arrays (which need pickle) are refused with a hint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise ValueError(
            f"{path}: {what} is damaged or not an .npz file (no zip signature at the start); "
            f"{fix}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise ValueError(f"{path}: {what} is damaged ({exc}); {fix}") from None
        raise ValueError(
            f"{path}: cannot read without pickle ({exc}); re-save the string arrays "
            "(imgname, ...) with a unicode dtype, e.g. np.asarray(names, dtype=str)"
        ) from None
    except NPZ_ERRORS as exc:
        raise ValueError(
            f"{path}: {what} is damaged ({type(exc).__name__}: {exc}); {fix}"
        ) from None

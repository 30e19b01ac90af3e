"""Files, written so that nothing half-written is ever left behind, and the one JSON reader.

Every file or directory glassformer writes goes to a temporary sibling first and
is renamed into place (a rename within one directory is atomic), so an
interrupted write leaves either the old content or the new, never a mix.
Written files and directories get the modes any other file would get under the
user's umask (a temporary file from ``tempfile`` would otherwise keep 0600/0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import GlassformerError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _give_default_modes(path: Path) -> None:
    """chmod ``path`` (and, for a directory, everything under it) as if created normally."""
    mask = _umask()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:                      # some file systems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def write_atomically(path: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Create directory ``path`` by calling ``fill(tmp_dir)`` on a temporary sibling, flushing it to
    the disk and renaming it (an existing directory of that name is replaced only once the new one
    is complete; until the old one is deleted it waits in ``.NAME.old-*/x``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
        _give_default_modes(tmp)
        _fsync_tree(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            _fsync(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_file_atomically(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Create file ``path`` by calling ``write(f)`` on a temporary sibling opened for binary writing,
    flushing it to the disk and renaming it into place: ``path`` holds the whole new content or is
    left as it was.  (A matplotlib figure: ``lambda f: fig.savefig(f, format="png")``.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _give_default_modes(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write a binary file via a temporary sibling and a rename (never half-written)."""
    return write_file_atomically(path, lambda f: f.write(data))


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file via a temporary sibling and a rename (never half-written)."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def read_json(path: str | Path, *, what: str = "file", error: type[GlassformerError] = GlassformerError) -> Any:
    """The content of a UTF-8 JSON file.  A missing file or one that is not valid JSON raises
    ``error`` (a :class:`GlassformerError` subclass) with one line naming ``what`` and the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory; expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON ({e})") from None


__all__ = ["write_atomically", "write_file_atomically", "write_bytes_atomically", "write_text_atomically", "read_json"]

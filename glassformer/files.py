"""Files, written so that nothing half-written is ever left behind, and the one JSON reader.

Every file or directory glassformer writes goes to a temporary sibling first and
is renamed into place (a rename within one directory is atomic), so an
interrupted write leaves either the old content or the new, never a mix.
Written files and directories get the modes any other file would get under the
user's umask (a temporary file from ``tempfile`` would otherwise keep 0600/0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import ConfigError, GlassformerError


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
    is complete; until the old one is deleted it waits in ``.NAME.old-*/x``).  A folder that cannot
    be written is a :class:`ConfigError` naming ``path``, never the temporary sibling."""
    path = Path(path)
    tmp = Path(_create_beside(path, lambda prefix: tempfile.mkdtemp(prefix=prefix, dir=path.parent)))
    try:
        with _naming(path, tmp):
            fill(tmp)
            _give_default_modes(tmp)
            _fsync_tree(tmp)
        if path.exists():
            _replace_keeping_the_old(path, tmp)
        else:
            with _naming(path, tmp):
                os.replace(tmp, path)
            _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace_keeping_the_old(path: Path, new: Path) -> None:
    """Rename ``new`` to ``path``, moving the old ``path`` aside to ``.NAME.old-*/x`` first and deleting
    it once the new one is in place.  If a rename fails, the old one is put back and nothing is left
    beside it."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    try:
        with _naming(path, old):
            os.replace(path, old / "x")
            try:
                os.replace(new, path)
            except BaseException:
                os.replace(old / "x", path)
                raise
    except BaseException:
        with contextlib.suppress(OSError):
            old.rmdir()                  # only ever empty here: the old content is back at ``path``
        raise
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_file_atomically(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Create file ``path`` by calling ``write(f)`` on a temporary sibling opened for binary writing,
    flushing it to the disk and renaming it into place: ``path`` holds the whole new content or is
    left as it was.  (A matplotlib figure: ``lambda f: fig.savefig(f, format="png")``.)  A path that
    cannot be written (a directory, a folder that is missing or read-only) is a :class:`ConfigError`
    naming ``path``, never the temporary sibling."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory; give a file name")
    fd, tmp = _create_beside(path, lambda prefix: tempfile.mkstemp(prefix=prefix, dir=path.parent))
    try:
        with _naming(path, Path(tmp)):
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


def _create_beside(path: Path, create: Callable[[str], Any]) -> Any:
    """``create(prefix)`` a temporary ``.NAME.tmp-*`` sibling of ``path``, creating the folder first."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return create(f".{path.name}.tmp-")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {_why_not_writable(path.parent, e)}") from None


def _why_not_writable(folder: Path, e: OSError) -> str:
    for parent in [folder, *folder.parents]:         # the nearest folder that exists says what is wrong
        if parent.exists() or parent.is_symlink():
            break
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if parent != folder:
        return f"its folder {folder} does not exist and cannot be created in {parent} ({e.strerror})"
    if isinstance(e, PermissionError) or not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return f"the folder {folder} does not take new files ({e.strerror})"


@contextlib.contextmanager
def _naming(path: Path, tmp: Path):
    """Turn a file-system error about the temporary ``tmp`` (or with no file name: a full disk) into a
    :class:`ConfigError` about ``path``, the name the user gave."""
    try:
        yield
    except OSError as e:
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        if names and not any(n == str(path) or n.startswith(str(tmp)) for n in names):
            raise                                   # about another file (one ``fill`` reads): its own name says it
        raise ConfigError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write a binary file via a temporary sibling and a rename (never half-written)."""
    return write_file_atomically(path, lambda f: f.write(data))


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file via a temporary sibling and a rename (never half-written)."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def why_unreadable(path: str | Path, *, folder: bool = False) -> str | None:
    """What keeps ``path`` from being read as a regular file (a folder with ``folder=True``), in words
    that follow its name ("does not exist", "is a directory" ...), or None if it can be read."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if folder and not path.is_dir():
        return "is a file, not a folder" if path.is_file() else "is not a folder"
    if not folder and path.is_dir():
        return "is a directory, not a file"
    if not folder and not path.is_file():
        return "is not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return "cannot be read (permission denied)"
    return None


def read_json(path: str | Path, *, what: str = "file", error: type[GlassformerError] = GlassformerError) -> Any:
    """The content of a UTF-8 JSON file.  A missing or unreadable file or one that is not valid JSON
    raises ``error`` (a :class:`GlassformerError` subclass) with one line naming ``what`` and the path."""
    path = Path(path)
    if why := why_unreadable(path):
        raise error(f"{what} {path} {why}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or type(e).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON ({e})") from None


__all__ = ["write_atomically", "write_file_atomically", "write_bytes_atomically", "write_text_atomically", "read_json",
           "why_unreadable"]

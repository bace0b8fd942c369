"""Where an export lands: written beside its folder, moved into place only when complete.

An export never writes into ``out`` directly. It writes into a sibling,
``<out>.partial``, which holds a marker file (``EXPORT_INCOMPLETE``) from its
first moment, and only when the manifest is written does the marker go and
the folder move to ``out`` (a rename, so a finished export appears at once).
A crash or ``kill -9`` leaves ``<out>.partial`` with its marker: anyone can see
it is an interrupted export, and the next export to ``out`` replaces it
without ``--force``. An error the export can catch (a full disk, a refused
query) removes the partial folder, so nothing half-written is left behind.

``force`` replaces only what an export made: a folder holding a manifest and
exactly the files it lists (or an interrupted export). Anything else -
another file, a ``.git`` folder, a database - makes the export refuse, with or
without ``force``; the files of a database being exported are never inside
what is replaced. An empty folder is always fine.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from temporal.errors import ExportError
from temporal.manifest import MANIFEST_NAME
from temporal.signing import SIGNATURE_NAME

MARKER = "EXPORT_INCOMPLETE"
PARTIAL_SUFFIX = ".partial"
_MARKER_TEXT = ("This folder is an export that did not finish (it was interrupted, or is "
                "still being written). It holds no valid manifest. Run the export again to "
                "replace it; --force is not needed.\n")


def os_error(error: OSError, path: Path | str | None = None) -> ExportError:
    """One clear line for an operating-system error on output."""
    where = error.filename if error.filename is not None else path
    reason = error.strerror or type(error).__name__
    hint = {errno.ENOSPC: " (the disk is full)", errno.EROFS: " (read-only file system)",
            errno.EACCES: " (permission denied)", errno.EDQUOT: " (disk quota exceeded)",
            errno.EFBIG: " (a file grew past the size this process may write)"}.get(
                error.errno or 0, "")
    if hint and reason.lower() in hint:
        hint = ""
    return ExportError(f"cannot write the export at {where}: {reason}{hint}; "
                       "nothing was left behind")


def _kind(folder: Path, partial: bool = False) -> str:
    """``missing``, ``empty``, ``interrupted``, ``export`` or ``other``.

    Only a ``.partial`` folder can be ``interrupted``: the marker never reaches
    ``out`` (it goes before the move), so in any other folder it is a file like
    any other, and a stray one must not make a user's folder replaceable.
    """
    if not folder.exists() and not folder.is_symlink():
        return "missing"
    if folder.is_symlink() or not folder.is_dir():
        return "other"
    entries = list(folder.iterdir())
    if not entries:
        return "empty"
    if partial and (folder / MARKER).is_file() and not (folder / MARKER).is_symlink():
        return "interrupted"
    return "export" if _is_export(folder) else "other"


def _is_export(folder: Path) -> bool:
    """A manifest and exactly the files it lists (plus their folders)."""
    try:
        body = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        listed = {Path(f["path"]) for f in body["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if any(p.is_absolute() or ".." in p.parts for p in listed):
        return False
    known = {Path(MANIFEST_NAME), Path(SIGNATURE_NAME), Path(f".{MANIFEST_NAME}.tmp"), *listed}
    parents = {parent for p in listed for parent in p.parents if parent != Path(".")}
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root).relative_to(folder)
        for name in dirs:
            if (Path(root) / name).is_symlink() or here / name not in parents:
                return False
        if any(here / name not in known for name in files):
            return False
    return True


def _contents(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return shown


def check(out: Path, force: bool, protect: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an ``out`` the export may not replace."""
    where = _absolute(out)
    for path in protect:
        target = _absolute(path)
        if target == where or where in target.parents:
            raise ExportError(f"{out} holds the database being exported ({path}); an export "
                              "never replaces it: choose another directory")
    kind = _kind(out)
    if kind == "other":
        if out.is_symlink():
            raise ExportError(f"{out} is a symbolic link; give the real directory")
        if not out.is_dir():
            raise ExportError(f"{out} exists and is not a directory")
        raise ExportError(f"{out} is not empty and is not a temporal export (it holds "
                          f"{_contents(out)}); an export replaces only a previous export, even "
                          "with --force: choose a new or empty directory")
    if kind == "export" and not force:
        raise ExportError(f"{out} holds a previous export; pass --force to replace it, or "
                          "choose another directory")


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


@contextmanager
def staging(out: Path, force: bool, protect: Sequence[Path] = ()) -> Iterator[Path]:
    """A fresh ``<out>.partial`` folder to write into; on success it becomes ``out``.

    An exception inside the block removes the partial folder (a kill cannot, and
    leaves the marker). Holding an exclusive lock on the marker keeps two
    exports from sharing one partial folder.
    """
    check(out, force, protect)
    out = _absolute(out)  # so that "." has a name and a parent
    partial = out.parent / (out.name + PARTIAL_SUFFIX)
    for ancestor in (out.parent, *out.parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ExportError(f"cannot write the export at {out}: {ancestor} is not a "
                                  "directory")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = _claim(partial, out)
    except OSError as error:
        raise os_error(error, partial) from None
    try:
        yield partial
        check(out, force, protect)  # the folder may have changed while we wrote
        (partial / MARKER).unlink()
        _move_into_place(partial, out)
    except OSError as error:
        _remove(partial)
        raise os_error(error) from None
    except BaseException:
        _remove(partial)
        raise
    finally:
        lock.close()


def _claim(partial: Path, out: Path) -> IO[str]:
    if partial.exists() or partial.is_symlink():
        kind = _kind(partial, partial=True)
        if kind not in ("interrupted", "export", "empty"):
            raise ExportError(f"{partial} is in the way (an export writes there first) and "
                              "is not an interrupted export; move it away")
        if kind == "interrupted":
            with open(partial / MARKER, encoding="utf-8") as held:
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ExportError(f"another export to {out} is running") from None
        shutil.rmtree(partial)
    partial.mkdir()
    lock = open(partial / MARKER, "w", encoding="utf-8")  # noqa: SIM115 - held until done
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(_MARKER_TEXT)
    lock.flush()
    return lock


def _move_into_place(partial: Path, out: Path) -> None:
    kind = _kind(out)
    if kind in ("missing", "empty"):
        os.replace(partial, out)  # rename(2) replaces an empty directory
        return
    old = out.parent / f".{out.name}.replaced"
    if old.exists() or old.is_symlink():
        if _kind(old) not in ("export", "empty"):
            raise ExportError(f"{old} is in the way (an export moves the one it replaces "
                              "there) and is not an export; move it away")
        shutil.rmtree(old)
    os.rename(out, old)
    os.rename(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def _remove(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)

"""Atomic writes: readers never see a half-written file or sample directory, even after a crash.

Work in progress lives in hidden ``.<name>.<pid>-<random>.partial`` folders next to its final place. An exception,
Ctrl-C, or SIGTERM inside ``sigterm_as_interrupt`` removes it; what a SIGKILL or a power cut leaves is removed by
the next run of the same writer (``sweep_partials``: only folders of processes that no longer run)."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# a partial folder of an older frameplan has no pid in its name; it is stale once untouched this long
LEGACY_PARTIAL_AGE_S = 3600.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to ``final``, on error remove it.

    Temporary names start with '.' and end with '.partial' so readers skip them."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name tells a later sweep_partials whether the writer still runs
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            # a unique name: a '.old' left behind by an interrupted overwrite must not block this one
            old = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old")
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)  # put the previous version back rather than leave nothing
                raise
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    old.unlink()
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_partial(path: str | Path) -> bool:
    name = Path(path).name
    return name.startswith(".") and (name.endswith(".partial") or name.endswith(".tmp") or name.endswith(".old"))


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: someone else's process, alive
        return exc.errno == errno.EPERM
    return True


def sweep_partials(folder: str | Path, name_pattern: str) -> list[Path]:
    """Remove the stale ``.partial``/``.old`` folders that ``atomic_dir`` left in ``folder`` for final names
    matching the regular expression ``name_pattern`` (only those: another writer's work is never touched).

    Stale means its writer (the pid in its name, on this machine) no longer runs; a folder from an older
    frameplan (no pid in the name) counts as stale when untouched for LEGACY_PARTIAL_AGE_S. Returns the removed
    folders. Why: a SIGKILL, a power cut or a full disk gives the writer no chance to clean up, and a rerun
    skips finished work only, so hidden leftovers (100+ MB per episode) would pile up."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pat = re.compile(rf"\.(?:{name_pattern})\.(?:(\d+)-)?[A-Za-z0-9_]+\.(?:partial|old)")
    removed = []
    now = time.time()
    for entry in folder.iterdir():
        m = pat.fullmatch(entry.name)
        if m is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = m.group(1)
        try:
            stale = (not _pid_running(int(pid))) if pid else now - entry.stat().st_mtime > LEGACY_PARTIAL_AGE_S
        except OSError:  # gone meanwhile
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        log.info("removed %d unfinished folder(s) left by an interrupted run in %s (e.g. %s)", len(removed),
                 folder, removed[0].name)
    return removed


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs (``sigterm_as_interrupt``)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside this block SIGTERM raises ``Terminated`` in the main thread, as SIGINT raises KeyboardInterrupt.

    Why: Python's default SIGTERM action ends the process at once, so ``finally`` blocks never run: the atomic
    writers' hidden work folders stay behind and worker processes keep running. A second SIGTERM during the
    clean-up is ignored. Does nothing outside the main thread (signal handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_output_file(path: str | Path, where: str) -> Path:
    """Refuse an output file path that cannot be written (a folder, or no writable folder to put it in) before
    the work that produces it runs. Creates nothing; ConfigError naming ``where``."""
    from frameplan_core.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{where} {path}: is a folder; give a file name")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the missing folders are created when writing
    if not parent.is_dir():
        raise ConfigError(f"{where} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} {path}: no permission to write in {parent}")
    return path

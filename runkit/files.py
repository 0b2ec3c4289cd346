"""Writing files so that a crash or Ctrl-C never leaves half of one behind, and so that
processes sharing a folder take turns."""
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"
logger = logging.getLogger("pulse")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The names atomic_path gives its temporary files: `.<name>.<8 random characters of mkstemp>.tmp<suffix>`.
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.\w+)?")


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it into place, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:  # from the file's creation on: a Ctrl-C while it is set up leaves nothing either
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; results should not be
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder):
    """Delete the temporary files that a killed process of ours left in `folder` (and below it).
    Only names of atomic_path's pattern are touched; returns how many were removed."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if TEMPORARY_NAME.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def make_folders(folder):
    """Create `folder` and its missing parents; returns those it created, outermost first."""
    folder = Path(folder)
    missing = [f for f in [folder, *folder.parents] if not f.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty_folders(folders):
    """Remove the folders make_folders created, innermost first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): it, and the folders around it, stay
            return


def stem_clashes(paths):
    """'a.jpg and a.png' for every group of files that share a stem: outputs named by stem would clash."""
    by_stem = defaultdict(list)
    for path in paths:
        by_stem[Path(path).stem].append(Path(path).name)
    return [" and ".join(names) for names in by_stem.values() if len(names) > 1]


def save_image(image, path, **options):
    """Save a PIL image atomically; the format follows the file name (PNG, GIF, ...), `options` are
    its writer's (compress_level for PNG)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG"), **options)


def file_digest(path, algorithm):
    """The hex digest of the file at `path` by hashlib's `algorithm` ("md5", "sha256"), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path):
    return file_digest(path, "md5")


def _try_lock(handle):
    try:
        if fcntl:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


@contextmanager
def folder_lock(folder, poll_seconds=0.5):
    """Hold `<folder>/.lock` exclusively, so that one process at a time prepares what is in `folder`.

    Another process (a second shell, another rank of a multi-GPU job) waits here, saying so,
    and then finds the finished files. The lock is the operating system's (flock, or a locked
    byte on Windows), so it ends with its process: a crash never leaves the folder locked.
    A lock file deleted while a process waited on it (`preparing` deletes the one it made) is
    not held: the waiter locks the file now at the path instead.
    """
    folder = Path(folder)
    waiting = f"waiting for another process that is preparing {folder}/ (it holds {folder / LOCK_NAME})"
    handle = None
    while handle is None:
        folder.mkdir(parents=True, exist_ok=True)
        handle = _lock_file(folder / LOCK_NAME, waiting, poll_seconds)
        waiting = None  # a second try waits without saying so again
    with handle:
        try:
            yield
        finally:
            _unlock(handle)


def _lock_file(path, waiting, poll_seconds):
    """`path` opened and locked by this process (logging `waiting`, unless None, if it has to wait),
    or None when the file was deleted (with its folder, maybe) before this process got the lock."""
    try:
        handle = open(path, "a+b")
    except FileNotFoundError:  # the folder went between making it and opening the file
        return None
    handle.seek(0)
    if not _try_lock(handle):
        if waiting:
            logger.info(waiting)
        while not _try_lock(handle):
            time.sleep(poll_seconds)
    if _is_file_at(handle, path):
        return handle
    _unlock(handle)
    handle.close()
    return None


def _unlock(handle):
    if not fcntl:  # flock ends with the file; Windows wants the byte unlocked first
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def _is_file_at(handle, path):
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def preparing(folder, inside=None):
    """folder_lock(folder) around writing into `folder` (or into its subfolder `inside`), leaving the
    disk as it was found when the writing fails: the lock file goes again if this made it, and so
    does each folder this made that is left empty."""
    folder = Path(folder)
    target = Path(inside) if inside else folder
    made = [path for path in (target, *target.parents) if not path.exists()]  # deepest first
    lock_made = not (folder / LOCK_NAME).exists()
    try:
        with folder_lock(folder):
            try:
                yield
            except BaseException:
                if lock_made:
                    with suppress(OSError):  # Windows keeps an open file
                        (folder / LOCK_NAME).unlink(missing_ok=True)
                raise
    except BaseException:
        for path in made:
            try:
                path.rmdir()
            except OSError:  # not empty (a partial download kept for resuming, say), or gone
                break
        raise

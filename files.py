"""Writing files so that a crash or Ctrl-C never leaves half of one behind."""
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; results should not be
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder):
    """Delete the temporary files that a killed process of ours left in `folder` (and below it).
    Only names of atomic_path's pattern are touched; returns how many were removed."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if TEMPORARY_NAME.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def save_image(image, path):
    """Save a PIL image atomically; the format follows the file name (PNG, GIF, ...)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG"))


def append_line(path, line):
    """Append one text line in a single write, so concurrent readers never see half of it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())

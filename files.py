"""Writing files so that a crash or Ctrl-C never leaves half of one behind."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def save_image(image, path):
    """Save a PIL image atomically; the format follows the file name (PNG, GIF, ...)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG"))


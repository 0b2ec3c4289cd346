import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))


@pytest.fixture
def fixtures():
    return FIXTURES


def load_fixture(name):
    import torch
    return torch.load(FIXTURES / name, map_location="cpu", weights_only=True)


TINY_MODEL = FIXTURES / "tiny_model"
TINY_INPUT = FIXTURES / "tiny_input" / "target.png"


class FakeResponse:
    """Just enough of a streamed `requests` response to test downloads offline."""

    def __init__(self, body, content_type="application/octet-stream"):
        self.body, self.headers = body, {"Content-Type": content_type, "Content-Length": str(len(body))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        pass

    def iter_content(self, chunk_size):
        stream = io.BytesIO(self.body)
        return iter(lambda: stream.read(chunk_size), b"")

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

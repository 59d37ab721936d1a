import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

from gptbook.model import GPT, GPTConfig  # noqa: E402


@pytest.fixture
def tiny_config():
    """Small for testing efficiency: every model test runs in milliseconds."""
    return GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def tiny_model(tiny_config):
    """A randomly initialised GPT of tiny_config in eval mode (seeded by _seed: the same weights each test)."""
    return GPT(tiny_config).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(session, config, items):
    """The real-browser test (marker `browser`) last: its chapter 04 loads the models that chapter 03
    trains and caches, and `make test` runs the chapters under nbval after tests/, so on a clean clone
    they are cached by then (the order of every other test is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)

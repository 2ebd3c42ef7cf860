import os

# Nothing in the test suite may reach the hub; fail fast if anything tries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TINY = "tiny"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The 2-layer random Llama with the default tokenizer (made once per cache)."""
    from textgym.models import ensure_tiny_model

    ensure_tiny_model()
    return TINY

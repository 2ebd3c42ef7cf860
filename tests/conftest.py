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


def require_engine(distribution: str):
    """Import-check an engine for a test module: skip without it, unless CI requires it.

    ``TEXTGYM_REQUIRE_ENGINES`` (comma-separated distributions, or ``all``) turns the skip
    into a failure, so a CI run without the engine cannot pass by skipping its tests.
    """
    from textgym.integrations import EngineVersionError
    from textgym.integrations import require_engine as check

    try:
        return check(distribution)
    except EngineVersionError as error:
        required = {name.strip() for name in os.environ.get("TEXTGYM_REQUIRE_ENGINES", "").split(",")}
        if distribution in required or "all" in required:
            pytest.fail(f"{distribution} is required here (TEXTGYM_REQUIRE_ENGINES): {error}", pytrace=False)
        pytest.skip(str(error), allow_module_level=True)

import importlib.util
import os
import sys
from pathlib import Path

# Nothing in the test suite may reach the hub; fail fast if anything tries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray (tests/test_ray.py) binds every node, the driver and the cluster address to 127.0.0.1; read when ray is imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

# Property tests draw the same examples on every run ("ci", the default), so a failure reproduces and
# CI time is stable; `pytest --hypothesis-profile=explore` draws fresh examples and remembers failures
# in .hypothesis/. Each test sets its own max_examples to keep its time in check.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile("ci")

TINY = "tiny"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The 2-layer random Llama with the default tokenizer (made once per cache)."""
    from textgym.models import ensure_tiny_model

    ensure_tiny_model()
    return TINY


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium for the leaderboard's browser tests (CI requires one: TEXTGYM_REQUIRE_CHROMIUM=1)."""
    from leaderboard_support import find_chromium

    path = find_chromium()
    if path:
        return path
    if os.environ.get("TEXTGYM_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is missing: run .ci/install-chromium.sh first")
    pytest.skip("chromium is not installed (bash .ci/install-chromium.sh; CI sets TEXTGYM_REQUIRE_CHROMIUM=1)")


@pytest.fixture(scope="session")
def quick_track():
    """``benchmarks/quick_track.py`` imported as a module (``benchmarks/`` holds scripts, not a package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "quick_track.py"
    spec = importlib.util.spec_from_file_location("quick_track", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["quick_track"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module

"""Engine checks for test modules: ``from engine_check import require_engine`` at the top of an adapter's tests."""

import os

import pytest


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

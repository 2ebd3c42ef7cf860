"""Doctest collection: an engine adapter's module imports its engine, so it is collected only where that engine is.

The adapters' own test modules (tests/test_integration_*.py) skip or, with
``TEXTGYM_REQUIRE_ENGINES``, fail when their engine is missing; see tests/conftest.py.
"""

from textgym.integrations import EngineVersionError, require_engine

collect_ignore = []
for module, distribution in (("trl.py", "trl"), ("skyrl.py", "skyrl-gym"), ("verl.py", "verl")):
    try:
        require_engine(distribution)
    except EngineVersionError:
        collect_ignore.append(f"textgym/integrations/{module}")

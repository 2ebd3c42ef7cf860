"""The env docs are generated from the registry and docstrings, and checked in up to date."""

import gymnasium as gym

import textgym
from textgym.docs import render_pages, stale_pages

SECTIONS = (
    "Description",
    "Action Space",
    "Observation Space",
    "Rewards",
    "Starting State",
    "Episode End",
    "Arguments",
    "Version History",
)


def test_checked_in_pages_are_current():
    assert stale_pages() == [], "run: python -m textgym.docs"


def test_every_id_is_documented_with_gymnasium_sections():
    pages = render_pages()
    for env_id in textgym.env_ids():
        (page,) = [text for name, text in pages.items() if name != "index.md" and f"`{env_id}`" in text]
        for section in SECTIONS:
            assert f"## {section}" in page, (env_id, section)
        assert f"`{env_id}`" in pages["index.md"]
        assert gym.spec(env_id).entry_point in page

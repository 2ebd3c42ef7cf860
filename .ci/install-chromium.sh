#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for the leaderboard's real-browser
# test, tests/test_leaderboard.py::test_page_in_headless_chromium. Does nothing when a
# Chromium is already on PATH. Needs root (or sudo) and the Debian package mirrors.
#
#   bash .ci/install-chromium.sh && TEXTGYM_REQUIRE_CHROMIUM=1 .venv/bin/python -m pytest
#
# With TEXTGYM_REQUIRE_CHROMIUM=1 the test fails, rather than skips, when Chromium is missing.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "install-chromium: $(command -v "$name") is already installed"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here; install Chromium with your package manager" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq chromium
chromium --version

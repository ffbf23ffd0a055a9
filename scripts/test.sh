#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (arguments are passed to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check esgz tests bench scripts
.venv/bin/ruff format --check esgz tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

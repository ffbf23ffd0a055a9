#!/usr/bin/env bash
# Install esgz, build a small sample image from local Debian packages, convert it to
# eStargz in an OCI image layout, and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${ESGZ_QUICKSTART_DIR:-/tmp/esgz-quickstart}
mkdir -p "$work"
echo
echo "== building a sample image (busybox + python3.11 from this machine's Debian packages)"
src=$(.venv/bin/python -m tests.fixtures.images python "$work/source")
echo "   $src"
dst="local://$work/converted:latest"

echo
echo "== esgz convert $src $dst"
.venv/bin/esgz convert --no-cache "$src" "$dst"

echo
echo "== esgz inspect $dst"
.venv/bin/esgz inspect "$dst"

echo
echo "== esgz verify $dst"
.venv/bin/esgz verify "$dst"
echo
echo "The eStargz image is in $work/converted (an OCI image layout)."

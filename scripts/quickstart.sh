#!/usr/bin/env bash
# Install esgz, build a small sample image from local Debian packages, convert it to
# eStargz in an OCI image layout, optimize it for its workload (python3 -c "import json",
# run in a runc container), and show the results.
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
opt="local://$work/optimized:latest"

echo
echo "== esgz convert $src $dst"
.venv/bin/esgz convert --no-cache "$src" "$dst"

echo
echo "== esgz optimize $src $opt   (runs the image's workload and records what it reads)"
.venv/bin/esgz optimize --oci --no-cache "$src" "$opt"

echo
echo "== esgz inspect $opt"
.venv/bin/esgz inspect "$opt"

echo
echo "== esgz verify $opt"
.venv/bin/esgz verify "$opt"
echo
echo "The eStargz images are in $work/converted and $work/optimized (OCI image layouts)."

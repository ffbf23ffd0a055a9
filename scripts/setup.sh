#!/usr/bin/env bash
# Install what esgz and its tests need on Debian 12 (run as root); idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the real components the tests run against (registry, runtime,
# reference reader/converter, independent client) and the tools that build fixtures.
APT_PACKAGES=(
    ca-certificates openssl apache2-utils iproute2 iptables
    docker-registry skopeo
    runc crun containernetworking-plugins
    golang-go golang-github-containerd-stargz-snapshotter-dev
    stargz-snapshotter containerd
    busybox-static debootstrap
    qemu-user-static  # arm64 workloads under emulation (the tests register it in binfmt_misc)
    tmux  # the test of the live progress display in a real terminal
    redis-server  # the broker of the distributed tests (esgz worker, esgz run --broker)
)

# The multi-arch test images are built from Debian's arm64 packages (apt-get download).
FOREIGN_ARCHES=(arm64)
for arch in "${FOREIGN_ARCHES[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        echo "setup: adding the dpkg architecture $arch"
        dpkg --add-architecture "$arch"
    fi
    if ! apt-cache show "busybox-static:$arch" >/dev/null 2>&1; then
        apt-get update -qq  # the package lists of the new architecture
    fi
done

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Packaged daemons must not run on their own: the tests start their own instances.
for svc in docker-registry containerd stargz-snapshotter redis-server; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import esgz' # fail here, not in the tests, if the install broke
echo "setup: done"

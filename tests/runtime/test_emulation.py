"""binfmt_misc detection: which platforms run here natively, emulated, or not at all.

Handler files are written in the kernel's format into a temporary directory for the
cases a host rarely has (no F flag, disabled, not mounted); the real
``/proc/sys/fs/binfmt_misc`` is read after qemu-user-static is registered.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from esgz.oci.platform import parse_platform
from esgz.runtime.emulation import (
    BinfmtHandler,
    elf_header,
    emulator_name,
    platform_support,
    read_binfmt,
)
from tests.fixtures.multiarch import BINFMT, debian_root, register_qemu

AMD64 = parse_platform("linux/amd64")
ARM64 = parse_platform("linux/arm64")

# /proc/sys/fs/binfmt_misc/qemu-aarch64 as Debian's qemu-user-static registers it
_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: {flags}
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def _binfmt(tmp_path: Path, *, flags: str = "POF", enabled: bool = True) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir()
    (root / "status").write_text("enabled\n")
    (root / "register").write_text("")
    text = _AARCH64.format(flags=flags)
    (root / "qemu-aarch64").write_text(text if enabled else text.replace("enabled", "disabled"))
    (root / "python3.11").write_text("enabled\ninterpreter /usr/bin/python3.11\nflags: \n"
                                     "extension .pyc\n")  # fmt: skip
    return root


def test_parses_handlers_and_skips_extension_ones(tmp_path: Path) -> None:
    status = read_binfmt(_binfmt(tmp_path))
    assert status.mounted
    assert status.enabled
    (handler,) = status.handlers
    assert handler == BinfmtHandler(
        name="qemu-aarch64",
        enabled=True,
        interpreter="/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
        flags="POF",
        offset=0,
        magic=bytes.fromhex("7f454c460201010000000000000000000200b700"),
        mask=bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff"),
    )
    assert handler.fix_binary
    arm64 = elf_header(ARM64)
    assert arm64 is not None
    assert handler.matches(arm64)
    amd64 = elf_header(AMD64)
    assert amd64 is not None
    assert not handler.matches(amd64)


def test_real_arm64_binary_header_matches(tmp_path: Path) -> None:
    """The synthetic header agrees with a real arm64 ELF file on what the mask keeps."""
    busybox = debian_root("arm64", ["busybox-static"]) / "bin" / "busybox"
    real = busybox.read_bytes()[:64]
    (handler,) = read_binfmt(_binfmt(tmp_path)).handlers
    assert handler.matches(real)
    synthetic = elf_header(ARM64)
    assert synthetic is not None
    masked = [a & m for a, m in zip(synthetic[:20], handler.mask, strict=True)]
    assert masked == [a & m for a, m in zip(real[:20], handler.mask, strict=True)]


def test_native_emulated_and_unavailable(tmp_path: Path) -> None:
    binfmt = read_binfmt(_binfmt(tmp_path))
    assert platform_support(AMD64, binfmt=binfmt, host=AMD64).mode == "native"
    emulated = platform_support(ARM64, binfmt=binfmt, host=AMD64)
    assert (emulated.mode, emulated.handler) == ("emulated", "qemu-aarch64")
    assert emulated.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    missing = platform_support(parse_platform("linux/s390x"), binfmt=binfmt, host=AMD64)
    assert (missing.mode, missing.handler) == ("unavailable", "qemu-s390x")
    assert missing.reason == (
        "no binfmt_misc handler for s390x is registered (such as qemu-s390x from qemu-user-static)"
    )
    disabled = platform_support(ARM64, emulation=False, binfmt=binfmt, host=AMD64)
    assert (disabled.mode, disabled.reason) == ("unavailable", "emulation is disabled")
    windows = platform_support(parse_platform("windows/amd64"), binfmt=binfmt, host=AMD64)
    assert windows.mode == "unavailable"


def test_handler_without_f_flag_is_not_usable_in_a_container(tmp_path: Path) -> None:
    found = platform_support(ARM64, binfmt=read_binfmt(_binfmt(tmp_path, flags="P")), host=AMD64)
    assert found.mode == "unavailable"
    assert found.reason is not None
    assert "lacks the F flag" in found.reason
    assert found.handler == "qemu-aarch64"


def test_disabled_handler_and_unmounted_binfmt(tmp_path: Path) -> None:
    found = platform_support(
        ARM64, binfmt=read_binfmt(_binfmt(tmp_path, enabled=False)), host=AMD64
    )
    assert found.reason == "the binfmt_misc handler qemu-aarch64 is disabled"
    unmounted = read_binfmt(tmp_path / "nothing")
    assert not unmounted.mounted
    found = platform_support(ARM64, binfmt=unmounted, host=AMD64)
    assert found.mode == "unavailable"
    assert found.reason is not None
    assert "not mounted" in found.reason
    assert "qemu-aarch64" in found.reason


def test_emulator_names() -> None:
    names = {
        spec: emulator_name(parse_platform(spec))
        for spec in ("linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/riscv64")
    }
    assert names == {
        "linux/arm64": "qemu-aarch64",
        "linux/arm/v7": "qemu-arm",
        "linux/ppc64le": "qemu-ppc64le",
        "linux/s390x": "qemu-s390x",
        "linux/riscv64": "qemu-riscv64",
    }


@pytest.mark.root
def test_registered_qemu_handlers_are_detected() -> None:
    """Debian's qemu-user-static, registered as an admin would: each architecture emulated."""
    handlers = {
        "linux/arm64": "qemu-aarch64",
        "linux/arm/v7": "qemu-arm",
        "linux/ppc64le": "qemu-ppc64le",
        "linux/s390x": "qemu-s390x",
        "linux/riscv64": "qemu-riscv64",
    }
    register_qemu(handlers.values())
    status = read_binfmt(BINFMT)
    for spec, name in handlers.items():
        found = platform_support(parse_platform(spec), binfmt=status, host=AMD64)
        assert (found.mode, found.handler) == ("emulated", name), found


@pytest.mark.root
def test_handlers_serve_an_unprivileged_user_namespace() -> None:
    """binfmt_misc handlers are the kernel's: rootless profiling (a user namespace of an
    unprivileged user) runs arm64 binaries through them too."""
    register_qemu(["qemu-aarch64"])
    busybox = debian_root("arm64", ["busybox-static"]) / "bin" / "busybox"
    root = Path(tempfile.mkdtemp(prefix="esgz-emulation-"))
    try:
        root.chmod(0o755)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        command = [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *("unshare", "--user", "--map-root-user", "--mount"),
            *("chroot", str(root), "/bin/busybox", "uname", "-m"),
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "aarch64\n"

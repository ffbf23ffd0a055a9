"""Which platforms can run here: natively, or under a registered binfmt_misc emulator.

An image for another architecture runs on this host when the kernel's ``binfmt_misc``
has an enabled handler whose magic matches the image's ELF binaries — typically
Debian's ``qemu-user-static`` (``qemu-aarch64``, ``qemu-arm``, ``qemu-ppc64le``,
``qemu-s390x``, ``qemu-riscv64``, …). Inside a container the handler is only usable with
the ``F`` ("fix binary") flag: the kernel then opens the interpreter when the handler is
registered, so it need not exist in the container's rootfs.

esgz never registers or changes handlers (that is the administrator's job, see
docs/pipeline.md, "Profiling other platforms under emulation"); this module only reads
``/proc/sys/fs/binfmt_misc``:

* :func:`read_binfmt` — the registered handlers (:class:`BinfmtHandler`: enabled,
  interpreter, flags, offset, magic, mask) and the global status;
* :func:`elf_header` — a representative ELF header of an OCI architecture (class,
  byte order and machine), which a handler's magic/mask must match;
* :func:`platform_support` — how a platform's workload can run here
  (:class:`PlatformSupport`: ``native``, ``emulated`` with the handler, or
  ``unavailable`` with the reason and the handler that is missing).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from esgz.oci.platform import Platform, host_platform, normalize

__all__ = [
    "BINFMT_MISC",
    "BinfmtHandler",
    "BinfmtStatus",
    "ExecutionMode",
    "PlatformSupport",
    "elf_header",
    "emulator_name",
    "platform_support",
    "read_binfmt",
]

#: Where binfmt_misc is mounted.
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")

#: How a platform's workload runs: on this CPU, under an emulator, or not at all.
ExecutionMode = Literal["native", "emulated", "unavailable"]

# OCI architecture (normalised) → (ELF class: 1 = 32-bit, 2 = 64-bit, byte order:
# 1 = little, 2 = big endian, e_machine), and the name Debian's qemu-user-static gives
# its handler for it.
_ELF_IDS: dict[str, tuple[int, int, int]] = {
    "amd64": (2, 1, 62),
    "386": (1, 1, 3),
    "arm64": (2, 1, 183),
    "arm": (1, 1, 40),
    "ppc64le": (2, 1, 21),
    "ppc64": (2, 2, 21),
    "s390x": (2, 2, 22),
    "riscv64": (2, 1, 243),
    "mips64le": (2, 1, 8),
    "mips64": (2, 2, 8),
    "mipsle": (1, 1, 8),
    "mips": (1, 2, 8),
    "loong64": (2, 1, 258),
}
_QEMU_NAMES: dict[str, str] = {
    "amd64": "qemu-x86_64",
    "386": "qemu-i386",
    "arm64": "qemu-aarch64",
    "arm": "qemu-arm",
    "ppc64le": "qemu-ppc64le",
    "ppc64": "qemu-ppc64",
    "s390x": "qemu-s390x",
    "riscv64": "qemu-riscv64",
    "mips64le": "qemu-mips64el",
    "mips64": "qemu-mips64",
    "mipsle": "qemu-mipsel",
    "mips": "qemu-mips",
    "loong64": "qemu-loongarch64",
}


@dataclass(frozen=True, slots=True)
class BinfmtHandler:
    """One binfmt_misc entry (``/proc/sys/fs/binfmt_misc/<name>``) of the magic kind."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes

    @property
    def fix_binary(self) -> bool:
        """The ``F`` flag: the interpreter was opened at registration (usable in containers)."""
        return "F" in self.flags

    def matches(self, header: bytes) -> bool:
        """Whether a file starting with ``header`` would be run by this handler."""
        end = self.offset + len(self.magic)
        if len(header) < end:
            return False
        window = header[self.offset : end]
        return all(
            byte & mask == magic & mask
            for byte, magic, mask in zip(window, self.magic, self.mask, strict=True)
        )


@dataclass(frozen=True, slots=True)
class BinfmtStatus:
    """What binfmt_misc says: mounted, globally enabled, and its magic handlers."""

    mounted: bool
    enabled: bool
    handlers: tuple[BinfmtHandler, ...] = ()
    root: Path = BINFMT_MISC


def _parse_entry(name: str, text: str) -> BinfmtHandler | None:
    """A handler from its proc file, or None for an extension (``E``) handler."""
    enabled = False
    interpreter = flags = ""
    offset = 0
    magic: bytes | None = None
    mask: bytes | None = None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if line == "enabled":
            enabled = True
        elif key == "interpreter":
            interpreter = value
        elif key == "flags:":
            flags = value.strip()
        elif key == "offset":
            offset = int(value)
        elif key == "magic":
            magic = bytes.fromhex(value)
        elif key == "mask":
            mask = bytes.fromhex(value)
    if magic is None:
        return None
    return BinfmtHandler(
        name=name,
        enabled=enabled,
        interpreter=interpreter,
        flags=flags,
        offset=offset,
        magic=magic,
        mask=mask if mask is not None and len(mask) == len(magic) else b"\xff" * len(magic),
    )


def read_binfmt(root: Path = BINFMT_MISC) -> BinfmtStatus:
    """The handlers registered in the binfmt_misc mounted at ``root``. Blocking."""
    status_file = root / "status"
    try:
        status = status_file.read_text().strip()
    except OSError:
        return BinfmtStatus(mounted=False, enabled=False, root=root)
    handlers = []
    for entry in sorted(root.iterdir()):
        if entry.name in ("status", "register"):
            continue
        try:
            handler = _parse_entry(entry.name, entry.read_text())
        except (OSError, ValueError):
            continue
        if handler is not None:
            handlers.append(handler)
    return BinfmtStatus(
        mounted=True, enabled=status == "enabled", handlers=tuple(handlers), root=root
    )


def elf_header(platform: Platform) -> bytes | None:
    """The first 64 bytes of an executable ELF file of ``platform``'s architecture.

    None if the architecture is not one esgz knows. The bytes beyond the identification,
    type and machine fields are zero.
    """
    ids = _ELF_IDS.get(normalize(platform).architecture)
    if ids is None:
        return None
    elf_class, order, machine = ids
    endian = "<" if order == 1 else ">"
    ident = b"\x7fELF" + bytes([elf_class, order, 1]) + bytes(9)
    return (ident + struct.pack(f"{endian}HHI", 2, machine, 1)).ljust(64, b"\0")


def emulator_name(platform: Platform) -> str:
    """The handler name Debian's qemu-user-static registers for ``platform``."""
    arch = normalize(platform).architecture
    return _QEMU_NAMES.get(arch, f"qemu-{arch}")


@dataclass(frozen=True, slots=True)
class PlatformSupport:
    """How the workload of one platform can run on this host.

    ``mode``: ``native``, ``emulated`` (by ``handler``, whose ``interpreter`` the kernel
    runs) or ``unavailable``; then ``reason`` says why and ``handler`` names the handler
    that would be needed.
    """

    platform: str
    mode: ExecutionMode
    handler: str | None = None
    interpreter: str | None = None
    reason: str | None = None
    flags: str = field(default="", compare=False)

    @property
    def runs(self) -> bool:
        """Whether the workload can run (natively or emulated)."""
        return self.mode != "unavailable"


def platform_support(
    platform: Platform,
    *,
    emulation: bool = True,
    binfmt: BinfmtStatus | None = None,
    host: Platform | None = None,
) -> PlatformSupport:
    """How the workload of ``platform`` can run here. Blocking (reads binfmt_misc).

    Native if it is the host platform (os, architecture, variant); otherwise, with
    ``emulation``, under the first enabled binfmt_misc handler with the ``F`` flag whose
    magic matches the architecture's ELF header (:func:`elf_header`).
    """
    wanted = normalize(platform)
    host = normalize(host or host_platform())
    name = str(wanted)
    if (wanted.os, wanted.architecture, wanted.variant) == (
        host.os,
        host.architecture,
        host.variant,
    ):
        return PlatformSupport(name, "native")
    needed = emulator_name(wanted)
    if not emulation:
        return PlatformSupport(name, "unavailable", needed, reason="emulation is disabled")
    if wanted.os != host.os:
        return PlatformSupport(
            name, "unavailable", reason=f"{wanted.os} binaries cannot run on {host.os}"
        )
    header = elf_header(wanted)
    if header is None:
        return PlatformSupport(
            name, "unavailable", reason=f"no known ELF machine for {wanted.architecture!r}"
        )
    status = binfmt if binfmt is not None else read_binfmt()
    if not status.mounted:
        return PlatformSupport(
            name,
            "unavailable",
            needed,
            reason=f"binfmt_misc is not mounted at {status.root}, so no {needed} handler"
            " is registered",
        )
    if not status.enabled:
        return PlatformSupport(
            name, "unavailable", needed, reason=f"binfmt_misc is disabled ({status.root}/status)"
        )
    matching = [handler for handler in status.handlers if handler.matches(header)]
    usable = [handler for handler in matching if handler.enabled and handler.fix_binary]
    if usable:
        handler = usable[0]
        return PlatformSupport(
            name,
            "emulated",
            handler.name,
            handler.interpreter,
            flags=handler.flags,
        )
    if not matching:
        return PlatformSupport(
            name,
            "unavailable",
            needed,
            reason=f"no binfmt_misc handler for {wanted.architecture} is registered"
            f" (such as {needed} from qemu-user-static)",
        )
    handler = matching[0]
    if not handler.enabled:
        reason = f"the binfmt_misc handler {handler.name} is disabled"
    else:
        reason = (
            f"the binfmt_misc handler {handler.name} lacks the F flag (flags:"
            f" {handler.flags or 'none'}), so its interpreter {handler.interpreter} cannot"
            " be opened inside the container"
        )
    return PlatformSupport(
        name, "unavailable", handler.name, handler.interpreter, reason, handler.flags
    )

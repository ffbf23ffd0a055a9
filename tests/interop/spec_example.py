"""The worked example of FORMAT.md §15: its input tar and its TOC JSON (offsets filled in)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.interop.sourcetar import TarItem, write_tar

PRIORITIZED = ["/dir/b.bin"]
ORDER = ["dir", "dir/b.bin", ".prefetch.landmark", "a.txt", "dir/c.txt"]

# FORMAT.md §15, verbatim except for the three offsets, which depend on the deflate
# implementation (HEAD Go: 123/227/330; Go 0.12.0: 118/217/315; zlib: 108/199/288).
_TOC_TEMPLATE = """{
	"version": 1,
	"entries": [
		{
			"name": "dir/",
			"type": "dir",
			"modtime": "2024-01-02T03:04:05Z",
			"mode": 493,
			"userName": "root",
			"groupName": "root"
		},
		{
			"name": "dir/b.bin",
			"type": "reg",
			"size": 12,
			"modtime": "2024-01-02T03:04:05Z",
			"mode": 493,
			"offset": B_OFFSET,
			"digest": "sha256:4e3f5a1d81582cf9c45c5b0f43e59793f58d060cc71e7667b5b2a09e37f602a2",
			"chunkDigest": "sha256:4e3f5a1d81582cf9c45c5b0f43e59793f58d060cc71e7667b5b2a09e37f602a2"
		},
		{
			"name": ".prefetch.landmark",
			"type": "reg",
			"size": 1,
			"offset": LANDMARK_OFFSET,
			"digest": "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8",
			"chunkDigest": "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"
		},
		{
			"name": "a.txt",
			"type": "reg",
			"size": 6,
			"modtime": "2024-01-02T03:04:05Z",
			"mode": 420,
			"offset": A_OFFSET,
			"digest": "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
			"chunkDigest": "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
		},
		{
			"name": "dir/c.txt",
			"type": "reg",
			"modtime": "2024-01-02T03:04:05Z",
			"mode": 420,
			"digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		}
	]
}"""


def write_example_tar(path: Path) -> Path:
    """The §15 input: USTAR, uid/gid 0, root/root, mtime 2024-01-02T03:04:05Z."""
    items = [
        TarItem("a.txt", data=b"hello\n", mode=0o644),
        TarItem("dir/", "dir", mode=0o755),
        TarItem("dir/b.bin", data=b"0123456789AB", mode=0o755),
        TarItem("dir/c.txt", data=b"", mode=0o644),
    ]
    return write_tar(path, items, fmt=tarfile.USTAR_FORMAT)


def example_toc_json(b_offset: int, landmark_offset: int, a_offset: int) -> bytes:
    """The §15 TOC JSON bytes with the given data offsets."""
    return (
        _TOC_TEMPLATE.replace("B_OFFSET", str(b_offset))
        .replace("LANDMARK_OFFSET", str(landmark_offset))
        .replace("A_OFFSET", str(a_offset))
        .encode()
    )

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from esgz.errors import LayoutError, VerificationError
from esgz.oci import mediatypes as mt
from esgz.oci.layout import REF_NAME_ANNOTATION, OCILayout
from esgz.oci.manifest import Descriptor, Index, Manifest, parse_index, parse_manifest, to_bytes
from esgz.oci.reference import LayoutReference, parse_layout_reference
from tests.fixtures.images import SampleImage

pytestmark = pytest.mark.anyio


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _skopeo() -> str:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("needs skopeo (apt-get install skopeo)")
    return skopeo


def _run_skopeo(*args: str) -> str:
    result = subprocess.run([_skopeo(), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _index_json(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "index.json").read_text())
    return data


def _hidden_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


async def _copy_image(source: OCILayout, target: OCILayout, descriptor: Descriptor) -> None:
    """Stream every blob of the image (index, manifests, configs, layers) across."""
    data = await source.read_blob(descriptor.digest)
    if mt.is_index(descriptor.media_type):
        for child in parse_index(data).manifests:
            await _copy_image(source, target, child)
    else:
        manifest = parse_manifest(data, descriptor.media_type)
        for blob in (manifest.config, *manifest.layers):
            async with target.ingest_blob(blob.digest, blob.size) as writer:
                async for chunk in source.iter_blob(blob.digest, 65536):
                    await writer.write(chunk)
    stored = await target.add_document(data, descriptor.media_type)
    assert (stored.digest, stored.size) == (descriptor.digest, descriptor.size)


# --- reading ------------------------------------------------------------------------------


async def test_resolve_fixture_by_tag_default_and_digest(busybox_image: SampleImage) -> None:
    layout = await OCILayout.open(busybox_image.layout)
    by_tag = await layout.resolve(parse_layout_reference(busybox_image.reference))
    assert (by_tag.digest, by_tag.media_type) == (busybox_image.manifest_digest, mt.OCI_MANIFEST)
    assert await layout.resolve(LayoutReference(busybox_image.layout)) == by_tag
    assert await layout.resolve(None) == by_tag
    by_digest = await layout.resolve(
        LayoutReference(busybox_image.layout, digest=busybox_image.manifest_digest)
    )
    assert by_digest.digest == busybox_image.manifest_digest
    manifest = parse_manifest(await layout.read_blob(by_tag.digest))
    assert [layer.digest for layer in manifest.layers] == [
        layer.digest for layer in busybox_image.layers
    ]
    assert (await layout.tags()).keys() == {"latest"}


async def test_resolve_digest_of_a_blob_not_in_index_json(multiplatform_image: SampleImage) -> None:
    layout = await OCILayout.open(multiplatform_image.layout)
    child = multiplatform_image.manifests[1]
    found = await layout.resolve(
        LayoutReference(multiplatform_image.layout, digest=child.manifest_digest)
    )
    assert found.digest == child.manifest_digest
    assert found.media_type == mt.OCI_MANIFEST
    assert found.size == multiplatform_image.blob_path(child.manifest_digest).stat().st_size
    with pytest.raises(LayoutError, match="no image with digest"):
        await layout.resolve(LayoutReference(multiplatform_image.layout, digest=_sha256(b"x")))


async def test_resolve_errors_list_the_tags(tmp_path: Path, busybox_image: SampleImage) -> None:
    source = await OCILayout.open(busybox_image.layout)
    descriptor = await source.resolve()
    layout = await OCILayout.create(tmp_path / "layout")
    with pytest.raises(LayoutError, match="holds no image"):
        await layout.resolve(LayoutReference(layout.root))
    await _copy_image(source, layout, descriptor)
    await layout.set_tag("v1", descriptor)
    # The only image is chosen without a tag.
    assert (await layout.resolve(LayoutReference(layout.root))).digest == descriptor.digest
    await layout.set_tag("v2", descriptor)
    with pytest.raises(LayoutError, match=r"none is tagged 'latest'.*tags: v1, v2"):
        await layout.resolve(LayoutReference(layout.root))
    with pytest.raises(LayoutError, match=r"no image tagged 'nope'.*tags: v1, v2"):
        await layout.resolve(LayoutReference(layout.root, tag="nope"))
    await layout.set_tag("latest", descriptor)
    resolved = await layout.resolve(LayoutReference(layout.root))
    assert resolved.annotations[REF_NAME_ANNOTATION] == "latest"


async def test_open_rejects_what_is_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="no oci-layout file"):
        await OCILayout.open(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(LayoutError, match=r"unsupported imageLayoutVersion '2\.0\.0'"):
        await OCILayout.open(tmp_path)
    (tmp_path / "oci-layout").write_text("[]")
    with pytest.raises(LayoutError, match="not a JSON object"):
        await OCILayout.open(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with pytest.raises(LayoutError, match=r"no index\.json"):
        await OCILayout.open(tmp_path)
    (tmp_path / "index.json").write_text('{"schemaVersion": 2, "manifests": 3}')
    layout = await OCILayout.open(tmp_path)
    with pytest.raises(LayoutError, match=r"index\.json"):
        await layout.read_index()


async def test_corrupt_or_missing_blob_is_a_layout_error(
    tmp_path: Path, busybox_image: SampleImage
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(busybox_image.layout, copy)
    config = copy / "blobs" / "sha256" / (busybox_image.config_digest or "")[7:]
    config.write_bytes(config.read_bytes() + b" ")
    layout = await OCILayout.open(copy)
    with pytest.raises(LayoutError, match="is corrupt"):
        await layout.read_blob(busybox_image.config_digest or "")
    config.unlink()
    with pytest.raises(LayoutError, match="missing"):
        await layout.read_blob(busybox_image.config_digest or "")
    with pytest.raises(LayoutError, match="missing"):
        async for _ in layout.iter_blob(busybox_image.config_digest or ""):
            pass


# --- writing ------------------------------------------------------------------------------


async def test_create_initialises_missing_and_empty_dirs(tmp_path: Path) -> None:
    for root in (tmp_path / "new" / "nested", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        layout = await OCILayout.create(root)
        assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
        assert _index_json(root) == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        assert (root / "blobs" / "sha256").is_dir()
        assert (await layout.read_index()).manifests == ()


async def test_create_refuses_other_directories_and_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(LayoutError, match="not empty and not an OCI image layout"):
        await OCILayout.create(tmp_path / "data")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(LayoutError, match="not a directory"):
        await OCILayout.create(tmp_path / "file")


async def test_check_target_accepts_what_create_accepts_and_writes_nothing(
    tmp_path: Path,
) -> None:
    await OCILayout.check_target(tmp_path / "missing" / "deeper")
    (tmp_path / "empty").mkdir()
    await OCILayout.check_target(tmp_path / "empty")
    await OCILayout.create(tmp_path / "layout")
    await OCILayout.check_target(tmp_path / "layout")
    assert not (tmp_path / "missing").exists()
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(LayoutError, match="not empty and not an OCI image layout"):
        await OCILayout.check_target(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LayoutError, match="not a directory"):
        await OCILayout.check_target(tmp_path / "file")
    with pytest.raises(LayoutError, match="is a file"):
        await OCILayout.check_target(tmp_path / "file" / "below")
    (tmp_path / "layout" / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(LayoutError, match="unsupported imageLayoutVersion"):
        await OCILayout.check_target(tmp_path / "layout")


async def test_write_copy_tag_retag_keeps_other_entries(
    tmp_path: Path, busybox_image: SampleImage, multiplatform_image: SampleImage
) -> None:
    root = tmp_path / "out"
    busybox = await OCILayout.open(busybox_image.layout)
    multi = await OCILayout.open(multiplatform_image.layout)
    layout = await OCILayout.create(root)
    busybox_descriptor = await busybox.resolve()
    multi_descriptor = await multi.resolve()
    await _copy_image(busybox, layout, busybox_descriptor)
    await layout.set_tag("a", busybox_descriptor)
    await layout.set_tag("b", busybox_descriptor)
    # An existing layout is reopened by create() and updated, not clobbered.
    layout = await OCILayout.create(root)
    await _copy_image(multi, layout, multi_descriptor)
    await layout.set_tag("multi", multi_descriptor)
    await layout.set_tag(None, busybox_descriptor)  # untagged entry
    await layout.set_tag(None, busybox_descriptor)  # not added twice
    await layout.set_tag("a", multi_descriptor)  # re-tag
    entries = _index_json(root)["manifests"]
    assert isinstance(entries, list)
    assert [(e["digest"], e.get("annotations", {}).get(REF_NAME_ANNOTATION)) for e in entries] == [
        (busybox_descriptor.digest, "b"),
        (multi_descriptor.digest, "multi"),
        (busybox_descriptor.digest, None),
        (multi_descriptor.digest, "a"),
    ]
    tags = await layout.tags()
    assert tags["a"].media_type == mt.OCI_INDEX
    assert _hidden_files(root) == []
    # every blob is stored under its true digest
    for blob in (root / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


async def test_index_json_unknown_fields_survive_updates(tmp_path: Path) -> None:
    layout = await OCILayout.create(tmp_path)
    index = _index_json(tmp_path)
    index["annotations"] = {"org.example": "kept"}
    index["x-extension"] = [1, 2]
    (tmp_path / "index.json").write_text(json.dumps(index))
    manifest_bytes = (
        b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"%s","size":1},"layers":[]}'
        % (_sha256(b"c").encode())
    )
    descriptor = await layout.add_document(manifest_bytes)
    await layout.set_tag("t", descriptor)
    updated = _index_json(tmp_path)
    assert updated["annotations"] == {"org.example": "kept"}
    assert updated["x-extension"] == [1, 2]


async def test_failed_ingest_leaves_no_blob(tmp_path: Path) -> None:
    layout = await OCILayout.create(tmp_path)
    wanted = _sha256(b"the real content")
    with pytest.raises(VerificationError):
        async with layout.ingest_blob(wanted, 16) as blob:
            await blob.write(b"not the content!")
    assert not await layout.has_blob(wanted)
    assert sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir()) == []


async def test_add_document_models(tmp_path: Path) -> None:
    layout = await OCILayout.create(tmp_path)
    config = await layout.write_blob(b"{}")
    manifest = Manifest(
        media_type=mt.OCI_MANIFEST,
        config=Descriptor(mt.OCI_CONFIG, config, 2),
        layers=(),
    )
    manifest_descriptor = await layout.add_document(manifest)
    assert manifest_descriptor.media_type == mt.OCI_MANIFEST
    index = Index(media_type="", manifests=(manifest_descriptor,))
    index_descriptor = await layout.add_document(index)
    assert index_descriptor.media_type == mt.OCI_INDEX
    assert await layout.has_blob(index_descriptor.digest)
    assert await layout.read_blob(manifest_descriptor.digest) == to_bytes(manifest)


# --- skopeo interop -------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["busybox_image", "multiplatform_image", "python_image"])
async def test_skopeo_reads_layouts_we_write(
    tmp_path: Path, fixture: str, request: pytest.FixtureRequest
) -> None:
    image: SampleImage = request.getfixturevalue(fixture)
    source = await OCILayout.open(image.layout)
    descriptor = await source.resolve()
    root = tmp_path / "written"
    layout = await OCILayout.create(root)
    await _copy_image(source, layout, descriptor)
    await layout.set_tag("esgz", descriptor)
    await layout.set_tag("other", descriptor)
    inspected = json.loads(await _async_skopeo("inspect", "--raw", f"oci:{root}:esgz"))
    assert inspected == json.loads(image.blob(image.manifest_digest))
    copy_args = ["copy", "-q"] + (["--all"] if image.manifests else [])
    await _async_skopeo(*copy_args, f"oci:{root}:esgz", f"oci:{tmp_path / 'copied'}:again")
    copied = await OCILayout.open(tmp_path / "copied")
    again = await copied.resolve(LayoutReference(copied.root, tag="again"))
    assert again.digest == descriptor.digest


async def test_we_read_layouts_skopeo_writes(tmp_path: Path, busybox_image: SampleImage) -> None:
    root = tmp_path / "by-skopeo"
    source = f"oci:{busybox_image.layout}:latest"
    await _async_skopeo("copy", "-q", source, f"oci:{root}:oci")
    await _async_skopeo("copy", "-q", "--format", "v2s2", source, f"oci:{root}:docker")
    layout = await OCILayout.open(root)
    assert (await layout.tags()).keys() == {"oci", "docker"}
    oci = await layout.resolve(LayoutReference(root, tag="oci"))
    assert oci.digest == busybox_image.manifest_digest
    docker = await layout.resolve(LayoutReference(root, tag="docker"))
    assert docker.media_type == mt.DOCKER_MANIFEST
    manifest = parse_manifest(await layout.read_blob(docker.digest), docker.media_type)
    assert manifest.is_docker
    assert [layer.digest for layer in manifest.layers] == [
        layer.digest for layer in busybox_image.layers
    ]
    # Adding a tag to the skopeo-written layout keeps skopeo's entries usable.
    await layout.set_tag("mine", oci)
    await _async_skopeo("inspect", "--raw", f"oci:{root}:oci")
    await _async_skopeo("inspect", "--raw", f"oci:{root}:mine")


async def _async_skopeo(*args: str) -> str:
    skopeo = _skopeo()
    result = await anyio.run_process([skopeo, *args], check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


_TAGGER = """
import sys
from pathlib import Path
from esgz.oci.layout import OCILayout
from esgz.oci.manifest import Descriptor
layout = OCILayout.open_sync(Path(sys.argv[1]))
descriptor = Descriptor(sys.argv[2], sys.argv[3], int(sys.argv[4]))
for number in range(10):
    layout.set_tag_sync(f"{sys.argv[5]}-{number}", descriptor)
"""


def test_concurrent_processes_do_not_lose_tags(tmp_path: Path, busybox_image: SampleImage) -> None:
    root = tmp_path / "shared"
    shutil.copytree(busybox_image.layout, root)
    descriptor = OCILayout.open_sync(root).resolve_sync()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TAGGER, str(root), descriptor.media_type, descriptor.digest,
             str(descriptor.size), f"p{worker}"],
            cwd=Path(__file__).resolve().parents[2],
        )
        for worker in range(6)
    ]  # fmt: skip
    assert [process.wait() for process in processes] == [0] * 6
    tags = OCILayout.open_sync(root).read_index_sync().manifests
    names = {d.annotations.get("org.opencontainers.image.ref.name") for d in tags}
    assert names == {"latest"} | {f"p{w}-{n}" for w in range(6) for n in range(10)}

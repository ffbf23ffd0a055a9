"""The built-in stages under the runner: cancellation and failures leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from esgz.errors import PipelineError
from esgz.pipeline.api import Pipeline, convert
from esgz.pipeline.config import config_from_data
from esgz.pipeline.events import LayerFetched
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import SampleImage

pytestmark = pytest.mark.anyio


def one_image(source: str, target: str, cache: Path) -> dict[str, object]:
    return {
        "defaults": {"no_optimize": True, "oci": True},
        "cache": {"dir": str(cache)},
        "concurrency": {"convert": 1},
        "images": [{"source": source, "target": target}],
    }


async def test_cancelling_a_run_cleans_up_and_tags_nothing(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = config_from_data(
        one_image(busybox_image.reference, f"local://{out}:v1", tmp_path / "cache")
    )
    pipeline = Pipeline(config)
    events = pipeline.events()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)
        async for event in events:
            if isinstance(event, LayerFetched):
                tg.cancel_scope.cancel()
                break
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    if (out / "index.json").exists():
        assert json.loads((out / "index.json").read_text())["manifests"] == []


async def test_a_corrupt_source_blob_fails_once_naming_the_layer(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    import shutil

    layout = tmp_path / "src"
    shutil.copytree(busybox_image.layout, layout)
    bad = busybox_image.layers[1].digest
    blob = layout / "blobs" / "sha256" / bad[7:]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0x01
    blob.write_bytes(bytes(data))
    config = config_from_data(
        one_image(f"local://{layout}:latest", f"local://{tmp_path}/out:x", tmp_path / "cache")
    )
    with pytest.raises(PipelineError) as caught:
        await Pipeline(config).run()
    error = caught.value
    assert (error.stage, error.layer, error.image) == ("fetch", bad, f"local://{layout}:latest")
    assert "digest mismatch" in str(error)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert not (tmp_path / "cache" / "blobs" / "sha256" / bad[7:]).exists()


async def test_embedding_api_convert(busybox_image: SampleImage, tmp_path: Path) -> None:
    result = await convert(
        busybox_image.reference,
        f"local://{tmp_path}/out:e",
        oci=True,
        compression_level=1,
        cache_dir=tmp_path / "cache",
    )
    (image,) = result.images
    _, (output,) = manifests_of(tmp_path / "out", "e")
    assert output.digest == image.digest
    check_converted(tmp_path / "out", output)


async def test_uncompressed_digests_are_hashed_once_per_blob(
    busybox_image: SampleImage, tmp_path: Path
) -> None:
    """The first run hashes each fetched blob's tar stream; a re-run reads the record."""
    cache = tmp_path / "cache"
    config = one_image(busybox_image.reference, f"local://{tmp_path}/out:a", cache)
    await Pipeline(config_from_data(config)).run()
    records = {
        path.name: path.read_text() for path in (cache / "diff_ids").iterdir() if path.is_file()
    }
    assert records == {
        f"sha256-{layer.digest[7:]}.sha256": layer.diff_id for layer in busybox_image.layers
    }
    # A record is trusted on the next run: a wrong one is reported, not re-hashed.
    first = busybox_image.layers[0]
    wrong = "sha256:" + "cd" * 32
    (cache / "diff_ids" / f"sha256-{first.digest[7:]}.sha256").write_text(wrong)
    with pytest.raises(PipelineError) as caught:
        await Pipeline(config_from_data(config)).run()
    assert caught.value.layer == first.digest
    assert f"the uncompressed layer is {wrong}" in str(caught.value)

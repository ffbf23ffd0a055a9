"""The example pipelines in configs/: each validates, and each runs end to end.

To run an example here its references are pointed at the sample images (same number of
images, every other setting as written); the results are checked with the Go reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from esgz.pipeline.api import Pipeline, run_pipeline
from esgz.pipeline.config import PipelineConfig, load_config_file
from esgz.pipeline.events import LayerConverted
from tests.cli.outputcheck import check_converted, manifests_of
from tests.fixtures.images import HOST_PLATFORM, SampleImage
from tests.fixtures.registry import RegistryServer

pytestmark = pytest.mark.anyio

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RUNNABLE = ["single-image", "batch-shared-base", "oci-layout", "zstd-chunked"]


def test_every_example_is_covered() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(
        [*RUNNABLE, "optimize-workload"]
    )


@pytest.mark.parametrize("name", [*RUNNABLE, "optimize-workload"])
async def test_example_validates(name: str) -> None:
    config = await load_config_file(CONFIGS / f"{name}.yaml")
    assert config.resolved_images()


async def test_workload_example_options() -> None:
    config = await load_config_file(CONFIGS / "optimize-workload.yaml")
    (image,) = config.resolved_images()
    options = image.workload_options()
    assert options.entrypoint == ["/usr/local/bin/python3", "-c"]
    assert options.mounts[0].destination == "/host-tmp"
    assert options.dns_nameservers == ["1.1.1.1"]


def retarget(config: PipelineConfig, pairs: list[tuple[str, str]], cache: Path) -> PipelineConfig:
    assert len(pairs) == len(config.images)
    images = [
        image.model_copy(update={"source": source, "target": target})
        for image, (source, target) in zip(config.images, pairs, strict=True)
    ]
    return config.model_copy(
        update={
            "images": images,
            "registries": {},
            "cache": config.cache.model_copy(update={"dir": cache}),
        }
    )


async def test_single_image_example(
    plain_registry: RegistryServer, busybox_image: SampleImage, tmp_path: Path
) -> None:
    plain_registry.skopeo_push_layout(busybox_image.layout, "cfg/busybox:1", tag="latest")
    host = plain_registry.host
    config = retarget(
        await load_config_file(CONFIGS / "single-image.yaml"),
        [(f"http://{host}/cfg/busybox:1", f"http://{host}/cfg/busybox:esgz")],
        tmp_path / "cache",
    )
    result = await run_pipeline(config)
    pulled = tmp_path / "pulled"
    plain_registry.skopeo_pull_layout("cfg/busybox:esgz", pulled, tag="t", all_platforms=False)
    _, (output,) = manifests_of(pulled, "t")
    assert output.digest == result.images[0].digest
    check_converted(pulled, output, [layer.files for layer in busybox_image.layers])


async def test_batch_example_converts_the_shared_base_once(
    busybox_image: SampleImage,
    busybox_docker_image: SampleImage,
    multiplatform_image: SampleImage,
    tmp_path: Path,
) -> None:
    sources = [busybox_image, busybox_docker_image, multiplatform_image]
    pairs = [
        (image.reference, f"local://{tmp_path}/out{i}:esgz") for i, image in enumerate(sources)
    ]
    config = retarget(
        await load_config_file(CONFIGS / "batch-shared-base.yaml"), pairs, tmp_path / "cache"
    )
    config = config.model_copy(
        update={"defaults": config.defaults.model_copy(update={"platforms": [HOST_PLATFORM]})}
    )
    pipeline = Pipeline(config)
    events = pipeline.events(max_buffer=10_000)
    result = await pipeline.run()
    converted = [e async for e in events if isinstance(e, LayerConverted)]
    shared = {layer.digest for layer in busybox_image.layers}
    fresh = [e.layer for e in converted if not e.cached]
    # All three images hold the busybox layers (the index's host manifest is busybox):
    # 6 occurrences, converted once per option set: level 9 (images 0, 1), level 6 (2).
    occurrences = [e.layer for e in converted if e.layer in shared]
    assert len(occurrences) == 6
    assert sorted(d for d in fresh if d in shared) == sorted([*shared, *shared])
    assert result.layers_converted == len(fresh)
    assert config.resolved_images()[2].compression_level == 6
    for index in range(len(sources)):
        layout = tmp_path / f"out{index}"
        _, outputs = manifests_of(layout, "esgz")
        for output in outputs:
            check_converted(layout, output)
        assert len(outputs) == 1


async def test_oci_layout_example(multiplatform_image: SampleImage, tmp_path: Path) -> None:
    config = retarget(
        await load_config_file(CONFIGS / "oci-layout.yaml"),
        [(multiplatform_image.reference, f"local://{tmp_path}/out:app-esgz")],
        tmp_path / "cache",
    )
    await run_pipeline(config)
    _, outputs = manifests_of(tmp_path / "out", "app-esgz")
    assert len(outputs) == len(multiplatform_image.manifests)
    for output in outputs:
        check_converted(tmp_path / "out", output)


async def test_zstd_chunked_example(busybox_image: SampleImage, tmp_path: Path) -> None:
    config = retarget(
        await load_config_file(CONFIGS / "zstd-chunked.yaml"),
        [(busybox_image.reference, f"local://{tmp_path}/out:z")],
        tmp_path / "cache",
    )
    await run_pipeline(config)
    _, (output,) = manifests_of(tmp_path / "out", "z")
    assert {layer["mediaType"] for layer in output.manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    check_converted(tmp_path / "out", output, [layer.files for layer in busybox_image.layers])

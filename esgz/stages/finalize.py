"""Finalize stage: config, manifest and index of the converted image, written last.

Per manifest (all of its layers are at the target): the config with ``rootfs.diff_ids``
rewritten (as containerd's converter does), then the manifest with the new layer
descriptors — pushed once: by digest if it goes into an index, else under the target's
tag (it is the whole image). Per image (all of its manifests are written): the index with
the converted manifests (keeping their platforms), pushed under the target's tag. Nothing
is tagged before everything it references is there.
"""

from __future__ import annotations

from dataclasses import replace

from esgz.estargz.constants import TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION
from esgz.oci import mediatypes
from esgz.oci.digest import sha256_of
from esgz.oci.manifest import Descriptor, to_bytes
from esgz.pipeline.events import WarningEvent
from esgz.pipeline.jobs import ImageJob, LayerJob, ManifestJob, PushedManifest
from esgz.pipeline.runner import RunContext
from esgz.stages.endpoints import Target

__all__ = ["finalize_image", "finalize_manifest", "layer_media_type"]


def layer_media_type(layer: LayerJob) -> str:
    """The output media type of ``layer``: kept family, gzip or zstd, OCI with ``oci``."""
    output = layer.output
    assert output is not None
    source_type = layer.source.media_type
    if layer.action == "reused":
        media_type = source_type
    elif output.format == "zstdchunked":
        media_type = mediatypes.zstd_chunked_layer_type(source_type)
    else:
        media_type = mediatypes.estargz_layer_type(source_type)
    return mediatypes.to_oci(media_type) if layer.image.settings.oci else media_type


def _layer_descriptor(layer: LayerJob, source: Descriptor) -> Descriptor:
    output = layer.output
    assert output is not None
    annotations = dict(source.annotations)
    for key in (TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION):
        annotations.pop(key, None)
    annotations.update(output.annotations)
    if output.toc_digest is not None:
        annotations[TOC_DIGEST_ANNOTATION] = output.toc_digest
    if output.uncompressed_size is not None:
        annotations[UNCOMPRESSED_SIZE_ANNOTATION] = str(output.uncompressed_size)
    return replace(
        source,
        media_type=layer_media_type(layer),
        digest=output.digest,
        size=output.size,
        annotations=annotations,
        urls=(),
    )


async def finalize_manifest(
    manifest: ManifestJob, ctx: RunContext, target: Target
) -> PushedManifest:
    """Write the config and manifest of one platform; return the manifest written.

    The manifest of a single-manifest image is pushed under the target's tag right away.
    """
    image = manifest.image
    settings = image.settings
    source = manifest.source
    diff_ids: dict[str, str] = {}
    for layer in manifest.layers:
        assert layer.output is not None
        old = layer.source.diff_id
        if old and layer.output.diff_id and old != layer.output.diff_id:
            diff_ids[old] = layer.output.diff_id
    config_bytes = source.config.with_diff_ids(diff_ids)
    config_digest = sha256_of(config_bytes)
    await target.push_config(config_bytes, config_digest)
    config_type = source.manifest.config.media_type
    config = replace(
        source.manifest.config,
        media_type=mediatypes.to_oci(config_type) if settings.oci else config_type,
        digest=config_digest,
        size=len(config_bytes),
    )
    layers = tuple(
        _layer_descriptor(layer, descriptor)
        for layer, descriptor in zip(manifest.layers, source.manifest.layers, strict=True)
    )
    media_type = source.manifest.media_type or source.descriptor.media_type
    if settings.oci or not media_type:
        media_type = mediatypes.OCI_MANIFEST
    if mediatypes.is_docker(media_type) and manifest.index == 0:
        ctx.events.publish(
            WarningEvent(
                image=image.name,
                message="output keeps Docker media types: its layers' TOC-digest annotations"
                " are not part of the Docker schema and may be dropped by other tools;"
                " use --oci (oci: true) to be safe",
            )
        )
    new_manifest = replace(source.manifest, media_type=media_type, config=config, layers=layers)
    content = to_bytes(new_manifest)
    written = await target.push_manifest(
        content, media_type, [config, *layers], tag=not image.is_index
    )
    return PushedManifest(written.digest, written.size, media_type, content)


async def finalize_image(image: ImageJob, ctx: RunContext, target: Target) -> PushedManifest:
    """Tag the result: write the index of the converted manifests under the target's tag.

    A single-manifest image was tagged by :func:`finalize_manifest`; it is returned as is.
    """
    settings = image.settings
    source_index = image.source_index
    if source_index is None:
        (single,) = [job.pushed for job in image.manifests]
        assert single is not None
        return single
    entries = []
    for job in image.manifests:
        assert job.pushed is not None
        entry = job.source.descriptor
        entries.append(
            replace(
                entry,
                media_type=job.pushed.media_type,
                digest=job.pushed.digest,
                size=job.pushed.size,
            )
        )
    media_type = (
        mediatypes.OCI_INDEX if settings.oci else (source_index.media_type or mediatypes.OCI_INDEX)
    )
    new_index = replace(source_index, media_type=media_type, manifests=tuple(entries))
    content = to_bytes(new_index)
    written = await target.push_manifest(content, media_type, entries, tag=True)
    return PushedManifest(written.digest, written.size, media_type, content)

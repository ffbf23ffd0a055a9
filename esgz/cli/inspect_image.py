"""``esgz inspect REF``: layers, formats, TOC digests and prioritized files of an image."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import asyncclick as click

from esgz.cli.options import image_options
from esgz.cli.refs import parse_cli_reference
from esgz.pipeline.config import default_cache_dir

if TYPE_CHECKING:
    from esgz.stages.inspection import ImageReport

__all__ = ["image_report", "inspect", "render_report"]


def render_report(report: ImageReport, *, files: bool) -> list[str]:
    """Human-readable lines for ``report``."""
    lines = [f"{report.reference}", f"  digest: {report.digest}", f"  type:   {report.media_type}"]
    for manifest in report.manifests:
        lines.append(f"  manifest {manifest.digest} ({manifest.platform or 'no platform'})")
        for layer in manifest.layers:
            lines.append(
                f"    layer {layer.index}: {layer.digest} {layer.size} bytes, {layer.format}"
            )
            lines.append(f"      media type: {layer.media_type}")
            if layer.toc_digest is not None:
                match = (
                    "matches annotation"
                    if layer.annotated_toc_digest == layer.toc_digest
                    else f"annotation: {layer.annotated_toc_digest or 'none'}"
                )
                lines.append(f"      TOC digest: {layer.toc_digest} ({match})")
                lines.append(
                    f"      entries: {layer.entries}, landmark: {layer.landmark or 'none'},"
                    f" prioritized files: {len(layer.prioritized)}"
                )
                if files:
                    lines.extend(f"        {name}" for name in layer.prioritized)
            for problem in layer.problems:
                lines.append(f"      problem: {problem}")
    return lines


async def image_report(
    ref: str,
    *,
    plain_http: bool,
    platforms: tuple[str, ...],
    cache_dir: Path | None,
    verify: bool = False,
) -> ImageReport:
    """The report on the image named ``ref`` (a command-line reference)."""
    # imported here: the registry client and format reader are not needed to start the CLI
    from esgz.stages.inspection import inspect_image

    reference = parse_cli_reference(ref, plain_http=plain_http)
    return await inspect_image(
        reference, platforms=platforms, verify=verify, cache_dir=cache_dir or default_cache_dir()
    )


@click.command()
@click.argument("ref")
@image_options
@click.option("--files", is_flag=True, help="List the prioritized files of each layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
async def inspect(
    ref: str,
    plain_http: bool,
    platforms: tuple[str, ...],
    cache_dir: Path | None,
    files: bool,
    as_json: bool,
) -> None:
    """Show the layers of REF: formats, TOC digests, prefetch landmarks, prioritized files."""
    report = await image_report(
        ref, plain_http=plain_http, platforms=platforms, cache_dir=cache_dir
    )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    for line in render_report(report, files=files):
        click.echo(line)

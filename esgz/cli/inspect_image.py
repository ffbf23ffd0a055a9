"""``esgz inspect REF``: layers, formats, TOC digests and prioritized files of an image."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import asyncclick as click

from esgz.cli.options import DIR
from esgz.cli.refs import parse_cli_reference
from esgz.pipeline.config import default_cache_dir
from esgz.stages.inspection import ImageReport, inspect_image

__all__ = ["inspect", "render_report"]


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


@click.command()
@click.argument("ref")
@click.option("--plain-http", is_flag=True, help="Allow an http:// registry reference.")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="PLATFORM",
    help="Only this platform's manifest (repeatable). Default: all.",
)
@click.option("--files", is_flag=True, help="List the prioritized files of each layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--cache-dir",
    type=DIR,
    default=None,
    help="Blob cache to fetch layers into. Default: $XDG_CACHE_HOME/esgz.",
)
async def inspect(
    ref: str,
    plain_http: bool,
    platforms: tuple[str, ...],
    files: bool,
    as_json: bool,
    cache_dir: Path | None,
) -> None:
    """Show the layers of REF: formats, TOC digests, prefetch landmarks, prioritized files."""
    reference = parse_cli_reference(ref, plain_http=plain_http)
    report = await inspect_image(
        reference, platforms=platforms, cache_dir=cache_dir or default_cache_dir()
    )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    for line in render_report(report, files=files):
        click.echo(line)

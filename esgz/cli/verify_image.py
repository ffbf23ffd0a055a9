"""``esgz verify REF``: check every layer of an image; exit 1 on any problem."""

from __future__ import annotations

from pathlib import Path

import asyncclick as click

from esgz.cli.inspect_image import image_report, render_report
from esgz.cli.options import image_options
from esgz.errors import VerificationError

__all__ = ["verify"]


@click.command()
@click.argument("ref")
@image_options
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
async def verify(
    ref: str, plain_http: bool, platforms: tuple[str, ...], cache_dir: Path | None, quiet: bool
) -> None:
    """Verify every layer of REF: eStargz / zstd:chunked, TOC digest, chunks, diff_ids."""
    report = await image_report(
        ref, plain_http=plain_http, platforms=platforms, cache_dir=cache_dir, verify=True
    )
    if not quiet:
        for line in render_report(report, files=False):
            click.echo(line)
    problems = report.problems
    if problems:
        for problem in problems:
            click.echo(f"esgz: problem: {problem}", err=True)
        raise VerificationError(
            f"{len(problems)} problem(s) found in {report.reference}", image=None
        )
    layers = sum(len(m.layers) for m in report.manifests)
    click.echo(f"ok: {layers} layer(s) verified")

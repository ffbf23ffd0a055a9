"""``esgz verify REF``: check every layer of an image; exit 1 on any problem."""

from __future__ import annotations

from pathlib import Path

import asyncclick as click

from esgz.cli.inspect_image import render_report
from esgz.cli.options import DIR
from esgz.cli.refs import parse_cli_reference
from esgz.errors import VerificationError
from esgz.pipeline.config import default_cache_dir
from esgz.stages.inspection import inspect_image

__all__ = ["verify"]


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
@click.option(
    "--cache-dir",
    type=DIR,
    default=None,
    help="Blob cache to fetch layers into. Default: $XDG_CACHE_HOME/esgz.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
async def verify(
    ref: str, plain_http: bool, platforms: tuple[str, ...], cache_dir: Path | None, quiet: bool
) -> None:
    """Verify every layer of REF: eStargz / zstd:chunked, TOC digest, chunks, diff_ids."""
    reference = parse_cli_reference(ref, plain_http=plain_http)
    report = await inspect_image(
        reference,
        platforms=platforms,
        verify=True,
        cache_dir=cache_dir or default_cache_dir(),
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

"""``esgz optimize SRC DST``: convert an image, optimized for the workload it runs.

Every flag of ``ctr-remote image optimize`` (seed documentation and 0.12) is accepted,
with the same meaning; see docs/cli.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncclick as click

from esgz.cli.build import build_config, conversion_settings
from esgz.cli.execute import execute
from esgz.cli.options import (
    DIR,
    FILE,
    conversion_options,
    output_options,
    platform_options,
    source_options,
)

__all__ = ["optimize"]

_WORKLOAD_FLAGS = (
    "period",
    "terminal",
    "interactive",
    "user",
    "cwd",
    "entrypoint",
    "args",
    "env",
    "env_file",
    "mount",
    "dns_nameservers",
    "dns_search_domains",
    "dns_options",
    "add_hosts",
    "cni",
    "cni_plugin_conf_dir",
    "cni_plugin_dir",
    "net_host",
    "wait_on_signal",
    "wait_on_line",
)


def _workload_options(function: Any) -> Any:
    options = [
        click.option(
            "--period",
            type=click.FloatRange(min=0),
            default=10,
            show_default=True,
            help="Seconds to profile the workload's file accesses.",
        ),
        click.option(
            "-t", "--terminal", is_flag=True, help="Give the workload a TTY (requires -i)."
        ),
        click.option("-i", "interactive", is_flag=True, help="Attach stdin to the workload."),
        click.option("--user", help="User (name, uid, user:group) to run the workload as."),
        click.option("--cwd", help="Working directory of the workload."),
        click.option(
            "--entrypoint",
            metavar="JSON",
            help='Entrypoint of the workload as a JSON array, e.g. \'["/bin/sh", "-c"]\'.',
        ),
        click.option("--args", metavar="JSON", help="Arguments of the entrypoint as a JSON array."),
        click.option(
            "--env",
            multiple=True,
            metavar="KEY=VALUE",
            help="Environment variable (adds or replaces); repeatable.",
        ),
        click.option(
            "--env-file",
            type=FILE,
            help="File of KEY=VALUE lines, applied after --env.",
        ),
        click.option(
            "--mount",
            multiple=True,
            metavar="SPEC",
            help="Mount into the workload: type=bind,src=/host,dst=/ctr,options=rbind:ro;"
            " repeatable.",
        ),
        click.option(
            "--dns-nameservers",
            default="8.8.8.8",
            show_default=True,
            help="Comma-separated nameservers for the workload's /etc/resolv.conf.",
        ),
        click.option(
            "--dns-search-domains",
            default="",
            help="Comma-separated search domains for /etc/resolv.conf.",
        ),
        click.option(
            "--dns-options", default="", help="Comma-separated options for /etc/resolv.conf."
        ),
        click.option(
            "--add-hosts", default="", help="Comma-separated host:IP entries for /etc/hosts."
        ),
        click.option("--cni", is_flag=True, help="Give the workload a CNI network."),
        click.option(
            "--cni-plugin-conf-dir",
            "--cni-plugin-config-dir",
            "cni_plugin_conf_dir",
            type=DIR,
            default=Path("/etc/cni/net.d"),
            show_default=True,
            help="Directory of CNI network configurations.",
        ),
        click.option(
            "--cni-plugin-dir",
            default=None,
            help="Directory of CNI plugin binaries (default: /opt/cni/bin, then /usr/lib/cni).",
        ),
        click.option(
            "--net-host",
            is_flag=True,
            help="Use the host network and its /etc/hosts and /etc/resolv.conf.",
        ),
        click.option(
            "--wait-on-signal",
            is_flag=True,
            help="Profile until the workload exits or Ctrl-C, ignoring --period.",
        ),
        click.option(
            "--wait-on-line",
            metavar="TEXT",
            help="Stop profiling once a line of the workload's stdout contains TEXT.",
        ),
        click.option(
            "--gpus",
            metavar="DEVICES",
            help="Not supported by esgz (GPU passthrough); any value is an error.",
        ),
        click.option(
            "--accept-failed-workload",
            is_flag=True,
            help="Keep the profile of a workload that failed or exited non-zero.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command()
@click.argument("src")
@click.argument("dst")
@source_options
@platform_options
@click.option(
    "--no-optimize",
    is_flag=True,
    help="Convert without running the workload (no prioritized files).",
)
@click.option(
    "--record-out",
    type=FILE,
    help="Write the workload's file accesses to this record file (JSON lines).",
)
@click.option(
    "--prefetch-list",
    type=FILE,
    help="Prioritize the paths (and globs) listed in this file instead of running the workload.",
)
@conversion_options
@_workload_options
@output_options
async def optimize(src: str, dst: str, **flags: Any) -> None:
    """Convert SRC to eStargz, optimized for its workload, and write it to DST.

    The image runs in a sandbox for --period seconds; the files it reads are
    prioritized (prefetched at container start by the stargz snapshotter).
    """
    if flags["gpus"] is not None:
        raise click.UsageError("--gpus: GPU passthrough is not supported by esgz")
    image = conversion_settings(flags)
    if flags["no_optimize"] and flags["prefetch_list"] is not None:
        raise click.UsageError("--no-optimize and --prefetch-list cannot be used together")
    if flags["no_optimize"] and flags["record_out"] is not None:
        raise click.UsageError(
            "--record-out needs the workload to run; it cannot be used with --no-optimize"
        )
    image["no_optimize"] = flags["no_optimize"]
    image["accept_failed_workload"] = flags["accept_failed_workload"]
    image["workload"] = {
        name: list(flags[name]) if isinstance(flags[name], tuple) else flags[name]
        for name in _WORKLOAD_FLAGS
    }
    if flags["record_out"] is not None:
        image["record_out"] = str(flags["record_out"])
    if flags["prefetch_list"] is not None:
        image["prefetch_list"] = str(flags["prefetch_list"])
    config = build_config(
        src, dst, image=image, cache_dir=flags["cache_dir"], no_cache=flags["no_cache"]
    )
    await execute(config, log_format=flags["log_format"], quiet=flags["quiet"])

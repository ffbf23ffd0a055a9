"""Profile a workload: run the image in a container and record which files it reads.

:func:`profile_workload` is the runtime's entry point, usable without the pipeline:

1. validate the workload (command, env file, bind-mount sources, stop signal);
2. unpack each layer once into the layer cache (:mod:`esgz.runtime.unpack`);
3. mount the layers under overlayfs (:mod:`esgz.runtime.rootfs`), resolve the user from
   the image's /etc/passwd and /etc/group, generate /etc/hosts and /etc/resolv.conf;
4. set up the network (a fresh netns, the host's, or CNI: :mod:`esgz.runtime.network`);
5. write the runtime spec (:mod:`esgz.runtime.spec`) and ``runc create`` the container;
6. arm fanotify on the container's rootfs mount (:mod:`esgz.runtime.fanotify`), then
   ``runc start`` — so the monitor sees the workload's very first instruction;
7. wait until the workload exits, the period expires, a ``--wait-on-line`` match, or a
   signal with ``--wait-on-signal``; then send the stop signal and, after a grace time,
   SIGKILL;
8. tear everything down — container, network namespace, mount, temp dirs — whatever ended
   the run, including errors and cancellation (teardown is shielded);
9. map the accessed paths to layers (:mod:`esgz.runtime.layermap`).

A workload that cannot start, or exits non-zero before the period is over, is a
:class:`~esgz.errors.WorkloadError` giving the exit code and its last output lines, unless
``accept_failed_workload`` is set. The workload's output lines go to ``on_output`` (or the
log) as they are written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc

from esgz.errors import SandboxError, WorkloadError
from esgz.fsutil import remove_tree
from esgz.runtime.fanotify import FanotifyMonitor
from esgz.runtime.flatroot import copied_rootfs
from esgz.runtime.inodemarks import InodeMarkRecorder
from esgz.runtime.layermap import cleaned_names, prioritized_by_layer
from esgz.runtime.network import cni_network
from esgz.runtime.record import RecordEntry
from esgz.runtime.rootfs import overlay_rootfs
from esgz.runtime.runc import Container, OciRuntime, new_container_id, read_lines
from esgz.runtime.spec import (
    build_spec,
    hosts_file,
    process_args,
    resolv_conf,
    resolve_user,
    stop_signal,
)
from esgz.runtime.unpack import LayerFile, UnpackedLayer, unpack_layer
from esgz.runtime.userns import (
    IdMapping,
    ProfileMode,
    adapt_spec,
    choose_mode,
    id_mapping,
    rootless_unavailable_reason,
    run_helper,
)
from esgz.runtime.workload import WorkloadOptions, parse_env_file
from esgz.signals import preserving_signal_handlers

__all__ = [
    "CNI_NEEDS_ROOT",
    "OutputCallback",
    "ProfileResult",
    "image_runtime_config",
    "profile_in_userns",
    "profile_workload",
]

log = logging.getLogger(__name__)

#: Called with ``("stdout" | "stderr", line)`` for each line the workload writes.
OutputCallback = Callable[[str, str], None]

_OUTPUT_TAIL = 20
_UNPACK_PARALLELISM = max(1, min(4, os.cpu_count() or 1))
_OUTPUT_DRAIN_TIMEOUT = 2.0
_START_FAILURE_HINTS = ("executable file not found", "no such file or directory", "exec:")


@dataclass(frozen=True)
class ProfileResult:
    """What a profiling run found.

    ``accessed_paths``: every file of the rootfs opened or read, cleaned (no leading
    ``/``), first access first, each once — including files created at run time.
    ``prioritized``: per layer (bottom = 0), the accessed paths that layer serves, in
    access order. ``exit_status`` is None if the workload never started; 128+N means it
    was killed by signal N. ``period_expired``/``stopped_on_line``/``stopped_on_signal``
    say what ended the run. ``output_tail``: the workload's last output lines.
    ``overflowed``: the fanotify queue overflowed, so some accesses may be missing.
    ``timings``: seconds spent in each phase (``unpack``, ``setup``, ``run``, ``teardown``).
    ``mode``: ``root`` (fanotify mount mark on the host) or ``rootless`` (a user
    namespace, fanotify inode marks: :mod:`esgz.runtime.userns`).
    """

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready object (:meth:`from_json` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProfileResult:
        """A result written by :meth:`to_json`."""
        names = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    accessed_paths: list[str]
    prioritized: list[list[str]]
    exit_status: int | None
    period_expired: bool = False
    stopped_on_line: bool = False
    stopped_on_signal: bool = False
    output_tail: list[str] = field(default_factory=list)
    overflowed: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    mode: ProfileMode = "root"

    def records(self, manifest_digest: str | None = None) -> list[RecordEntry]:
        """The record-file entries of this profile: served paths in access order, once each."""
        layer_of_path = {
            path: index for index, paths in enumerate(self.prioritized) for path in paths
        }
        return [
            RecordEntry(path, manifest_digest, layer_of_path[path])
            for path in self.accessed_paths
            if path in layer_of_path
        ]


def image_runtime_config(image_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``config`` object of an image config blob (or the object itself if given)."""
    inner = image_config.get("config")
    return inner if isinstance(inner, Mapping) else image_config


@dataclass
class _RunState:
    """Mutable bookkeeping of one run, shared with the output readers."""

    workload: WorkloadOptions
    on_output: OutputCallback | None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_OUTPUT_TAIL))
    line_matched: anyio.Event = field(default_factory=anyio.Event)
    signalled: anyio.Event = field(default_factory=anyio.Event)

    def output(self, stream: str, line: str) -> None:
        self.tail.append(line)
        if self.on_output is not None:
            self.on_output(stream, line)
        else:
            log.info("workload %s: %s", stream, line)
        wanted = self.workload.wait_on_line
        if stream == "stdout" and wanted and wanted in line and not self.line_matched.is_set():
            log.info("Waiting line detected %r; killing task", wanted)
            self.line_matched.set()


def _validate(
    workload: WorkloadOptions, image: Mapping[str, Any]
) -> tuple[list[str], signal.Signals]:
    """Checks that need no container (blocking: reads the env file)."""
    process_args(image, workload)
    stop = stop_signal(image)
    env_entries: list[str] = []
    if workload.env_file is not None:
        try:
            text = workload.env_file.read_text()
        except OSError as err:
            raise WorkloadError(f"env_file {workload.env_file}: {err.strerror}") from None
        env_entries = parse_env_file(text, source=f"env_file {workload.env_file}")
    for mount in workload.mounts:
        if mount.type == "bind" and not Path(mount.source).exists():
            raise WorkloadError(f"mount: source {mount.source!r} does not exist")
    return env_entries, stop


def _check_host(runtime: str, userns: IdMapping | None = None) -> None:
    if userns is None and os.geteuid() != 0:
        raise SandboxError("profiling needs root (overlay mounts, namespaces, fanotify)")
    if shutil.which(runtime) is None:
        raise SandboxError(f"OCI runtime {runtime!r} not found in PATH")


#: Why a CNI network cannot be had in rootless mode.
CNI_NEEDS_ROOT = (
    "--cni needs root (CNI plugins configure host interfaces); in rootless mode use"
    " --net-host or the default network (loopback only)"
)


def _check_rootless(runtime: str, workload: WorkloadOptions) -> None:
    """What the rootless mode cannot do, refused before anything starts."""
    if workload.cni and not workload.net_host:
        raise WorkloadError(CNI_NEEDS_ROOT)
    if workload.terminal or workload.interactive:
        raise WorkloadError("-t/-i (a terminal or stdin for the workload) needs root mode")
    reason = rootless_unavailable_reason()
    if reason is not None:
        raise SandboxError(reason)
    if shutil.which(runtime) is None:
        raise SandboxError(f"OCI runtime {runtime!r} not found in PATH")


async def profile_workload(
    layers: Sequence[LayerFile],
    image_config: Mapping[str, Any],
    workload: WorkloadOptions,
    *,
    work_dir: Path,
    on_output: OutputCallback | None = None,
    runtime: str = "runc",
    runtime_args: Sequence[str] = (),
    layer_cache: Path | None = None,
    mark: Literal["mount", "filesystem"] = "mount",
    ignore_paths: Collection[str] = (),
) -> ProfileResult:
    """Run ``workload`` on the image made of ``layers`` (bottom first); what it read.

    ``image_config`` is the image config blob (or its ``config`` object). ``work_dir``
    holds the layer cache (``layers/``, unless ``layer_cache``), the runtime state dir
    (``runc-state/``) and per-run temp dirs, which are removed afterwards. ``runtime`` is
    the OCI runtime binary (``runc`` or ``crun``), ``runtime_args`` its global flags.
    ``mark`` selects the fanotify mark of the root mode (see :mod:`esgz.runtime.fanotify`).
    The mode (:attr:`ProfileResult.mode`) is rootless — a user namespace,
    :mod:`esgz.runtime.userns` — when ``workload.rootless`` forces it or this process is not
    root with CAP_SYS_ADMIN. The rootless mode unpacks into its own layer cache,
    ``<layer_cache>-userns`` (its files belong to the ids mapped in the namespace), or,
    without ``layer_cache``, into its run dir, removed with it.
    ``ignore_paths`` (cleaned, e.g. an emulator's interpreter inside the rootfs) are
    never recorded as accesses.
    """
    forced = True if workload.rootless else None
    if await anyio.to_thread.run_sync(choose_mode, forced) == "rootless":
        return await _profile_rootless(
            layers,
            image_config,
            workload,
            work_dir=work_dir,
            on_output=on_output,
            runtime=runtime,
            runtime_args=runtime_args,
            layer_cache=layer_cache,
            ignore_paths=ignore_paths,
        )
    return await _profile(
        layers,
        image_config,
        workload,
        work_dir=work_dir,
        on_output=on_output,
        runtime=runtime,
        runtime_args=runtime_args,
        layer_cache=layer_cache,
        mark=mark,
        ignore_paths=ignore_paths,
    )


async def _profile_rootless(
    layers: Sequence[LayerFile],
    image_config: Mapping[str, Any],
    workload: WorkloadOptions,
    *,
    work_dir: Path,
    on_output: OutputCallback | None,
    runtime: str,
    runtime_args: Sequence[str],
    layer_cache: Path | None,
    ignore_paths: Collection[str],
) -> ProfileResult:
    """The profile run by the user-namespace helper (:func:`profile_in_userns`)."""
    image = image_runtime_config(image_config)
    await anyio.to_thread.run_sync(_validate, workload, image)
    await anyio.to_thread.run_sync(_check_rootless, runtime, workload)
    mapping = await anyio.to_thread.run_sync(id_mapping)
    log.info("profiling rootless: user namespace with ids %s", mapping.describe())
    request = {
        "layers": [[layer.digest, str(layer.path), layer.diff_id] for layer in layers],
        "image_config": dict(image),
        "workload": workload.model_dump(mode="json"),
        "runtime": runtime,
        "runtime_args": list(runtime_args),
        "ignore_paths": sorted(ignore_paths),
        "layer_cache": (
            str(layer_cache.with_name(layer_cache.name + "-userns")) if layer_cache else None
        ),
        "mapping": dataclasses.asdict(mapping),
    }
    data = await run_helper(
        request,
        work_dir=work_dir,
        mapping=mapping,
        on_output=on_output,
        wait_on_signal=workload.wait_on_signal,
    )
    return ProfileResult.from_json(data)


async def profile_in_userns(
    request: Mapping[str, Any], on_output: OutputCallback | None
) -> ProfileResult:
    """The rootless helper's run (inside its user namespace): ``request`` as sent by
    :func:`profile_workload`, plus ``run_dir`` (a dir only this run uses)."""
    mapping_fields = dict(request["mapping"])
    for key in ("subuids", "subgids"):
        if mapping_fields.get(key) is not None:
            mapping_fields[key] = tuple(mapping_fields[key])
    mapping = IdMapping(**mapping_fields)
    layers = [LayerFile(digest, Path(path), diff_id) for digest, path, diff_id in request["layers"]]
    result = await _profile(
        layers,
        request["image_config"],
        WorkloadOptions.model_validate(request["workload"]),
        work_dir=Path(request["run_dir"]),
        on_output=on_output,
        runtime=request["runtime"],
        runtime_args=request["runtime_args"],
        layer_cache=Path(request["layer_cache"]) if request["layer_cache"] else None,
        mark="mount",
        ignore_paths=request.get("ignore_paths", ()),
        userns=mapping,
    )
    return dataclasses.replace(result, mode="rootless")


async def _profile(
    layers: Sequence[LayerFile],
    image_config: Mapping[str, Any],
    workload: WorkloadOptions,
    *,
    work_dir: Path,
    on_output: OutputCallback | None,
    runtime: str,
    runtime_args: Sequence[str],
    layer_cache: Path | None,
    mark: Literal["mount", "filesystem"],
    ignore_paths: Collection[str] = (),
    userns: IdMapping | None = None,
) -> ProfileResult:
    """The profile on this host (root), or inside the helper's namespace (``userns``)."""
    image = image_runtime_config(image_config)
    env_entries, stop = await anyio.to_thread.run_sync(_validate, workload, image)
    await anyio.to_thread.run_sync(_check_host, runtime, userns)
    timings: dict[str, float] = {}
    started = time.monotonic()
    cache = layer_cache or work_dir / "layers"
    unpacked = await _unpack_all(layers, cache)
    timings["unpack"] = time.monotonic() - started
    state = _RunState(workload=workload, on_output=on_output)
    oci = OciRuntime(work_dir / "runc-state", binary=runtime, global_args=runtime_args)
    container_id = new_container_id()

    async with AsyncExitStack() as stack:
        run_dir = await stack.enter_async_context(_temp_dir(work_dir, "run-"))
        rootfs = await _rootfs(stack, unpacked, work_dir, userns is not None)
        user = await anyio.to_thread.run_sync(
            resolve_user, rootfs, workload.user or image.get("User")
        )
        if userns is not None:
            userns.check_user(user.uid, user.gid, user.additional_gids)
        netns: str | None = None
        if workload.cni and not workload.net_host:
            attachment = await stack.enter_async_context(
                cni_network(
                    conf_dir=workload.cni_plugin_conf_dir,
                    plugin_dirs=workload.cni_plugin_dir,
                    container_id=container_id,
                )
            )
            netns = str(attachment.netns_path)
        spec = build_spec(
            rootfs=rootfs,
            image_config=image,
            workload=workload,
            user=user,
            hosts_path=run_dir / "etc" / "hosts",
            resolv_conf_path=run_dir / "etc" / "resolv.conf",
            env_file_entries=env_entries,
            netns_path=netns,
            console_size=_console_size() if workload.terminal else None,
        )
        if userns is not None:
            adapt_spec(spec, workload, userns)
        bundle = run_dir / "bundle"
        await anyio.to_thread.run_sync(_write_bundle, run_dir, bundle, spec, workload)
        try:
            container = await stack.enter_async_context(
                oci.container(
                    container_id,
                    bundle,
                    inherit_stdin=workload.stdin,
                    terminal=workload.terminal,
                )
            )
        except SandboxError as err:
            if not any(hint in err.message for hint in _START_FAILURE_HINTS):
                raise
            if not workload.accept_failed_workload:
                raise WorkloadError(f"workload cannot start: {err.message}") from err
            log.warning("workload cannot start (accepted): %s", err.message)
            return ProfileResult([], [[] for _ in unpacked], None, timings=timings)
        monitor = await _recorder(stack, rootfs, container.pid, mark, userns is not None)
        stdin_tty = _stdin_terminal()
        if workload.terminal and stdin_tty is not None:
            stack.enter_context(_raw_terminal(stdin_tty))
        timings["setup"] = time.monotonic() - started - timings["unpack"]
        run_started = time.monotonic()
        try:
            outcome = await _run(oci, container, monitor, state, stop)
        except BaseExceptionGroup as group:
            raise _sole_error(group) from None
        timings["run"] = time.monotonic() - run_started
        teardown_started = time.monotonic()
    timings["teardown"] = time.monotonic() - teardown_started
    status, period_expired = outcome.status, outcome.period_expired
    stopped_early = period_expired or outcome.line_matched or outcome.signalled
    if status != 0 and not stopped_early:
        tail = " | ".join(list(state.tail)[-5:]) or "no output"
        message = (
            f"workload exited with code {status} before the end of the profiling period;"
            f" last output: {tail}"
        )
        if not workload.accept_failed_workload:
            raise WorkloadError(message)
        log.warning("%s (accepted)", message)
    ignored = set(ignore_paths)
    accessed = [path for path in cleaned_names(monitor.paths) if path not in ignored]
    prioritized = prioritized_by_layer(accessed, [layer.index for layer in unpacked])
    log.info("container exit with code %s; %d files accessed", status, len(accessed))
    return ProfileResult(
        accessed_paths=accessed,
        prioritized=prioritized,
        exit_status=status,
        period_expired=period_expired,
        stopped_on_line=outcome.line_matched,
        stopped_on_signal=outcome.signalled,
        output_tail=list(state.tail),
        overflowed=monitor.overflowed,
        timings=timings,
    )


async def _rootfs(
    stack: AsyncExitStack, unpacked: Sequence[UnpackedLayer], work_dir: Path, userns: bool
) -> Path:
    """The merged rootfs: overlayfs; in a user namespace, a copy if overlayfs fails."""
    lower = [layer.root for layer in unpacked]
    if not userns:
        return await stack.enter_async_context(overlay_rootfs(lower, work_dir))
    try:
        return await stack.enter_async_context(
            overlay_rootfs(lower, work_dir, options=("userxattr",))
        )
    except SandboxError as err:
        log.warning("%s; copying the layers into one directory instead", err.message)
    return await stack.enter_async_context(copied_rootfs(unpacked, work_dir))


async def _recorder(
    stack: AsyncExitStack, rootfs: Path, pid: int, mark: str, inode_marks: bool
) -> FanotifyMonitor | InodeMarkRecorder:
    """The armed file-access recorder: mount or filesystem mark, or inode marks."""
    if inode_marks:
        recorder = InodeMarkRecorder(rootfs)
        await anyio.to_thread.run_sync(recorder.open)
        stack.callback(recorder.close)
        started = time.monotonic()
        count = await anyio.to_thread.run_sync(recorder.mark_tree)
        log.info("watching %d directories (%.2fs)", count, time.monotonic() - started)
        return recorder
    monitor = FanotifyMonitor(host_prefix=rootfs)
    await anyio.to_thread.run_sync(monitor.open)
    stack.callback(monitor.close)
    if mark == "mount":
        await anyio.to_thread.run_sync(monitor.mark_mount, f"/proc/{pid}/root")
    else:
        await anyio.to_thread.run_sync(monitor.mark_filesystem, rootfs)
    return monitor


async def _unpack_all(layers: Sequence[LayerFile], cache: Path) -> list[UnpackedLayer]:
    """Unpack (or find cached) every layer, a few at a time."""
    results: dict[int, UnpackedLayer] = {}
    limiter = anyio.CapacityLimiter(_UNPACK_PARALLELISM)

    async def one(index: int, layer: LayerFile) -> None:
        async with limiter:
            results[index] = await unpack_layer(layer, cache)

    try:
        async with anyio.create_task_group() as group:
            for index, layer in enumerate(layers):
                group.start_soon(one, index, layer)
    except BaseExceptionGroup as errors:
        raise _sole_error(errors) from None
    return [results[index] for index in range(len(layers))]


@dataclass
class _Outcome:
    status: int
    period_expired: bool = False
    line_matched: bool = False
    signalled: bool = False


async def _run(
    oci: OciRuntime,
    container: Container,
    monitor: FanotifyMonitor | InodeMarkRecorder,
    state: _RunState,
    stop: signal.Signals,
) -> _Outcome:
    """Start the container and wait for the end of the run; the exit status and why."""
    workload = state.workload
    outcome = _Outcome(status=-1)
    readers_done = (anyio.Event(), anyio.Event())
    exited = anyio.Event()

    async def read(stream: anyio.abc.ByteReceiveStream, name: str, done: anyio.Event) -> None:
        try:
            await read_lines(stream, lambda line: state.output(name, line))
        finally:
            done.set()

    async def wait_exit() -> None:
        await container.wait()
        exited.set()

    async with anyio.create_task_group() as readers:
        readers.start_soon(read, container.stdout, "stdout", readers_done[0])
        readers.start_soon(read, container.stderr, "stderr", readers_done[1])
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(monitor.run)
            if workload.wait_on_signal:
                watchers.start_soon(_watch_signals, state)
            await oci.start(container.id)
            watchers.start_soon(wait_exit)
            period = None if workload.wait_on_signal else workload.effective_period
            if period is None:
                log.info("press Ctrl+C to terminate the container")
            else:
                log.info("waiting for %ss ...", period)
            with anyio.move_on_after(period if period is not None else math.inf):
                async with anyio.create_task_group() as ends:
                    for event in (exited, state.line_matched, state.signalled):
                        ends.start_soon(_cancel_when, event, ends.cancel_scope)
            if not exited.is_set():
                outcome.line_matched = state.line_matched.is_set()
                outcome.signalled = state.signalled.is_set()
                outcome.period_expired = not (outcome.line_matched or outcome.signalled)
                if outcome.period_expired:
                    log.info(
                        "killing task. the time period to monitor access log (%ss) has timed out",
                        period,
                    )
                await _stop(oci, container, stop, workload.stop_grace_period, exited)
            watchers.cancel_scope.cancel()
        outcome.status = container.exit_status if container.exit_status is not None else -1
        await monitor.stop()
        # The pipes end once the container and the shim have exited; bound the wait in
        # case a stray process still holds them.
        with anyio.move_on_after(_OUTPUT_DRAIN_TIMEOUT):
            for done in readers_done:
                await done.wait()
        readers.cancel_scope.cancel()
    return outcome


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one ordinary exception inside nested task-group groups, else the group."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return group


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _stop(
    oci: OciRuntime,
    container: Container,
    stop: signal.Signals,
    grace: float,
    exited: anyio.Event,
) -> None:
    """Stop signal, then SIGKILL (re-sent) until the container's init has exited.

    A runtime that no longer knows the container (its state dir is gone) refuses to signal
    it: the init (a child of the shim, so its pid is not reused before it is reaped) is
    then killed directly, which takes the whole pid namespace with it.
    """
    await oci.kill(container.id, stop)
    if stop != signal.SIGKILL:
        with anyio.move_on_after(grace):
            await exited.wait()
    while not exited.is_set():
        if not await oci.kill(container.id, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(container.pid, signal.SIGKILL)
        with anyio.move_on_after(0.5):
            await exited.wait()


async def _watch_signals(state: _RunState) -> None:
    """With ``--wait-on-signal``: SIGINT/SIGTERM/SIGHUP/SIGQUIT end the run normally."""
    if threading.current_thread() is not threading.main_thread():
        return
    waited = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    with preserving_signal_handlers(*waited), anyio.open_signal_receiver(*waited) as signals:
        async for _ in signals:
            log.info("signal detected")
            state.signalled.set()
            return


def _write_bundle(
    run_dir: Path, bundle: Path, spec: dict[str, Any], workload: WorkloadOptions
) -> None:
    etc = run_dir / "etc"
    etc.mkdir()
    (etc / "hosts").write_text(hosts_file(workload.add_hosts))
    (etc / "resolv.conf").write_text(
        resolv_conf(workload.dns_nameservers, workload.dns_search_domains, workload.dns_options)
    )
    for name in ("hosts", "resolv.conf"):
        (etc / name).chmod(0o644)
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))


def _stdin_terminal() -> int | None:
    """The fd of this process's stdin if it is a terminal."""
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return None
    return fd if os.isatty(fd) else None


def _console_size() -> tuple[int, int] | None:
    """(rows, columns) of this process's terminal, if stdin is one."""
    fd = _stdin_terminal()
    if fd is None:
        return None
    size = os.get_terminal_size(fd)
    return size.lines, size.columns


@contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """The local terminal in raw mode (keys go to the workload as typed), then restored."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@asynccontextmanager
async def _temp_dir(parent: Path, prefix: str) -> AsyncIterator[Path]:
    await anyio.to_thread.run_sync(lambda: parent.mkdir(parents=True, exist_ok=True))
    path = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix=prefix, dir=parent)))
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: remove_tree(path, ignore_errors=True))

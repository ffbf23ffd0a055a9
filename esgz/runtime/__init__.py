"""The profiling sandbox: rootfs, OCI runtime spec, runc, fanotify, networking.

Runs an image's workload in a real container (an OCI runtime binary — Debian's ``runc``,
or ``crun`` — no daemon needed) and records which files of the image it opens or reads,
as ``ctr-remote image optimize`` does. Usable without the pipeline; needs root.

Entry point::

    from esgz.runtime.profile import profile_workload
    from esgz.runtime.unpack import LayerFile
    from esgz.runtime.workload import WorkloadOptions

    result = await profile_workload(
        [LayerFile(digest, blob_path, diff_id), ...],   # bottom layer first
        image_config,                                     # the config blob (dict)
        WorkloadOptions(args=["python3 -c 'import json'"], period=10),
        work_dir=Path("/var/tmp/esgz"),
    )
    result.prioritized        # per layer: the paths it serves, first access first
    result.records(manifest)  # ctr-remote record-file entries

Modules, one job each:

* :mod:`~esgz.runtime.workload` — :class:`WorkloadOptions` (the ``optimize`` workload
  flags / YAML ``workload:`` keys) and the parsers of the flags' string forms;
* :mod:`~esgz.runtime.unpack` — per-layer unpacking into a digest-keyed cache, hostile
  tar defences, overlayfs whiteouts; :class:`LayerIndex` of each layer's entries;
* :mod:`~esgz.runtime.rootfs` — the overlayfs mount of the layers (temporary upper dir);
* :mod:`~esgz.runtime.spec` — the OCI runtime spec (containerd's defaults + image config
  + workload), user resolution, generated /etc/hosts and /etc/resolv.conf;
* :mod:`~esgz.runtime.network` — CNI plugin execution in a named network namespace;
* :mod:`~esgz.runtime.fanotify` — the fanotify monitor (ctypes);
* :mod:`~esgz.runtime.runc` and :mod:`~esgz.runtime.shim` — the OCI runtime driver and the
  per-container shim that keeps the exit status;
* :mod:`~esgz.runtime.profile` — :func:`profile_workload`, which ties them together and
  always tears everything down;
* :mod:`~esgz.runtime.emulation` — which platforms run here: natively, or under a
  binfmt_misc handler (qemu-user-static) usable inside a container;
* :mod:`~esgz.runtime.recover` — clean up after a profiler that was killed outright;
* :mod:`~esgz.runtime.layermap` — accessed path → serving layer (whiteouts, opaque dirs);
* :mod:`~esgz.runtime.record` — record files (ctr-remote JSON lines) and prefetch lists.

Submodules are imported explicitly (nothing is re-exported here), so importing
``esgz.runtime.workload`` for its options model stays cheap.
"""

"""The profiling sandbox: rootfs, OCI runtime spec, runc, fanotify, networking."""

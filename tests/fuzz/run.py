"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

::

    python -m tests.fuzz.run TARGET [CORPUS_DIR] [libFuzzer flags, e.g. -max_total_time=60]

The seeds of the target are written into the corpus directory first. An input that ends
in anything but an :class:`~esgz.errors.EsgzError` is a crash: libFuzzer prints the
traceback, saves the input as ``crash-*`` (in ``-artifact_prefix``) and exits non-zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["esgz"]):
    import esgz.errors
    from tests.fuzz.targets import TARGETS


def _write_seeds(name: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in TARGETS[name].seeds():
        (corpus / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)


def main(argv: list[str]) -> None:
    """Fuzz ``argv[1]``; the remaining arguments go to libFuzzer."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [CORPUS] [flags]")
    name = argv[1]
    run = TARGETS[name].run
    rest = argv[2:]
    corpora = [arg for arg in rest if not arg.startswith("-")]
    for corpus in corpora:
        _write_seeds(name, Path(corpus))

    def one_input(data: bytes) -> None:
        with contextlib.suppress(esgz.errors.EsgzError):
            run(data)

    atheris.Setup([argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

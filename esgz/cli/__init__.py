"""The ``esgz`` command line."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``esgz`` console script."""
    from esgz.cli.main import run

    run()

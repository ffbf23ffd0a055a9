"""Reference arguments of the commands that read one image."""

from __future__ import annotations

import asyncclick as click

from esgz.errors import ImageReferenceError
from esgz.oci.reference import LayoutReference, RegistryReference, parse_reference

__all__ = ["parse_cli_reference"]


def parse_cli_reference(text: str, *, plain_http: bool) -> RegistryReference | LayoutReference:
    """Parse REF; a bad reference or ``http://`` without ``--plain-http`` is a usage error."""
    try:
        reference = parse_reference(text)
    except ImageReferenceError as exc:
        raise click.UsageError(exc.message) from None
    if isinstance(reference, RegistryReference) and reference.plain_http and not plain_http:
        bare = text[len("http://") :]
        raise click.UsageError(
            f'"--plain-http" option must be specified to connect to "{bare}" using HTTP'
        )
    return reference

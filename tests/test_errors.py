from __future__ import annotations

import pytest

import esgz.errors as errors


def test_every_error_derives_from_esgz_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.EsgzError), name


def test_context_is_prefixed_to_the_message() -> None:
    err = errors.FormatError("truncated gzip member", image="reg/app:1", layer="sha256:ab")
    assert str(err) == "image reg/app:1, layer sha256:ab: truncated gzip member"
    assert str(errors.ConfigError("bad key")) == "bad key"


def test_registry_error_keeps_status_code() -> None:
    err = errors.AuthError("unauthorized", status_code=401, registry="127.0.0.1:5000")
    assert err.status_code == 401
    assert isinstance(err, errors.RegistryError)
    assert str(err) == "registry 127.0.0.1:5000: unauthorized"


def test_reference_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise errors.ImageReferenceError("bad")

"""Docker config.json credentials and docker-credential-* helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import pytest

from esgz.errors import AuthError
from esgz.registry import Credentials, DockerConfigCredentials, RegistryClient, RegistryOptions
from esgz.registry.credentials import run_credential_helper
from tests.fixtures.registry import RegistryServer
from tests.registry.helpers import server_ref
from tests.registry.sample_images import SampleImage

pytestmark = pytest.mark.anyio


def _write_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _install_helper(bin_dir: Path, name: str, store: dict[str, dict[str, str]]) -> Path:
    """A real ``docker-credential-<name>`` program answering from ``store``; logs its input."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    data = bin_dir / f"{name}.json"
    data.write_text(json.dumps(store))
    log = bin_dir / f"{name}.log"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 2\n'
        "read -r server\n"
        f'echo "$server" >> "{log}"\n'
        f'exec python3 -c \'import json,sys; s=json.load(open("{data}")); '
        "e=s.get(sys.argv[1]); "
        "(print(json.dumps(dict(ServerURL=sys.argv[1], **e))) if e else "
        '(print("credentials not found in native keychain"), sys.exit(1)))\' "$server"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return log


async def test_auths_forms(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpass")},
                "registry.example.com:5000": {"username": "u", "password": "p:with:colons"},
                "https://other.example.com/v2/": {"auth": _b64("o:pw"), "identitytoken": "it"},
                "tokenonly.example.com": {"identitytoken": "refresh-me"},
            }
        },
    )
    provider = DockerConfigCredentials(config)
    assert await provider.get("docker.io") == Credentials("hubuser", "hubpass")
    assert await provider.get("registry-1.docker.io") == Credentials("hubuser", "hubpass")
    assert await provider.get("registry.example.com:5000") == Credentials("u", "p:with:colons")
    assert await provider.get("other.example.com") == Credentials("o", "pw", "it")
    assert await provider.get("tokenonly.example.com") == Credentials(identity_token="refresh-me")
    assert await provider.get("registry.example.com") is None
    assert "hubpass" not in repr(await provider.get("docker.io"))


async def test_docker_config_env_and_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert await DockerConfigCredentials().get("docker.io") is None
    _write_config(tmp_path / "cfg", {"auths": {"r.example": {"auth": _b64("a:b")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    provider = DockerConfigCredentials()
    assert provider.config_file == tmp_path / "cfg" / "config.json"
    assert await provider.get("r.example") == Credentials("a", "b")


async def test_bad_config_is_one_line_auth_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AuthError, match="not valid JSON"):
        await DockerConfigCredentials(tmp_path).get("docker.io")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_bytes(b'{"auths": "\xff"}')
    with pytest.raises(AuthError, match="not valid JSON"):
        await DockerConfigCredentials(tmp_path / "c").get("docker.io")
    _write_config(tmp_path / "b", {"auths": {"r.example": {"auth": "!!notbase64"}}})
    with pytest.raises(AuthError, match="invalid base64") as caught:
        await DockerConfigCredentials(tmp_path / "b").get("r.example")
    assert "\n" not in str(caught.value)


async def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    hub_log = _install_helper(
        bin_dir,
        "esgzstore",
        {
            "https://index.docker.io/v1/": {"Username": "hub", "Secret": "s1"},
            "tok.example": {"Username": "<token>", "Secret": "identity"},
        },
    )
    one_log = _install_helper(
        bin_dir, "esgzone", {"one.example:444": {"Username": "one", "Secret": "s2"}}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _write_config(
        tmp_path / "cfg",
        {
            "credsStore": "esgzstore",
            "credHelpers": {"one.example:444": "esgzone", "gone.example": "missinghelper"},
            "auths": {"fallback.example": {"auth": _b64("fb:pw")}},
        },
    )
    provider = DockerConfigCredentials(config)
    assert await provider.get("docker.io") == Credentials("hub", "s1")
    assert await provider.get("tok.example") == Credentials(identity_token="identity")
    assert await provider.get("one.example:444") == Credentials("one", "s2")
    # The store knows nothing about it: falls back to auths.
    assert await provider.get("fallback.example") == Credentials("fb", "pw")
    assert await provider.get("unknown.example") is None
    assert hub_log.read_text().split() == [
        "https://index.docker.io/v1/",
        "tok.example",
        "fallback.example",
        "unknown.example",
    ]
    assert one_log.read_text().split() == ["one.example:444"]
    with pytest.raises(AuthError, match="docker-credential-missinghelper is configured but not"):
        await provider.get("gone.example")


async def test_credential_helper_against_tls_registry(
    tls_oci_repo: str,
    tls_registry: RegistryServer,
    oci_image: SampleImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = tls_oci_repo
    bin_dir = tmp_path / "bin"
    log = _install_helper(
        bin_dir,
        "esgztls",
        {
            tls_registry.host: {
                "Username": tls_registry.username or "",
                "Secret": tls_registry.password or "",
            }
        },
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _write_config(tmp_path / "cfg", {"credHelpers": {tls_registry.host: "esgztls"}})
    options = {tls_registry.host: RegistryOptions(ca_file=tls_registry.ca_file)}
    async with RegistryClient(
        credentials=DockerConfigCredentials(config), options=options
    ) as client:
        manifest = await client.fetch_manifest(server_ref(tls_registry, repo))
    assert manifest.content == oci_image.top_bytes
    assert log.read_text().split() == [tls_registry.host]


def _install_script(bin_dir: Path, name: str, body: str) -> None:
    """A ``docker-credential-<name>`` shell script doing ``body``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("exec yes x", "wrote more than 1048576 bytes"),
        ("exec yes x >&2", "wrote more than 1048576 bytes"),
        ("echo not json", "unreadable answer"),
        ('echo \'["Username", "Secret"]\'', "unreadable answer"),
        ('echo \'{"Username": 7, "Secret": "s"}\'', "unreadable answer"),
        ('echo \'{"Username": "u"}\'', "unreadable answer"),
        ('echo \'{"Username": "u", "Secret": NaN}\'', "unreadable answer"),
        ("head -c 300000 /dev/zero | tr '\\0' '['", "unreadable answer"),
        ("printf 'first line\\nsecond line\\n' >&2; exit 3", "failed: first line$"),
        ("head -c 100000 /dev/zero | tr '\\0' 'e' >&2; exit 3", "failed: e{100}"),
        ("exit 4", "failed: exit status 4$"),
    ],
    ids=[
        "endless-stdout",
        "endless-stderr",
        "not-json",
        "list",
        "number",
        "no-secret",
        "nan",
        "deep",
        "multiline-error",
        "long-error",
        "silent-failure",
    ],
)
async def test_misbehaving_credential_helper_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    _install_script(tmp_path / "bin", "odd", body)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = _write_config(tmp_path / "cfg", {"credsStore": "odd"})
    with pytest.raises(AuthError, match=message) as caught:
        await DockerConfigCredentials(config).get("r.example")
    text = str(caught.value)
    assert "\n" not in text
    assert len(text) < 300
    assert text.startswith("registry r.example: credential helper docker-credential-odd ")


async def test_hanging_credential_helper_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_script(tmp_path / "bin", "slow", "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    with pytest.raises(AuthError, match=r"did not answer within 0.5s"):
        await run_credential_helper("slow", "r.example", registry="r.example", time_limit=0.5)
    assert time.monotonic() - started < 5


async def test_config_json_fields_are_typed_and_its_size_capped(tmp_path: Path) -> None:
    _write_config(
        tmp_path / "typed",
        {
            "auths": {
                "r.example": {"username": 7, "password": ["p"], "identitytoken": {"t": 1}},
                "s.example": {"username": "u", "password": 5},
            },
            "credHelpers": {"t.example": 12},
            "credsStore": False,
        },
    )
    provider = DockerConfigCredentials(tmp_path / "typed")
    assert await provider.get("r.example") is None
    assert await provider.get("s.example") == Credentials("u", None)
    assert await provider.get("t.example") is None
    big = tmp_path / "big"
    big.mkdir()
    with (big / "config.json").open("wb") as stream:
        stream.truncate(17 << 20)  # sparse: no 17 MiB written
    with pytest.raises(AuthError, match="larger than 16 MiB"):
        await DockerConfigCredentials(big).get("r.example")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "config.json").write_text("[" * 200_000)
    with pytest.raises(AuthError, match="not valid JSON"):
        await DockerConfigCredentials(tmp_path / "deep").get("r.example")

"""Profiles: routes, field spelling, keys from the environment, JWT, base URL rules."""

import base64
import hashlib
import hmac
import json
import sys
import time

import attrs
import jwt
import pytest

from kling_async import Client, CometAPI, Image, Kind, Kling, MultiImageToVideo, Profile
from kling_async._api.profiles import (
    COMETAPI_BASE_URL,
    COMETAPI_RULES,
    KLING_BASE_URL,
    check_base_url,
    mint_jwt,
)
from kling_async.simulator import Simulator, SimulatorConfig

# PyJWT warns about HMAC keys under 32 bytes (Kling's secret keys are longer).
SECRET = "kling-test-secret-key-0123456789abcdef"


def _decode(segment: str) -> dict[str, object]:
    padded = segment + "=" * (-len(segment) % 4)
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(padded))
    return result


def test_cometapi_routes_and_spelling() -> None:
    """CometAPI routes follow API.md and the scene field is spelled scence_image."""
    profile = CometAPI("k")
    assert profile.base_url == COMETAPI_BASE_URL
    assert profile.create_url(Kind.VIDEO) == (
        f"{COMETAPI_BASE_URL}/kling/v1/videos/multi-image2video"
    )
    assert profile.create_url(Kind.IMAGE) == f"{COMETAPI_BASE_URL}/kling/v1/images/generations"
    assert profile.task_url(Kind.IMAGE, "123") == (
        f"{COMETAPI_BASE_URL}/kling/v1/images/generations/123"
    )
    assert profile.task_url(Kind.VIDEO, "a/b c") == (
        f"{COMETAPI_BASE_URL}/kling/v1/videos/multi-image2video/a%2Fb%20c"
    )
    assert profile.list_url(Kind.VIDEO, 2, 50) == (
        f"{COMETAPI_BASE_URL}/kling/v1/videos/multi-image2video?pageNum=2&pageSize=50"
    )
    assert profile.scene_image_field == "scence_image"
    assert profile.authorization() == "Bearer k"


def test_kling_routes_and_spelling() -> None:
    """The Kling profile uses the official base, paths and scene_image."""
    profile = Kling("k")
    assert profile.base_url == KLING_BASE_URL
    assert profile.create_url(Kind.VIDEO) == (f"{KLING_BASE_URL}/v1/videos/multi-image2video")
    assert profile.create_url(Kind.IMAGE) == (f"{KLING_BASE_URL}/v1/images/multi-image2image")
    assert profile.scene_image_field == "scene_image"
    assert profile.authorization() == "Bearer k"


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing key is read from COMETAPI_KEY / KLING_* variables."""
    monkeypatch.setenv("COMETAPI_KEY", "env-key")
    monkeypatch.setenv("KLING_ACCESS_KEY", "ak")
    monkeypatch.setenv("KLING_SECRET_KEY", SECRET)
    monkeypatch.delenv("KLING_API_KEY", raising=False)
    assert CometAPI().api_key == "env-key"
    assert CometAPI("explicit").api_key == "explicit"
    kling = Kling()
    assert (kling.api_key, kling.access_key, kling.secret_key) == (None, "ak", SECRET)
    assert kling.has_credentials()
    monkeypatch.delenv("COMETAPI_KEY")
    assert not CometAPI().has_credentials()


def test_reprs_hide_every_secret() -> None:
    """No key, secret or token appears in a profile's repr."""
    secret = "s3cr3t-value"
    for profile in (CometAPI(secret), Kling(secret), Kling(access_key=secret, secret_key=secret)):
        assert secret not in repr(profile)
        assert secret not in str(profile)


def test_jwt_is_hs256_with_the_documented_claims() -> None:
    """The JWT has iss=access key, exp=now+1800, nbf=now-5 and a valid HS256 signature."""
    token = mint_jwt("ak", SECRET, now=1_000_000.7, ttl=1800)
    header, payload, signature = token.split(".")
    assert _decode(header) == {"alg": "HS256", "typ": "JWT"}
    assert _decode(payload) == {"iss": "ak", "exp": 1_001_800, "nbf": 999_995}
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert signature == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()


def test_minted_jwt_decodes_with_pyjwt_and_expires() -> None:
    """PyJWT verifies the profile's token with the secret; it is refused once expired."""
    profile = Kling(access_key="ak", secret_key=SECRET, jwt_ttl=1800)
    now = time.time()
    token = profile.authorization(now=now).removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="ak")
    assert claims == {"iss": "ak", "exp": int(now) + 1800, "nbf": int(now) - 5}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-key-of-32-bytes-or-more", algorithms=["HS256"])
    old = mint_jwt("ak", SECRET, now=now - 1801, ttl=1800)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(old, SECRET, algorithms=["HS256"])


def test_missing_pyjwt_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PyJWT, a Kling profile with an access/secret pair fails naming the extra."""
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ImportError, match=r"pip install 'kling-async\[kling\]'"):
        Kling(access_key="ak", secret_key=SECRET)
    with pytest.raises(ImportError, match=r"kling-async\[kling\]"):
        mint_jwt("ak", SECRET, now=0, ttl=10)
    assert Kling("api-key", access_key="ak", secret_key=SECRET).authorization() == "Bearer api-key"


def test_jwt_is_reminted_before_expiry() -> None:
    """A token is reused until refresh margin before expiry, then re-minted."""
    profile = Kling(access_key="ak", secret_key=SECRET, jwt_ttl=1800, jwt_refresh_margin=300)
    first = profile.authorization(now=1000.0)
    assert profile.authorization(now=1000.0 + 1499) == first
    second = profile.authorization(now=1000.0 + 1500)
    assert second != first
    assert profile.authorization(now=2500.0) == second
    profile.invalidate_token()
    assert profile.authorization(now=2501.0) != second
    assert profile.authorization().startswith("Bearer ")


def test_jwt_needs_both_keys() -> None:
    """Without an API key or a full access/secret pair there are no credentials."""
    profile = Kling(access_key="ak", secret_key=None)
    assert not profile.has_credentials()
    with pytest.raises(ValueError, match="needs api_key or access_key and secret_key"):
        profile.authorization()


def test_api_key_wins_over_jwt() -> None:
    """An API key is used as is even when access/secret keys are also set."""
    assert Kling("key", access_key="ak", secret_key=SECRET).authorization() == "Bearer key"
    CometAPI("k").invalidate_token()  # a no-op for plain keys


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://localhost:1/",
        "http://[::1]:9000",
        "https://api.example.com",
        "https://api.example.com/prefix/",
    ],
)
def test_accepted_base_urls(url: str) -> None:
    """https anywhere, http only on loopback; trailing slashes are dropped."""
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://api.example.com", "plain http"),
        ("http://10.0.0.1:80", "plain http"),
        ("ftp://127.0.0.1", r"http\(s\) URL with a host"),
        ("https://", r"http\(s\) URL with a host"),
        ("api.example.com", r"http\(s\) URL with a host"),
        ("https://h/?x=1", "query or fragment"),
    ],
)
def test_refused_base_urls(url: str, message: str) -> None:
    """Plain http off loopback, non-http schemes and queries are refused."""
    with pytest.raises(ValueError, match=message):
        check_base_url(url)
    with pytest.raises(ValueError, match=message):
        CometAPI("k", base_url=url)


def test_evolve_keeps_the_profile_valid() -> None:
    """attrs.evolve re-checks the base URL and gives the copy its own token cache."""
    profile = Kling(access_key="ak", secret_key=SECRET)
    token = profile.authorization(now=0.0)
    moved = attrs.evolve(profile, base_url="http://127.0.0.1:1")
    assert moved.base_url == "http://127.0.0.1:1"
    assert moved.authorization(now=10_000.0) != token
    with pytest.raises(ValueError, match="plain http"):
        attrs.evolve(profile, base_url="http://example.com")


def test_base_profile_is_abstract() -> None:
    """The base Profile has routes but no auth of its own."""
    profile = Profile(
        base_url="https://h",
        video_path="/v",
        image_path="/i",
        scene_image_field="s",
        rules=COMETAPI_RULES,
    )
    assert profile.path(Kind.IMAGE) == "/i"
    with pytest.raises(NotImplementedError):
        profile.authorization()
    with pytest.raises(NotImplementedError):
        profile.has_credentials()


async def test_pyjwt_token_is_accepted_by_the_simulator() -> None:
    """A Kling client authenticating with an access/secret pair creates a task on the simulator."""
    config = SimulatorConfig(api_keys=(), jwt_keys={"ak": SECRET})
    async with Simulator(config) as sim:
        profile = Kling(access_key="ak", secret_key=SECRET, base_url=sim.url)
        async with Client(profile=profile) as client:
            url = Image.from_url("https://example.invalid/a.png")
            task = await client.tasks.create(MultiImageToVideo(images=[url], prompt="p" * 600))
    assert task.task_id

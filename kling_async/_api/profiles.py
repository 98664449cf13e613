"""Routes, auth and documented rules as data: the CometAPI relay (default) and Kling's own API.

A profile knows where each endpoint lives, how the scene image field is spelled, how to
authenticate and which request rules its documentation states (:class:`Rules`). Keys
never appear in a profile's repr.
"""

import importlib
import ipaddress
import os
import string
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Final

import attrs

from .._core.errors import InvalidRequest
from .._core.models import Kind, MultiImageToVideo, Request

__all__ = [
    "COMETAPI_BASE_URL",
    "COMETAPI_RULES",
    "KLING_BASE_URL",
    "KLING_RULES",
    "CometAPI",
    "KindRules",
    "Kling",
    "Profile",
    "Rules",
    "check_base_url",
]

COMETAPI_BASE_URL: Final = "https://api.cometapi.com"
KLING_BASE_URL: Final = "https://api-singapore.klingai.com"
# RFC 3986 unreserved characters: the ones urllib.parse.quote(safe="") leaves alone.
_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _positive(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen(kw_only=True)
class KindRules:
    """What a profile documents for one endpoint (multi-image to video, or to image).

    Attributes:
        min_images: Fewest input images (``image_list`` / ``subject_image_list``).
        max_images: Most input images.
        models: The ``model_name`` values documented for the endpoint.
        max_prompt: Longest ``prompt``, characters.
        max_negative_prompt: Longest ``negative_prompt``, characters.
        masks: Whether ``static_mask``/``dynamic_masks`` may be sent (video only).
    """

    min_images: int = attrs.field(validator=_positive)
    max_images: int = attrs.field(validator=_positive)
    models: frozenset[str] = attrs.field(converter=_names)
    max_prompt: int = attrs.field(validator=_positive)
    max_negative_prompt: int = attrs.field(validator=_positive)
    masks: bool = False

    def __attrs_post_init__(self) -> None:
        if self.min_images > self.max_images:
            raise ValueError(f"min_images {self.min_images} > max_images {self.max_images}")
        if not self.models:
            raise ValueError("models must name at least one model")


@attrs.frozen(kw_only=True)
class Rules:
    """The request rules a profile's documentation states, checked before anything is sent.

    Each profile carries its own (:data:`COMETAPI_RULES`, :data:`KLING_RULES`). The
    request models check only the bounds every profile shares; these rules are checked
    where the profile is known: by the client before each create, and by
    ``kling-async validate --profile``. When a server accepts more than its pages say,
    give the profile other rules (``CometAPI(rules=attrs.evolve(COMETAPI_RULES, ...))``)
    or build the client with ``strict_rules=False`` (each request past a rule is then
    sent and logged as a warning).

    Attributes:
        name: Whose documentation this is (named in every error).
        video: Multi-image to video.
        image: Multi-image to image.
    """

    name: str
    video: KindRules
    image: KindRules

    def for_kind(self, kind: Kind) -> KindRules:
        """The rules of one endpoint."""
        return self.video if kind is Kind.VIDEO else self.image

    def violations(self, request: Request) -> Iterator[InvalidRequest]:
        """Every rule ``request`` breaks, in field order (none for a conforming request)."""
        rules = self.for_kind(request.kind)
        video = isinstance(request, MultiImageToVideo)
        endpoint = "multi-image to video" if video else "multi-image to image"
        where = f"by the {self.name} profile for {endpoint}"
        images_field = "image_list" if video else "subject_image_list"
        count = len(request.images)
        if not rules.min_images <= count <= rules.max_images:
            yield InvalidRequest(
                images_field,
                f"{count} images, {rules.min_images} to {rules.max_images} allowed {where}",
            )
        if request.model_name not in rules.models:
            allowed = ", ".join(sorted(rules.models))
            yield InvalidRequest(
                "model_name",
                f"{request.model_name!r} is not documented {where} (documented: {allowed})",
            )
        for field, text, limit in (
            ("prompt", request.prompt, rules.max_prompt),
            ("negative_prompt", request.negative_prompt, rules.max_negative_prompt),
        ):
            if len(text) > limit:
                yield InvalidRequest(field, f"{len(text)} characters, at most {limit} {where}")
        if isinstance(request, MultiImageToVideo) and not rules.masks:
            if request.static_mask is not None:
                yield InvalidRequest("static_mask", f"masks are not accepted {where}")
            if request.dynamic_masks:
                yield InvalidRequest("dynamic_masks", f"masks are not accepted {where}")

    def check(self, request: Request) -> None:
        """Raise the first rule ``request`` breaks.

        Raises:
            InvalidRequest: naming the field, the rule, the profile and the way past it.
        """
        for broken in self.violations(request):
            raise InvalidRequest(
                broken.field,
                f"{broken.rule}; if the server accepts it, build the Client with "
                "strict_rules=False or give the profile other rules=",
            )


#: CometAPI's pages (checked 2026-11): video takes 1 to 4 images, ``kling-v1-6`` only,
#: prompts of 500/200 characters and no masks; image takes 1 to 4 subject images with
#: ``kling-v2`` or ``kling-v2-1`` and prompts of 2,500 characters.
COMETAPI_RULES: Final = Rules(
    name="CometAPI",
    video=KindRules(
        min_images=1,
        max_images=4,
        models={"kling-v1-6"},
        max_prompt=500,
        max_negative_prompt=200,
        masks=False,
    ),
    image=KindRules(
        min_images=1,
        max_images=4,
        models={"kling-v2", "kling-v2-1"},
        max_prompt=2500,
        max_negative_prompt=2500,
    ),
)
#: Kling's own API docs (checked 2026-11): video takes up to 4 images, ``kling-v1-6``,
#: prompts of 2,500 characters and documents the masks; image as on CometAPI.
KLING_RULES: Final = Rules(
    name="Kling",
    video=KindRules(
        min_images=1,
        max_images=4,
        models={"kling-v1-6"},
        max_prompt=2500,
        max_negative_prompt=2500,
        masks=True,
    ),
    image=KindRules(
        min_images=1,
        max_images=4,
        models={"kling-v2", "kling-v2-1"},
        max_prompt=2500,
        max_negative_prompt=2500,
    ),
)


def _rules_repr(rules: Rules) -> str:
    # The documented rules by name; other rules (a user's override) in full.
    for name, known in (("COMETAPI_RULES", COMETAPI_RULES), ("KLING_RULES", KLING_RULES)):
        if rules == known:
            return name
    return repr(rules)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Return ``url`` without a trailing slash; refuse plain http except on loopback.

    Raises:
        ValueError: Not an http(s) URL, no host, or ``http://`` to a non-loopback host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"base_url {url!r} is plain http: only https is allowed, "
            "except for loopback hosts (127.0.0.1, ::1, localhost)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


def _env(name: str, value: str | None) -> str | None:
    # None means "not given": fall back to the environment (also after attrs.evolve).
    return value if value is not None else (os.environ.get(name) or None)


def _cometapi_key(value: str | None) -> str | None:
    return _env("COMETAPI_KEY", value)


def _kling_api_key(value: str | None) -> str | None:
    return _env("KLING_API_KEY", value)


def _kling_access_key(value: str | None) -> str | None:
    return _env("KLING_ACCESS_KEY", value)


def _kling_secret_key(value: str | None) -> str | None:
    return _env("KLING_SECRET_KEY", value)


@attrs.frozen(kw_only=True)
class Profile:
    """Where the endpoints live and how to authenticate (base of the two profiles).

    Attributes:
        base_url: Scheme and host (plain http only for loopback).
        video_path: Path of the multi-image-to-video endpoint.
        image_path: Path of the multi-image-to-image endpoint.
        scene_image_field: Wire spelling of ``MultiImageToImage.scene_image``.
        rules: What the profile's documentation allows (checked before each create).
    """

    base_url: str = attrs.field(converter=check_base_url)
    video_path: str
    image_path: str
    scene_image_field: str
    rules: Rules = attrs.field(repr=_rules_repr)

    def path(self, kind: Kind) -> str:
        """The endpoint path for ``kind``."""
        return self.video_path if kind is Kind.VIDEO else self.image_path

    def create_url(self, kind: Kind) -> str:
        """URL of the create endpoint."""
        return f"{self.base_url}{self.path(kind)}"

    def task_url(self, kind: Kind, task_id: str) -> str:
        """URL of one task, by task id or external task id."""
        # Ids are nearly always unreserved characters: skip quote() (it is read per poll).
        if not _UNRESERVED.issuperset(task_id):
            task_id = urllib.parse.quote(task_id, safe="")
        return f"{self.base_url}{self.path(kind)}/{task_id}"

    def list_url(self, kind: Kind, page: int, page_size: int) -> str:
        """URL of one page of the task list."""
        query = urllib.parse.urlencode({"pageNum": page, "pageSize": page_size})
        return f"{self.base_url}{self.path(kind)}?{query}"

    def has_credentials(self) -> bool:
        """True when the profile has something to authenticate with."""
        raise NotImplementedError

    def authorization(self, now: float | None = None) -> str:
        """The ``Authorization`` header value (a secret: never log it)."""
        raise NotImplementedError

    def invalidate_token(self) -> None:
        """Forget a cached token so the next call mints a fresh one (no-op for keys)."""


@attrs.frozen(kw_only=True)
class CometAPI(Profile):
    """The CometAPI relay (the default profile).

    Args:
        api_key: The CometAPI key; read from ``COMETAPI_KEY`` when not given.
        rules: The request rules checked before sending (:data:`COMETAPI_RULES`).
    """

    api_key: str | None = attrs.field(
        default=None, converter=_cometapi_key, repr=False, kw_only=False
    )
    base_url: str = attrs.field(default=COMETAPI_BASE_URL, converter=check_base_url)
    video_path: str = "/kling/v1/videos/multi-image2video"
    image_path: str = "/kling/v1/images/generations"
    # CometAPI's page documents this misspelling; see API.md.
    scene_image_field: str = "scence_image"
    rules: Rules = attrs.field(default=COMETAPI_RULES, repr=_rules_repr)

    def has_credentials(self) -> bool:
        """True when a key is set."""
        return bool(self.api_key)

    def authorization(self, now: float | None = None) -> str:
        """``Bearer <key>``."""
        return f"Bearer {self.api_key}"


_KLING_EXTRA: Final = "kling-async[kling]"


_NO_PYJWT: Final = (
    "the Kling profile's access/secret key auth signs a JWT with PyJWT, which is not "
    f"installed: pip install '{_KLING_EXTRA}' (or give the Kling profile an api_key)"
)


def _require_pyjwt() -> None:
    """Raise ImportError naming the ``kling`` extra when PyJWT is not installed."""
    try:
        importlib.import_module("jwt")
    except ImportError:
        raise ImportError(_NO_PYJWT) from None


def mint_jwt(access_key: str, secret_key: str, *, now: float, ttl: int) -> str:
    """Mint Kling's HS256 JWT (``iss`` = access key, ``exp`` = now + ttl, ``nbf`` = now - 5).

    Signed by PyJWT (the ``kling`` extra).

    Raises:
        ImportError: PyJWT is not installed (the message names the extra).
    """
    try:
        import jwt  # noqa: PLC0415 - an optional extra, needed by this auth only
    except ImportError:
        raise ImportError(_NO_PYJWT) from None
    claims = {"iss": access_key, "exp": int(now) + ttl, "nbf": int(now) - 5}
    return jwt.encode(claims, secret_key, algorithm="HS256")


@attrs.define
class _TokenCache:
    token: str | None = None
    expires_at: float = 0.0


@attrs.frozen(kw_only=True)
class Kling(Profile):
    """Kling's own API: an API key, or an access/secret key pair signing a JWT.

    Args:
        api_key: A Kling API key (``KLING_API_KEY``).
        access_key: Access key for JWT auth (``KLING_ACCESS_KEY``).
        secret_key: Secret key for JWT auth (``KLING_SECRET_KEY``).
        jwt_ttl: Lifetime of a minted token, seconds.
        jwt_refresh_margin: A token is re-minted this many seconds before it expires.
        rules: The request rules checked before sending (:data:`KLING_RULES`).

    Raises:
        ImportError: An access/secret pair (and no API key) without PyJWT installed; the
            message names the ``kling`` extra.
    """

    api_key: str | None = attrs.field(
        default=None, converter=_kling_api_key, repr=False, kw_only=False
    )
    access_key: str | None = attrs.field(default=None, converter=_kling_access_key, repr=False)
    secret_key: str | None = attrs.field(default=None, converter=_kling_secret_key, repr=False)
    base_url: str = attrs.field(default=KLING_BASE_URL, converter=check_base_url)
    video_path: str = "/v1/videos/multi-image2video"
    image_path: str = "/v1/images/multi-image2image"
    scene_image_field: str = "scene_image"
    rules: Rules = attrs.field(default=KLING_RULES, repr=_rules_repr)
    jwt_ttl: int = 1800
    jwt_refresh_margin: int = 300
    # a string annotation: help(ka.Kling) lists __annotations__, and this type is private
    _cache: "_TokenCache" = attrs.field(factory=_TokenCache, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.api_key and self.access_key and self.secret_key:
            _require_pyjwt()  # fail when the profile is made, not at the first request

    def has_credentials(self) -> bool:
        """True when an API key or an access/secret pair is set."""
        return bool(self.api_key) or bool(self.access_key and self.secret_key)

    def authorization(self, now: float | None = None) -> str:
        """``Bearer <key>``, or ``Bearer <jwt>`` re-minted before it expires."""
        if self.api_key:
            return f"Bearer {self.api_key}"
        if not (self.access_key and self.secret_key):
            raise ValueError("Kling profile needs api_key or access_key and secret_key")
        now = time.time() if now is None else now
        cache = self._cache
        if cache.token is None or now >= cache.expires_at - self.jwt_refresh_margin:
            cache.token = mint_jwt(self.access_key, self.secret_key, now=now, ttl=self.jwt_ttl)
            cache.expires_at = int(now) + self.jwt_ttl
        return f"Bearer {cache.token}"

    def invalidate_token(self) -> None:
        """Drop the cached JWT (after a 1003/1004 answer) so the next call re-mints."""
        self._cache.token = None

"""Standard Webhooks verification and receiver configuration (no network)."""

import base64
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import (
    KlingError,
    RejectReason,
    WebhookConfig,
    WebhookReceiver,
    WebhookVerificationError,
    WebhookVerifier,
)
from kling_async._core.models import TaskStatus
from kling_async._webhooks.config import clean_path
from kling_async._webhooks.receiver import _parse_delivery, _url_host
from kling_async._webhooks.signing import DEFAULT_TOLERANCE
from tests._webhook_helpers import (
    VECTOR_BODY as BODY,
)
from tests._webhook_helpers import (
    VECTOR_ID as MSG_ID,
)
from tests._webhook_helpers import (
    VECTOR_SECRET as SECRET,
)
from tests._webhook_helpers import (
    VECTOR_SIGNATURE as SIGNATURE,
)
from tests._webhook_helpers import (
    VECTOR_TIMESTAMP as TIMESTAMP,
)
from tests._webhook_helpers import (
    vector_headers,
)


def verifier_at(now: float, secret: str | bytes = SECRET) -> WebhookVerifier:
    return WebhookVerifier(secret, now=lambda: now)


def test_fixture_vector_verifies() -> None:
    """The documented Kling test vector is accepted and its webhook-id returned."""
    assert verifier_at(TIMESTAMP).verify(vector_headers(), BODY) == MSG_ID


def test_sign_reproduces_fixture_signature() -> None:
    """sign() yields the documented signature for the vector's id, timestamp and body."""
    assert verifier_at(0).sign(MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_headers_helper_round_trips() -> None:
    """headers() builds a header set that verify() accepts at the same instant."""
    verifier = verifier_at(TIMESTAMP + 10)
    headers = verifier.headers("msg_1", b"{}")
    assert headers["webhook-timestamp"] == str(TIMESTAMP + 10)
    assert verifier.verify(headers, b"{}") == "msg_1"
    explicit = verifier.headers(MSG_ID, BODY, timestamp=TIMESTAMP)
    assert explicit == vector_headers()


@pytest.mark.parametrize("skew", [-DEFAULT_TOLERANCE, 0, DEFAULT_TOLERANCE])
def test_timestamp_at_tolerance_edges_accepted(skew: float) -> None:
    """A timestamp exactly 300 s in the past or the future is still accepted."""
    assert verifier_at(TIMESTAMP + skew).verify(vector_headers(), BODY) == MSG_ID


@pytest.mark.parametrize("skew", [-DEFAULT_TOLERANCE - 1, DEFAULT_TOLERANCE + 1, 10**6])
def test_timestamp_past_tolerance_rejected(skew: float) -> None:
    """A timestamp more than 300 s off, either way, is BAD_TIMESTAMP."""
    with pytest.raises(WebhookVerificationError) as info:
        verifier_at(TIMESTAMP + skew).verify(vector_headers(), BODY)
    assert info.value.reason is RejectReason.BAD_TIMESTAMP


def test_custom_tolerance() -> None:
    """tolerance= narrows the window; a negative tolerance is refused."""
    verifier = WebhookVerifier(SECRET, tolerance=5, now=lambda: TIMESTAMP + 6)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(vector_headers(), BODY)
    with pytest.raises(ValueError, match="tolerance"):
        WebhookVerifier(SECRET, tolerance=-1)


@pytest.mark.parametrize("raw", ["12a", "-1781080794", "+1781080794", " 1781080794", "1e9", "١٢"])
def test_unreadable_timestamp_rejected(raw: str) -> None:
    """Anything but ASCII digits in webhook-timestamp is BAD_TIMESTAMP."""
    headers = vector_headers() | {"webhook-timestamp": raw}
    with pytest.raises(WebhookVerificationError) as info:
        verifier_at(TIMESTAMP).verify(headers, BODY)
    assert info.value.reason is RejectReason.BAD_TIMESTAMP


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_rejected(missing: str) -> None:
    """Each of the three headers is required (MISSING_HEADERS)."""
    headers = vector_headers()
    del headers[missing]
    with pytest.raises(WebhookVerificationError) as info:
        verifier_at(TIMESTAMP).verify(headers, BODY)
    assert info.value.reason is RejectReason.MISSING_HEADERS


@pytest.mark.parametrize(
    "signature",
    [
        f"v1,AAAA {SIGNATURE}",
        f"{SIGNATURE} v1,AAAA",
        f"v1a,xyz v2,{SIGNATURE[3:]} {SIGNATURE}",
        f"  {SIGNATURE}  ",
        f"garbage v1,{'ä' * 10} {SIGNATURE}",
    ],
)
def test_any_of_several_signatures_accepted(signature: str) -> None:
    """One matching v1 signature among several space-separated ones is enough."""
    assert verifier_at(TIMESTAMP).verify(vector_headers(signature), BODY) == MSG_ID


@pytest.mark.parametrize(
    "signature",
    [
        "v1,AAAA v1,BBBB",
        f"v2,{SIGNATURE[3:]}",
        SIGNATURE[3:],
        SIGNATURE.lower(),
        SIGNATURE + "A",
        "v1,",
    ],
)
def test_no_matching_signature_rejected(signature: str) -> None:
    """Wrong, truncated, other-version or bare signatures are BAD_SIGNATURE."""
    with pytest.raises(WebhookVerificationError) as info:
        verifier_at(TIMESTAMP).verify(vector_headers(signature), BODY)
    assert info.value.reason is RejectReason.BAD_SIGNATURE
    assert info.value.http_status == 401


def test_tampered_body_or_id_rejected() -> None:
    """Changing one byte of the body, or the webhook-id, breaks the signature."""
    verifier = verifier_at(TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(vector_headers(), BODY.replace(b"succeeded", b"succeedeD"))
    with pytest.raises(WebhookVerificationError):
        verifier.verify(vector_headers() | {"webhook-id": "9876543211"}, BODY)


def test_headers_case_insensitive_in_plain_dict() -> None:
    """Header names match case-insensitively even in a plain dict."""
    headers = {k.title(): v for k, v in vector_headers().items()}
    assert verifier_at(TIMESTAMP).verify(headers, BODY) == MSG_ID


def test_secret_forms_are_equivalent() -> None:
    """whsec_-prefixed base64, bare base64 and the raw bytes are the same key."""
    raw = base64.b64decode(SECRET.removeprefix("whsec_"))
    for secret in (SECRET, SECRET.removeprefix("whsec_"), raw):
        assert verifier_at(TIMESTAMP, secret).verify(vector_headers(), BODY) == MSG_ID


@pytest.mark.parametrize("secret", ["whsec_not*base64!", "whsec_", b"", "whsec_YQ"])
def test_bad_secret_refused_without_echo(secret: str | bytes) -> None:
    """An empty or non-base64 secret is a ValueError whose text does not contain it."""
    with pytest.raises(ValueError, match="webhook secret") as info:
        WebhookVerifier(secret)
    if isinstance(secret, str) and len(secret) > len("whsec_"):
        assert secret.removeprefix("whsec_") not in str(info.value)


def test_secret_never_in_repr() -> None:
    """Neither the verifier nor the config shows the secret in its repr."""
    verifier = WebhookVerifier(SECRET)
    config = WebhookConfig(secret=SECRET)
    for text in (repr(verifier), repr(config)):
        assert "dGVzdHNl" not in text
    assert "hidden" in repr(verifier)


def test_verification_error_in_the_tree() -> None:
    """WebhookVerificationError is a KlingError and a ValueError, and pickles."""
    err = WebhookVerificationError("no", RejectReason.BAD_SIGNATURE)
    assert isinstance(err, KlingError)
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert clone.reason is RejectReason.BAD_SIGNATURE
    assert str(clone).startswith("no")


def test_reject_reasons_map_to_http_statuses() -> None:
    """Each reject reason names the status the receiver answers."""
    assert {r: r.http_status for r in RejectReason} == {
        RejectReason.RATE_LIMITED: 429,
        RejectReason.TOO_LARGE: 413,
        RejectReason.UNKNOWN_TOKEN: 404,
        RejectReason.MISSING_HEADERS: 401,
        RejectReason.BAD_TIMESTAMP: 401,
        RejectReason.BAD_SIGNATURE: 401,
        RejectReason.MALFORMED: 400,
    }


# -- configuration ---------------------------------------------------------------------


def test_config_defaults() -> None:
    """Defaults: loopback, free port, no secret, 5 min tolerance, 64 KiB cap, route at /."""
    config = WebhookConfig()
    assert (config.host, config.port, config.secret) == ("127.0.0.1", 0, None)
    assert config.tolerance == 300
    assert config.max_body == 64 * 1024
    assert config.route_path == ""


@pytest.mark.parametrize(
    ("public_url", "path", "route"),
    [
        ("https://me.example/hooks/kling/", None, "/hooks/kling"),
        ("https://me.example", None, ""),
        ("https://me.example/a", "/b/", "/b"),
        (None, "/x", "/x"),
        (None, "/", ""),
    ],
)
def test_route_path(public_url: str | None, path: str | None, route: str) -> None:
    """The route prefix is path, else public_url's path, without a trailing slash."""
    assert WebhookConfig(public_url=public_url, path=path).route_path == route


@pytest.mark.parametrize(
    "kwargs",
    [
        {"public_url": "ftp://me.example/x"},
        {"public_url": "https:///nohost"},
        {"public_url": "https://me.example/x?a=1"},
        {"public_url": "https://me.example/x#f"},
        {"path": "hooks"},
        {"path": "/hooks/{token}"},
        {"public_url": "https://me.example/a?"},
        {"port": 70000},
        {"port": -1},
        {"max_body": 0},
        {"max_rate": 0},
        {"rate_period": -1.0},
        {"tolerance": -1.0},
        {"secret": "whsec_!!"},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    """Each invalid knob is refused at construction with a ValueError."""
    with pytest.raises(ValueError):
        WebhookConfig(**kwargs)  # type: ignore[arg-type]


def test_clean_path() -> None:
    """Route prefixes are normalised: '' or '/a/b', never a trailing slash."""
    assert clean_path("") == ""
    assert clean_path("/a/b/") == "/a/b"


def test_url_host_brackets_ipv6() -> None:
    """IPv6 literals are bracketed in URLs; names and IPv4 are not."""
    assert _url_host("::1") == "[::1]"
    assert _url_host("127.0.0.1") == "127.0.0.1"
    assert _url_host("localhost") == "localhost"


# -- body parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "task_id", "status"),
    [
        (b'{"task_id":"t1","task_status":"succeed"}', "t1", TaskStatus.SUCCEEDED),
        (b'{"task_id":"t1","task_status":"processing","x":[1]}', "t1", TaskStatus.PROCESSING),
        (b'{"code":0,"data":{"task_id":"t2","task_status":"failed"}}', "t2", TaskStatus.FAILED),
        (
            b'{"data":{"status":"IN_PROGRESS","data":{"task_id":"t3","task_status":"submitted"}}}',
            "t3",
            TaskStatus.SUBMITTED,
        ),
        (b'{"task_id":"t4","task_status":"SUCCESS"}', "t4", TaskStatus.SUCCEEDED),
        (b'{"task_id":"t5","task_status":"weird"}', "t5", None),
        (b'{"task_id":7,"task_status":"succeed"}', "7", TaskStatus.SUCCEEDED),
        (b'{"code":0,"data":{"task_id":"t7","task_status":"odd"}}', "t7", None),
        (b'{"task_id":"t6"}', "t6", None),
        (BODY, "1234567890", TaskStatus.SUCCEEDED),
    ],
)
def test_parse_delivery_shapes(body: bytes, task_id: str, status: TaskStatus | None) -> None:
    """Native, enveloped, wrapped and Standard Webhooks bodies all yield a hint."""
    delivery = _parse_delivery(body)
    assert (delivery.task_id, delivery.status) == (task_id, status)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"task_id":""}',
        b'{"task_id":"","task_status":"succeed"}',
        b'{"task_id":5}',
        b'{"id":"x"}',
        b'{"data":{"data":{"data":{"task_id":"deep"}}}}',
        b"[" * 100_000,
    ],
)
def test_parse_delivery_rejects_non_tasks(body: bytes) -> None:
    """Bodies that are not JSON or hold no task id raise ValueError."""
    with pytest.raises(ValueError, match="delivery body"):
        _parse_delivery(body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["task_id", "task_status", "id", "status", "data", "task_result", "x"])
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@given(_JSON)
def test_parse_delivery_never_raises_anything_but_value_error(value: object) -> None:
    """Any JSON value parses to a delivery with a non-empty task id or raises ValueError."""
    try:
        delivery = _parse_delivery(json.dumps(value).encode())
    except ValueError:
        return
    assert isinstance(delivery.task_id, str)
    assert delivery.task_id


def test_subscription_repr_when_unbound() -> None:
    """A subscription's repr works even when its receiver has no URL, and hides the token."""
    sub = WebhookReceiver().subscribe(lambda task_id, status: None)
    assert repr(sub) == "WebhookSubscription(base='unbound', token=<hidden>)"

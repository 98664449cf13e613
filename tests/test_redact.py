"""The Redactor: what it masks, what it leaves readable, and where it is applied."""

import json

import kling_async as ka
from kling_async._api.transport import AiohttpTransport, HttpRequest, HttpResponse, decode_response
from kling_async._core.redact import MASK, Redactor, scrub_credentials
from tests._hostile_gateway import HostileGateway

KEY = "sk-redact-0123456789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhayJ9.c2lnbmF0dXJl"


def test_literal_secret_masked_in_any_case_and_encoding() -> None:
    """The key is masked raw, upper-cased and percent-encoded."""
    redactor = Redactor([KEY + "/x y"])
    secret = KEY + "/x y"
    for spelling in (
        secret,
        secret.upper(),
        "sk-redact-0123456789%2Fx%20y",
        "sk-redact-0123456789/x%20y",
    ):
        assert redactor.text(f"a {spelling} b") == f"a {MASK} b"
    assert Redactor([KEY]).text(f"a+{KEY.upper()}+b") == f"a+{MASK}+b"


def test_longest_secret_wins() -> None:
    """A secret containing another is masked whole, not in parts."""
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.text("xabcdefghx") == f"x{MASK}x"


def test_short_and_empty_secrets_are_ignored() -> None:
    """Secrets under 4 characters (or None) would mask ordinary text: not looked for."""
    redactor = Redactor(["", None, "abc"])
    assert redactor.text("abcabc") == "abcabc"
    assert repr(redactor) == "Redactor(<0 secrets>)"


def test_bearer_tokens_and_jwts_masked_without_knowing_them() -> None:
    """Any 'Bearer <8+ chars>' (also %20 or +) and any JWT is masked; the scheme stays."""
    assert scrub_credentials("got Bearer abcdefgh123, sorry") == f"got Bearer {MASK}, sorry"
    assert scrub_credentials("q=bearer%20abcdefgh123&x=1") == f"q=bearer%20{MASK}&x=1"
    assert scrub_credentials("q=Bearer+abcdefgh123") == f"q=Bearer+{MASK}"
    assert scrub_credentials(f"token {JWT}.") == f"token {MASK}."


def test_ordinary_words_stay_readable() -> None:
    """Text without a credential shape is returned unchanged."""
    for text in ("Bearer token invalid", "invalid bearer", "keys and eyes", ""):
        assert scrub_credentials(text) == text


def test_including_adds_only_what_is_new() -> None:
    """including() is the same redactor for known or JWT-shaped tokens, a new one otherwise."""
    redactor = Redactor([KEY])
    assert redactor.including(KEY, None, "", JWT) is redactor
    wider = redactor.including("other-secret-1")
    assert wider is not redactor
    assert wider.text(f"{KEY} other-secret-1") == f"{MASK} {MASK}"
    assert redactor.text("other-secret-1") == "other-secret-1"


def test_tree_masks_keys_values_and_deep_nesting() -> None:
    """tree() copies a JSON value masking every string, keys too, without recursion."""
    redactor = Redactor([KEY])
    items: list[object] = [f"x{KEY}", 1, None, True, {"u": f"Bearer {KEY}"}]
    value = {KEY: items, "n": 2.5}
    assert redactor.tree(value) == {
        MASK: [f"x{MASK}", 1, None, True, {"u": f"Bearer {MASK}"}],
        "n": 2.5,
    }
    assert items[0] == f"x{KEY}"  # the input is not changed
    assert redactor.tree(KEY) == MASK
    assert redactor.tree(7) == 7
    assert redactor.optional(None) is None
    deep: list[object] = []
    inner = deep
    for _ in range(50_000):
        nested: list[object] = []
        inner.append(nested)
        inner = nested
    inner.append(KEY)
    copied = redactor.tree(deep)
    for _ in range(50_000):
        copied = copied[0]
    assert copied == [MASK]


def test_errors_mask_credential_shapes_themselves() -> None:
    """A KlingError built anywhere masks bearer tokens and JWTs in message and request id."""
    error = ka.ServerError(f"echo Bearer {KEY}", request_id=JWT)
    assert error.message == f"echo Bearer {MASK}"
    assert error.request_id == MASK
    assert KEY not in str(error) + repr(error)


def test_long_server_message_is_clipped_after_masking() -> None:
    """A huge error message is clipped (to 2000 characters), with the key masked first."""
    body = {"code": 1200, "message": f"{KEY} " + "x" * 5000, "request_id": "r" * 500}
    response = HttpResponse(400, {}, json.dumps(body).encode())
    try:
        decode_response(response, secrets=[KEY])
    except ka.BadRequest as exc:
        error = exc
    assert error.message.startswith(f"{MASK} xxx")
    assert len(error.message) == 2003
    assert error.request_id == "r" * 200 + "..."


def test_decode_accepts_a_redactor() -> None:
    """decode_response takes a Redactor as well as a list of secrets, and masks the data."""
    body = {"code": 0, "data": {"task_id": KEY, "msg": f"Bearer {KEY}"}}
    response = HttpResponse(200, {}, json.dumps(body).encode())
    assert decode_response(response, secrets=Redactor([KEY])) == {
        "task_id": MASK,
        "msg": f"Bearer {MASK}",
    }


async def test_transport_error_text_is_masked_of_the_request_header() -> None:
    """A transport error naming a path that holds the header's token shows it masked."""
    async with HostileGateway("drop") as gateway, AiohttpTransport() as transport:
        request = HttpRequest(
            "GET", f"{gateway.url}/kling/v1/x/{KEY}", {"Authorization": f"Bearer {KEY}"}
        )
        try:
            await transport.send(request)
        except ka.ConnectionLost as exc:
            error = exc
    assert error.message == f"GET /kling/v1/x/{MASK}: connection lost (ServerDisconnectedError)"
    assert error.args == (error.message,)
    assert error.__cause__ is None


def test_may_touch_skips_only_answers_with_nothing_to_mask() -> None:
    """The byte pre-scan: a key (any case), a shape or any JSON escape means walk the tree."""
    redactor = Redactor([KEY])
    assert not redactor.may_touch(b'{"task_id": "1", "url": "https://cdn.example/v.mp4"}')
    assert redactor.may_touch(KEY.upper().encode())
    assert redactor.may_touch(b'"\\u0073k-redact"')
    assert redactor.may_touch(b'"BEARER x"')
    assert redactor.may_touch(b'"eyJhbGci"')
    escaped = json.dumps({"code": 0, "data": {"m": KEY}}).replace("s", "\\u0073").encode()
    assert decode_response(HttpResponse(200, {}, escaped), secrets=redactor) == {"m": MASK}


def test_errors_built_anywhere_mask_keys_a_client_was_given() -> None:
    """Once a Client holds a key, any KlingError (a download error too) masks it."""
    key = "sk-remembered-0123456789"
    ka.Client(key)
    ka.Client("short-key")
    error = ka.DownloadError(f"redirected to /x?k={key}", url=f"https://files.example/{key}")
    assert error.message == f"redirected to /x?k={MASK}"
    assert error.url == f"https://files.example/{MASK}"
    assert "short-key" in ka.KlingError("short-key").message

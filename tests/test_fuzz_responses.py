"""Hypothesis fuzzing of server answers (issue 12): the decode path raises only KlingError.

Random statuses, headers and bodies (JSON of any shape, envelopes, task-like objects,
broken JSON, raw bytes), with the key sprinkled into strings, go through
``decode_response`` and the task parsers, and through a Client on a MockTransport. No
exception but the library's own typed errors escapes, and the key is in none of them
nor in anything parsed.
"""

import json
import urllib.parse
from typing import Any

import anyio
import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import kling_async as ka
from kling_async._api.transport import HttpRequest, HttpResponse, MockTransport, decode_response
from kling_async._api.wire import parse_task, parse_task_list
from tests.test_hostile_key import exception_texts

KEY = "sk-fuzz-0123456789abcdef"
FORMS = (KEY.lower(), urllib.parse.quote(KEY, safe="").lower())
ECHOES = (
    KEY,
    f"Bearer {KEY}",
    urllib.parse.quote(f"Bearer {KEY}"),
    KEY.upper(),
    f"https://files.example/{KEY}.mp4?auth={urllib.parse.quote(KEY)}",
)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_no_key(text: str) -> None:
    """The key, in any case, raw or percent-encoded, is not in ``text``."""
    lowered = text.lower()
    for form in FORMS:
        assert form not in lowered, text[:500]


strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(ECHOES),
    st.builds(
        lambda a, echo, b: a + echo + b,
        st.text(max_size=8),
        st.sampled_from(ECHOES),
        st.text(max_size=8),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just("9" * 5000),
    st.floats(),
    strings,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=20,
)
statuses = st.sampled_from(["submitted", "processing", "succeed", "failed", "SUCCESS", "odd"])
media = st.fixed_dictionaries(
    {"url": strings}, optional={"id": strings, "duration": json_values, "index": json_values}
)
tasks = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.one_of(strings, st.integers()),
        "task_status": st.one_of(statuses, json_values),
        "task_status_msg": st.one_of(strings, json_values),
        "task_info": st.one_of(st.fixed_dictionaries({"external_task_id": strings}), json_values),
        "task_result": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "videos": st.lists(media, max_size=2),
                    "images": st.lists(media, max_size=2),
                },
            ),
            json_values,
        ),
        "created_at": json_values,
        "fail_reason": strings,
        "status": statuses,
        "data": json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(
            st.sampled_from([0, "0", "success", 1200, 1302, 5000, "1303", "²", "9" * 5000]),
            json_values,
        ),
        "message": strings,
        "request_id": st.one_of(strings, json_values),
        "data": st.one_of(tasks, st.lists(tasks, max_size=3), json_values),
        "error": st.one_of(
            st.fixed_dictionaries({}, optional={"message": strings, "code": json_values}),
            json_values,
        ),
    },
)


def _dump(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()
    except ValueError:  # an integer past the str conversion limit
        return b"{}"


def _escape_all(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


bodies = st.one_of(
    st.builds(_dump, envelopes),
    st.builds(_dump, json_values),
    st.builds(_escape_all, envelopes),
    st.builds(lambda body, cut: _dump(body)[:cut], envelopes, st.integers(0, 200)),
    st.binary(max_size=200),
    st.just(b"[" * 100_000),
    st.just(b'{"code": 0, "data": ' + b"9" * 5000 + b"}"),
    st.builds(lambda echo: f"<html>{echo}</html>".encode(), strings),
)
header_values = st.one_of(
    strings,
    st.sampled_from(
        [
            "120",
            "-1",
            "nan",
            "inf",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Sat, 01 Jan 9999 00:00:00 GMT",
        ]
    ),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Location", "X-Request-Id", "Content-Type"]),
    header_values,
    max_size=4,
)
responses = st.builds(HttpResponse, st.integers(100, 599), headers, bodies)


def _check_outcome(run: Any) -> None:
    try:
        value = run()
    except ka.KlingError as exc:
        for text in exception_texts(exc):
            assert_no_key(text)
    else:
        assert_no_key(repr(value))


@FUZZ
@given(response=responses)
def test_decoding_any_answer_raises_only_typed_errors(response: HttpResponse) -> None:
    """decode_response, then parse_task / parse_task_list: a value or a KlingError, no key."""
    _check_outcome(lambda: decode_response(response, secrets=[KEY]))
    try:
        data = decode_response(response, secrets=[KEY])
    except ka.KlingError:
        return
    _check_outcome(lambda: parse_task(data))
    _check_outcome(lambda: parse_task_list(data))


@FUZZ
@given(data=st.one_of(tasks, json_values))
def test_parse_task_of_anything_raises_only_malformed(data: Any) -> None:
    """parse_task of any JSON value is a Task or a MalformedResponse."""
    outcome: ka.Task | ka.MalformedResponse
    try:
        outcome = parse_task(data)
    except ka.MalformedResponse as exc:
        outcome = exc
    assert isinstance(outcome, ka.Task) or outcome.path.startswith("$")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses)
def test_client_on_any_answer_raises_only_typed_errors(response: HttpResponse) -> None:
    """A Client whose transport answers anything: tasks.get gives a Task or a KlingError."""

    def handler(_: HttpRequest) -> HttpResponse:
        return response

    async def call() -> None:
        async with ka.Client(KEY, transport=MockTransport(handler)) as client:
            try:
                task = await client.tasks.get("t1", kind=ka.Kind.VIDEO)
            except ka.KlingError as exc:
                for text in exception_texts(exc):
                    assert_no_key(text)
            else:
                assert_no_key(repr(task))

    anyio.run(call)

"""The exception tree: scopes, context in messages, pickling, may_have_created."""

import pickle

import pytest

from kling_async import (
    AccountError,
    APIError,
    AuthenticationError,
    BadRequest,
    BatchStopped,
    ConcurrencyLimited,
    ConnectError,
    ConnectionLost,
    DuplicateExternalId,
    InvalidRequest,
    JobTimedOut,
    KlingError,
    MalformedResponse,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    RequestTimeout,
    Scope,
    ServerError,
    TaskFailed,
    TransportError,
)
from kling_async._core.errors import may_have_created

SCOPES = [
    (AuthenticationError, Scope.BATCH),
    (AccountError, Scope.BATCH),
    (PermissionDenied, Scope.BATCH),
    (BadRequest, Scope.JOB),
    (DuplicateExternalId, Scope.JOB),
    (NotFound, Scope.JOB),
    (PolicyViolation, Scope.JOB),
    (RateLimited, Scope.TRANSIENT),
    (ConcurrencyLimited, Scope.TRANSIENT),
    (ServerError, Scope.TRANSIENT),
    (TransportError, Scope.TRANSIENT),
    (ConnectError, Scope.TRANSIENT),
    (RequestTimeout, Scope.TRANSIENT),
    (ConnectionLost, Scope.TRANSIENT),
    (MalformedResponse, Scope.TRANSIENT),
    (TaskFailed, Scope.JOB),
    (JobTimedOut, Scope.JOB),
    (APIError, Scope.JOB),
]


@pytest.mark.parametrize(("cls", "scope"), SCOPES)
def test_each_error_has_its_documented_scope(cls: type[KlingError], scope: Scope) -> None:
    """Every class carries the scope the error table gives it."""
    error = cls("boom")
    assert error.scope is scope
    assert isinstance(error, KlingError)


def test_scope_can_be_overridden() -> None:
    """An explicit scope wins over the class default."""
    assert APIError("x", scope=Scope.TRANSIENT).scope is Scope.TRANSIENT


def test_str_carries_context_fields() -> None:
    """The text names job, task, status, code, request id and retry-after."""
    error = RateLimited(
        "slow down",
        http_status=429,
        code=1302,
        request_id="r-1",
        task_id="t-1",
        job_key="k",
        retry_after=2.5,
    )
    assert str(error) == (
        "slow down [job='k', task_id=t-1, http=429, code=1302, request_id=r-1, retry_after=2.5s]"
    )
    assert repr(error).startswith("RateLimited(")
    assert str(KlingError("plain")) == "plain"


def test_invalid_request_names_field_and_rule() -> None:
    """InvalidRequest is a ValueError whose text is 'field: rule'."""
    error = InvalidRequest("image_list[2]", "280x900 is below 300 px")
    assert isinstance(error, ValueError)
    assert str(error) == "image_list[2]: 280x900 is below 300 px"
    assert (error.field, error.rule) == ("image_list[2]", "280x900 is below 300 px")
    moved = error.at("subject_image_list[0]")
    assert moved.field == "subject_image_list[0]"
    assert moved.rule == error.rule


def test_malformed_response_has_a_path() -> None:
    """MalformedResponse reports the JSON path of the bad value."""
    error = MalformedResponse("bad status", path="$.data.task_status", http_status=200)
    assert error.path == "$.data.task_status"
    assert "at $.data.task_status" in str(error)
    assert MalformedResponse("x").path == "$"


def test_batch_stopped_keeps_its_reason() -> None:
    """BatchStopped wraps the batch-scoped error that opened the circuit."""
    reason = AccountError("arrears", code=1101)
    error = BatchStopped(reason, job_key="j")
    assert error.reason is reason
    assert error.scope is Scope.BATCH
    assert str(error) == "batch stopped: arrears [job='j']"


def test_duplicate_external_id_is_a_bad_request() -> None:
    """DuplicateExternalId derives from BadRequest (callers may catch either)."""
    assert issubclass(DuplicateExternalId, BadRequest)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RequestTimeout("t"), True),
        (ConnectionLost("l"), True),
        (MalformedResponse("m"), True),
        (ServerError("s"), True),
        (ConnectError("c"), False),
        (BadRequest("b"), False),
        (RateLimited("r"), False),
        (ConcurrencyLimited("c"), False),
        (AuthenticationError("a"), False),
    ],
)
def test_may_have_created(error: KlingError, expected: bool) -> None:
    """Only errors after the request may have reached the server count as ambiguous."""
    assert may_have_created(error) is expected


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("r", http_status=429, code=1302, retry_after=1.0, request_id="q"),
        InvalidRequest("prompt", "too long", job_key="k"),
        MalformedResponse("m", path="$.data", http_status=200),
        BatchStopped(AccountError("arrears")),
    ],
)
def test_errors_pickle_round_trip(error: KlingError) -> None:
    """Errors survive pickling (process pools, multiprocessing logs) with attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__.keys() == error.__dict__.keys()

"""File names from job keys: flat, safe, distinct, whatever the key holds."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_async import UnsafeKey
from kling_async._durable.downloads import file_stem

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a\x00b",
        "/etc/passwd",
        "\\\\server\\share",
        "C:\\Windows",
        "c:x",
        "..",
        "a/../b",
        "..\\x",
    ],
)
def test_unsafe_keys_are_rejected(key: str) -> None:
    """Empty keys, NUL, absolute paths and '..' parts raise UnsafeKey (a ValueError)."""
    with pytest.raises(UnsafeKey):
        file_stem(key)
    assert issubclass(UnsafeKey, ValueError)


@pytest.mark.parametrize(
    ("key", "stem"),
    [
        ("job-1", "job-1"),
        ("Job_2.v1", "Job_2.v1"),
    ],
)
def test_plain_keys_are_kept(key: str, stem: str) -> None:
    """A key made of safe characters is its own file name."""
    assert file_stem(key) == stem


@pytest.mark.parametrize(
    "key", ["cat/1", "a b", ".hidden", "-rf", "con", "NUL.txt", "x" * 300, "é"]
)
def test_changed_keys_get_a_hash_suffix(key: str) -> None:
    """A key that had to be changed gets a short hash so it cannot collide with another."""
    stem = file_stem(key)
    assert re.fullmatch(r".*-[0-9a-f]{10}", stem)
    assert _NAME.fullmatch(stem)
    assert len(stem) <= 111


@given(st.text(max_size=200))
def test_any_key_gives_a_flat_safe_name_or_is_refused(key: str) -> None:
    """For any text a key is refused or gives a name with no separator, NUL, leading dot or '..'."""
    try:
        stem = file_stem(key)
    except UnsafeKey:
        assert (
            not key
            or "\x00" in key
            or key.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", key)
            or ".." in re.split(r"[\\/]", key)
        )
        return
    assert _NAME.fullmatch(stem), stem
    assert stem not in {".", ".."}
    assert len(stem) <= 111
    assert file_stem(key) == stem


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_different_keys_give_different_names(a: str, b: str) -> None:
    """Two different accepted keys never share a file name."""
    try:
        first, second = file_stem(a), file_stem(b)
    except UnsafeKey:
        return
    assert (first == second) == (a == b)

"""The public surface: what ``kling_async`` exports, and that it stays honest."""

import importlib
import inspect
import pickle
import pydoc
import traceback
import types

import pytest

import kling_async as ka
from kling_async import simulator


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted (constants, classes, functions) and names each public name once."""

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(ka.__all__) == sorted(ka.__all__, key=order)
    assert len(ka.__all__) == len(set(ka.__all__))


def test_every_exported_name_resolves_and_is_public() -> None:
    """Each name in __all__ is an attribute of the package, without a leading underscore."""
    for name in ka.__all__:
        assert not name.startswith("_")
        assert getattr(ka, name) is not None


def test_nothing_public_is_left_out_of_all() -> None:
    """Every public attribute of the package (except submodules) is listed in __all__."""
    public = {
        name
        for name, value in vars(ka).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(ka.__all__)


def test_exported_names_show_as_public() -> None:
    """Classes and functions present themselves as kling_async.X (help(), tracebacks)."""
    for name in ka.__all__:
        value = getattr(ka, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "kling_async", name


def test_help_and_tracebacks_name_the_package_not_private_modules() -> None:
    """help(ka.Client) and an error's traceback line speak of kling_async, never kling_async._x."""
    text = pydoc.render_doc(ka.Client, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "in module kling_async\n" in text
    assert "kling_async._" not in text
    line = traceback.format_exception_only(ka.NotFound("gone"))[-1]
    assert line.startswith("kling_async.NotFound: gone")


def test_public_names_still_pickle() -> None:
    """Moving __module__ to the package keeps pickling (names resolve from the root)."""
    for value in (ka.Kind.VIDEO, ka.Timeouts(connect=3.0), ka.NotFound("gone")):
        assert type(pickle.loads(pickle.dumps(value))) is type(value)


@pytest.mark.parametrize("package", ["kling_async", "kling_async.simulator", "kling_async.testing"])
def test_subpackage_all_lists_importable_names(package: str) -> None:
    """A public (sub)package's __all__ names only things it really has."""
    module = importlib.import_module(package)
    assert all(hasattr(module, name) for name in module.__all__)


def test_errors_share_one_root() -> None:
    """Every exported exception derives from KlingError or from a built-in misuse error."""
    for name in ka.__all__:
        value = getattr(ka, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, ka.KlingError | ValueError | TypeError | RuntimeError), name


def test_check_job_key_is_the_public_key_rule() -> None:
    """ka.check_job_key passes a plain key and raises ka.UnsafeKey for one that climbs out."""
    ka.check_job_key("ok")
    with pytest.raises(ka.UnsafeKey):
        ka.check_job_key("../x")


@pytest.mark.parametrize("name", ka.__all__)
def test_help_of_every_public_name_shows_no_private_module(name: str) -> None:
    """help(ka.X) of every public name (bases, signatures, fields) never says kling_async._."""
    text = pydoc.render_doc(getattr(ka, name), renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "kling_async._" not in text


@pytest.mark.parametrize("name", [n for n in simulator.__all__ if n != "DEFAULT_API_KEY"])
def test_help_of_the_simulator_shows_no_private_module(name: str) -> None:
    """help() of every public name of kling_async.simulator never says simulator._."""
    text = pydoc.render_doc(getattr(simulator, name), renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "kling_async.simulator._" not in text


def test_the_batch_handle_shows_only_what_users_call() -> None:
    """Batch and BatchProducer expose the user's calls; the journal's seam stays internal."""
    public = {name for name in dir(ka.Batch) if not name.startswith("_")}
    assert public == {"feed", "producer", "statistics", "stop_reason", "submit"}
    producer = {name for name in dir(ka.BatchProducer) if not name.startswith("_")}
    assert producer == {"aclose", "close", "closed", "feed", "submit"}


def test_journal_lost_is_a_public_journal_error() -> None:
    """JournalLost (a journal that lost rows its anchor says were written) is a JournalError."""
    assert issubclass(ka.JournalLost, ka.JournalError)
    assert ka.JournalLost.__module__ == "kling_async"

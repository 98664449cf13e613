"""The public surface: what ``kling_async`` exports, and that it stays honest."""

import importlib
import inspect
import types

import pytest

import kling_async as ka


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


def test_exported_classes_come_from_private_modules() -> None:
    """Implementation lives in private modules; the package root only re-exports."""
    for name in ka.__all__:
        value = getattr(ka, name)
        module = getattr(value, "__module__", None)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert module is not None
            assert module.split(".")[1].startswith("_"), (name, module)


@pytest.mark.parametrize("package", ["kling_async", "kling_async.simulator"])
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

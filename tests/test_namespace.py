"""The public modules' namespaces: ``dir()`` lists a module's ``__all__`` (and dunders) only, not the names it
imports for its own use (``typing.Any``, ``importlib``, ``torch``, ``annotations``) nor its submodules, and every
name of ``__all__`` is tnconv's own."""

from __future__ import annotations

import importlib
import inspect

import pytest

import tnconv

PUBLIC_MODULES = ("tnconv", *sorted({getattr(tnconv, name).__name__ for name in tnconv.__all__
                                     if inspect.ismodule(getattr(tnconv, name))}))


def test_the_public_modules_are_the_documented_ones():
    assert PUBLIC_MODULES == ("tnconv", "tnconv.curvature", "tnconv.distributed", "tnconv.functional", "tnconv.models",
                              "tnconv.nn", "tnconv.privacy")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_dir_lists_the_public_names_only(name):
    module = importlib.import_module(name)
    assert [entry for entry in dir(module) if not entry.startswith("_")] == sorted(module.__all__)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_is_tnconvs_own(name):
    module = importlib.import_module(name)
    for entry in module.__all__:
        value = getattr(module, entry)
        origin = value.__name__ if inspect.ismodule(value) else value.__module__
        assert origin.startswith("tnconv."), f"{name}.{entry} comes from {origin}"

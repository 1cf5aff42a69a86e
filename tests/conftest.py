"""Shared test setup: deterministic random numbers, and a clean global state.

Every test starts with `random` and NumPy's global RNG seeded, so the points
the op tests draw are the same on every run, and ends with
`fad.debug_nans` off, so a test that turns it on (and fails half way)
cannot change the IEEE behaviour the next test expects.
"""
import random

import numpy as np
import pytest

try:
    import fastad as _fad
    _fad.debug_nans  # noqa: B018 (the compiled core is built)
except (ImportError, AttributeError):  # the reference's own tests still run
    _fad = None


@pytest.fixture(autouse=True)
def _seeded_and_clean():
    random.seed(12345)
    np.random.seed(12345)
    yield
    if _fad is not None:
        _fad.debug_nans(False)


@pytest.fixture(params=["core", "reference"])
def engine(request):
    """The compiled core (`fastad`) or the pure-Python reference: the
    printers and checkers must work the same on both."""
    import fastad
    import fastad.reference
    return fastad if request.param == "core" else fastad.reference

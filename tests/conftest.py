"""Shared test setup: deterministic random numbers, and a clean global state.

Every test starts with `random` and NumPy's global RNG seeded, so the points
the op tests draw are the same on every run, and ends with
`fad.debug_nans` off, so a test that turns it on (and fails half way)
cannot change the IEEE behaviour the next test expects. Textbook results
that several test modules check against (Rosenbrock's Hessian) are
fixtures here, written once.
"""
import random
import sys

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


@pytest.fixture
def run_interleaved():
    """Start and join threads with the interpreter switching between them
    every microsecond, so that their steps interleave as often as can be."""
    def run(threads):
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
    return run


@pytest.fixture(params=["core", "reference"])
def engine(request):
    """The compiled core (`fastad`) or the pure-Python reference: the
    printers and checkers must work the same on both."""
    import fastad
    import fastad.reference
    return fastad if request.param == "core" else fastad.reference


def _rosenbrock_hessian(x):
    """The Hessian of sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, by hand:
    tridiagonal."""
    x = np.asarray(x, dtype=float)
    main = np.zeros(len(x))
    main[:-1] += 1200.0 * x[:-1] ** 2 - 400.0 * x[1:] + 2.0
    main[1:] += 200.0
    off = -400.0 * x[:-1]
    return np.diag(main) + np.diag(off, 1) + np.diag(off, -1)


@pytest.fixture
def rosenbrock_hessian():
    """Rosenbrock's analytic Hessian, for the tests that check second order
    against it."""
    return _rosenbrock_hessian

"""fad.compile (issue "compile"): trace once, replay in C. One benchmark
group per workload:

* ``cf-rosenbrock``, ``cf-dag``: the scalar workloads compiled as
  ``cf = fad.compile(lambda x: fn(x, fad), x0)`` on a list of floats; rows
  ``float-eval`` (fn on floats), ``cf-eval`` (``cf(x)``),
  ``cf-value_and_grad``, ``cf-grad``, ``cf-hvp`` (``cf.hvp(x, v)``),
  ``fastad-grad`` (``fad.grad``: record and sweep every call) and
  ``reference-grad``; ``cf-eval-ndarray``, ``cf-value_and_grad-ndarray``
  and ``cf-grad-ndarray`` call the same function compiled on an ndarray
  (no list read, an ndarray gradient);
* ``grad_batch``: Rosenbrock n=100 at B stacked points, ``cf.grad_batch(X,
  threads=1 | 2 | None)`` and a Python loop of ``cf.grad`` over the rows;
* ``jacobian``: x -> tanh(A @ x), 100 -> 100, written as Python loops over a
  list: ``cf.jacobian(x, mode="fwd")``, ``mode="rev"``, the uncompiled
  ``fad.jacobian(f, mode="rev")`` and the float evaluation;
* ``hessian``: Rosenbrock n=100: ``cf.hessian(x)`` (3 Hessian-vector
  products: its tridiagonal pattern colored), the dense route (products with
  every basis vector, 16 a sweep), n calls of ``cf.hvp(x, e_i)``,
  ``cf.grad(x)`` and the uncompiled ``fad.hessian``;
* ``cf-iris``, ``cf-mlp784``: the array models (softmax regression on iris,
  the MLP) compiled over their parameter dicts (ArrayTraces):
  ``cf(params)``, ``cf.value_and_grad(params)``, the NumPy forward,
  ``fad.value_and_grad`` and the reference's.

The functions are compiled once per session, untimed. The reference's
``grad`` is the body test_scalar times: where that ran in the session (it
runs first), its median is used and the row here is skipped. Workloads live in
``fastad/_workloads.py``, shared with ``python -m fastad bench``.
"""
import math

import numpy as np
import pytest

from fastad import _workloads as W

CASES = [(name, e, ph) for name in W.COMPILE_NAMES for e, ph in W.COMPILE_BODIES[name]]


@pytest.mark.parametrize("name,engine_name,phase", CASES, ids=["-".join(c) for c in CASES])
def test_compiled(benchmark, name, engine_name, phase, compile_catalogue, compile_bodies,
                  engines, time_phase, record_median, scalar_median):
    if engines["fastad"] is None:
        pytest.skip("fastad._core is not built")
    wl = compile_catalogue[name]
    base = wl.info.get("base")
    if engine_name == "reference" and base is not None:
        timed = scalar_median(base, engine_name, phase)
        if timed is not None:  # a full-size reference DAG takes ~25 s a round: not twice
            record_median("compile", (name, engine_name, phase), timed)
            pytest.skip(f"the same body was timed by test_scalar[{base.name}-reference-{phase}]")
    benchmark.group = f"compile: {wl.label}"
    ph = compile_bodies(name)[(engine_name, phase)]
    benchmark.extra_info.update(workload=name, engine=engine_name, phase=phase, size=wl.size,
                                trace_rows=wl.info.get("rows"))
    time_phase(benchmark, ph)
    record_median("compile", (name, engine_name, phase), benchmark)


@pytest.fixture
def compiled(compile_catalogue, compile_bodies, engines):
    """``compiled(name)``: (workload, its compiled function, the core)."""
    fast = engines["fastad"]
    if fast is None:
        pytest.skip("fastad._core is not built")

    def get(name):
        compile_bodies(name)  # compiles it
        wl = compile_catalogue[name]
        return wl, wl.info["cf"], fast.m
    return get


def _close(got, want, rel=1e-10):
    got, want = np.asarray(got, float), np.asarray(want, float)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert float(np.max(np.abs(got - want))) / scale < rel


@pytest.mark.parametrize("name", ["cf-rosenbrock", "cf-dag"])
def test_compiled_agree(name, compiled):
    """cf's value, gradient and value_and_grad equal fad.grad's recording;
    on Rosenbrock, cf.hvp equals fad.hvp (not timed)."""
    wl, cf, fad = compiled(name)
    f = lambda x: wl.fn(x, fad)  # noqa: E731
    x0 = list(wl.x0)
    assert cf(x0) == pytest.approx(wl.fn(x0, math), rel=1e-12, abs=1e-12)
    want = fad.grad(f)(x0)
    _close(cf.grad(x0), want)
    value, g = cf.value_and_grad(x0)
    assert value == pytest.approx(wl.fn(x0, math), rel=1e-12, abs=1e-12)
    _close(g, want)
    if name == "cf-rosenbrock":
        _close(cf.hvp(x0, wl.info["v"]), fad.hvp(f)(x0, wl.info["v"]))


def test_grad_batch_agrees(compiled):
    wl, cf, fad = compiled("grad_batch")
    X = wl.info["X"][:50]
    want = np.array([cf.grad(row) for row in X.tolist()])
    for threads in (1, 2, None):
        _close(cf.grad_batch(X, threads=threads), want)


def test_jacobian_agrees(compiled):
    wl, cf, fad = compiled("jacobian")
    x0 = list(wl.x0)
    rev = cf.jacobian(x0, mode="rev")
    assert np.shape(rev) == (W.JAC_N, W.JAC_N)
    _close(cf.jacobian(x0, mode="fwd"), rev)
    _close(fad.jacobian(lambda x: wl.fn(x, fad), mode="rev")(x0), rev)


def test_hessian_agrees(compiled):
    wl, cf, fad = compiled("hessian")
    x0 = list(wl.x0)
    H = cf.hessian(x0)
    assert np.shape(H) == (wl.size, wl.size)
    _close(H, [cf.hvp(x0, e) for e in np.eye(wl.size).tolist()])
    _close(H, cf.traces[0].hvp(np.array(x0), np.eye(wl.size))[1])
    _close(fad.hessian(lambda x: wl.fn(x, fad))(x0), H)


@pytest.mark.parametrize("name", W.ARRAY_COMPILED)
def test_compiled_arrays_agree(compiled, name):
    """A compiled array model (an ArrayTrace) gives fad.value_and_grad's
    value and gradient exactly, and the NumPy forward's value."""
    wl, cf, fad = compiled(name)
    params, X, Y = wl.x0, wl.info["X"], wl.info["Y"]
    value, g = cf.value_and_grad(params)
    want_value, want = fad.value_and_grad(lambda p: wl.fn(p, X, Y, fad))(params)
    assert value == want_value == pytest.approx(wl.fn(params, X, Y, W.NUMPY.m), rel=1e-12)
    assert list(g) == list(want) and all(np.array_equal(g[k], want[k]) for k in want)

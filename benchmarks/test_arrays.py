"""Array workloads (issue "arrays"): NumPy code on ``fad.Array``, one
benchmark group per workload; rows:

* ``numpy-eval``        the same NumPy code on plain ndarrays, no gradient
                        (the floor);
* ``float-eval``        the element loop on a list of floats (the floor of
                        its list-of-Vars variant);
* ``<engine>-record``   the forward on Arrays (implicit tape, graph dropped);
* ``<engine>-grad``     the gradient: iris softmax regression and the MLP
                        784-256-10 through ``value_and_grad`` over the
                        parameter dict, the small-array ops and the element
                        loop as leaves + forward + ``backward()``;
* ``<engine>-record-list`` / ``<engine>-grad-list``  the element loop on a
                        list of scalar ``Var``s instead of one Array;

for ``<engine>`` = ``fastad`` and ``reference`` (``fastad.reference``, the
same Array API in pure Python). The small-array bodies run 100 ops a round;
the summary table gives times per op. Workloads live in
``fastad/_workloads.py``, shared with ``python -m fastad bench``.
"""
import numpy as np
import pytest

from fastad import _workloads as W

CASES = [(name, e, ph) for name in W.ARRAY_NAMES for e, ph in W.ARRAY_BODIES[name]]


@pytest.mark.parametrize("name,engine_name,phase", CASES, ids=["-".join(c) for c in CASES])
def test_arrays(benchmark, name, engine_name, phase, array_catalogue, engines, time_phase,
                record_median):
    wl = array_catalogue[name]
    engine = engines[engine_name]
    if engine is None or engines["fastad"] is None:
        pytest.skip("fastad._core is not built")
    calls = f" ({wl.calls} ops a round)" if wl.calls > 1 else ""
    benchmark.group = f"arrays: {wl.label}{calls}"
    ph = W.array_phase(wl, engine, phase)
    benchmark.extra_info.update(workload=name, engine=engine_name, phase=phase, size=wl.size,
                                calls_per_iteration=ph.calls)
    time_phase(benchmark, ph)
    record_median("arrays", (name, engine_name, phase), benchmark, ph.calls)


@pytest.mark.parametrize("name", W.ARRAY_NAMES)
def test_arrays_agree(name, array_catalogue, engines):
    """The benchmarked graphs are right (not timed): fastad's value equals
    the NumPy code's, its gradient the reference's, and the element loop
    gives the same gradient on an Array as on a list of Vars."""
    wl = array_catalogue[name]
    fast, ref = engines["fastad"], engines["reference"]
    if fast is None:
        pytest.skip("fastad._core is not built")
    want = W.array_floor_value(wl)
    value, grad = W.array_gradient(wl, fast)
    ref_value, ref_grad = W.array_gradient(wl, ref)
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert ref_value == pytest.approx(want, rel=1e-12, abs=1e-12)
    pairs = (zip(grad.values(), ref_grad.values()) if isinstance(grad, dict)
             else zip(grad, ref_grad))
    for g, r in pairs:
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)
    if name == "elemloop":
        xs = [fast.Var(v) for v in wl.x0.tolist()]
        with fast.tape():
            out = wl.fn(xs)
        out.backward()
        np.testing.assert_allclose(grad[0], [x.grad for x in xs], rtol=1e-12, atol=1e-12)

"""Scalar workloads, every phase side by side in one benchmark group.

One group per workload (textbook z = x1*x2 + sin x1, a 100k-op chain, a
live 1M-node DAG, Rosenbrock 10k, one MLP training step); rows:

* ``float-eval``        the same Python code on floats (the floor);
* ``<engine>-record``   build the leaves and run the function (implicit tape);
* ``<engine>-sweep``    ``backward()`` alone (each round records untimed
                        first: a sweep consumes its tape);
* ``<engine>-grad``     the whole gradient through the public ``grad``
                        (the MLP: one micrograd-style training step);

for ``<engine>`` = ``fastad`` (the compiled core) and ``reference``.
Workloads live in ``fastad/_workloads.py``, shared with ``python -m fastad bench``.
"""
import math

import pytest

from fastad import _workloads as W

# Floats and the core run first, for every workload, and the reference
# after: recording millions of reference objects leaves the allocator's heap
# fragmented for the rest of the process, which slows later float code by up
# to 2x (the core much less) and would flatter the fastad/float ratios.
CASES = ([(w, "float", "eval") for w in W.NAMES]
         + [(w, "fastad", ph) for w in W.NAMES for ph in W.PHASES]
         + [(w, "reference", ph) for w in W.NAMES for ph in W.PHASES])
CASES.sort(key=lambda c: (c[1] == "reference", W.NAMES.index(c[0])))  # stable: keeps phase order

@pytest.mark.parametrize("name,engine_name,phase", CASES, ids=["-".join(c) for c in CASES])
def test_scalar(benchmark, name, engine_name, phase, catalogue, engines, time_phase,
                record_result, tape_size):
    wl = catalogue[name]
    engine = engines[engine_name]
    if engine is None:
        pytest.skip(f"{engine_name} is not available (is fastad._core built?)")
    benchmark.group = wl.label + (f" ({wl.calls:,} calls a round)" if wl.calls > 1 else "")
    ph = W.phase(wl, engine, phase)
    benchmark.extra_info.update(workload=name, engine=engine_name, phase=phase,
                                size=wl.size, calls_per_iteration=wl.calls)
    if engine.is_ad:
        info = tape_size(wl, engine)
        benchmark.extra_info.update(tape_rows=info["rows"], tape_nbytes=info["nbytes"],
                                    tape_bytes_per_row=info["bytes_per_row"],
                                    tape_bytes_per_row_swept=info["bytes_per_row_swept"])
    time_phase(benchmark, ph)
    record_result(wl, engine_name, phase, benchmark)


@pytest.mark.parametrize("name", W.NAMES)
def test_engines_agree(name, catalogue, engines):
    """The benchmarked graphs are right: fastad's value equals the float
    evaluation and its gradient the reference's (not timed)."""
    wl = catalogue[name]
    fast, ref = engines["fastad"], engines["reference"]
    if fast is None:
        pytest.skip("fastad._core is not built")
    want = wl.fn(wl.x0, math)
    value, grad = W.manual_grad(wl, fast)
    ref_value, ref_grad = W.manual_grad(wl, ref)
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert ref_value == pytest.approx(want, rel=1e-12, abs=1e-12)
    scale = max(1.0, max(abs(g) for g in ref_grad))
    worst = max(abs(g - r) for g, r in zip(grad, ref_grad)) / scale
    assert worst < 1e-9, f"fastad and reference gradients differ by {worst:.2e} (relative)"

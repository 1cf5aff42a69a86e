"""fastad.loops and fastad/_loop_sweeps.pxd: a trace's loops run op-major.

The oracle is the same trace with find_loops=False, every row swept one by
one: values, gradients and every row's adjoint (through hvp, which reads
them all) must be the same bits, and cf.grad must be fad.grad's bits.
"""
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import fastad as fad
from fastad import loops
from fastad._replay import BranchChanged, Trace
from fastad._workloads import rosenbrock


def twin(trace):
    """The same trace, its rows swept one by one."""
    return Trace(*trace.__reduce__()[1], find_loops=False)


def same_bits(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    same = (a.view(np.uint64) == b.view(np.uint64)) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"differ at {np.flatnonzero(~same)[:5]}: {a[~same][:3]} vs {b[~same][:3]}"


def assert_like_rows(trace, x, directions=3):
    """Every replay path of trace at x gives the bits of its twin's."""
    plain = twin(trace)
    x = np.asarray(x, np.float64)
    y, changed = trace.values(x)
    y0, changed0 = plain.values(x)
    same_bits(y, y0)
    assert changed == changed0
    for k in range(trace.n_out):
        _, g, _ = trace.value_and_grad(x, k)
        _, g0, _ = plain.value_and_grad(x, k)
        same_bits(g, g0)
    same_bits(trace.jacobian_rev(x)[1], plain.jacobian_rev(x)[1])
    cot = np.linspace(-1.0, 2.0, trace.n_out)
    same_bits(trace.vjp(x, cot)[1], plain.vjp(x, cot)[1])
    V = np.random.default_rng(0).normal(size=(trace.n_in, directions))
    for W in (V, V[:, :1]):  # block sweeps (they read every row's adjoint); one direction (loop sweeps)
        g, HV, _ = trace.hvp(x, W)
        g0, HV0, _ = plain.hvp(x, W)
        same_bits(g, g0)
        same_bits(HV, HV0)
        same_bits(trace.jvp(x, W)[1], plain.jvp(x, W)[1])


def rosen(x):
    return rosenbrock(x, fad)


def test_rosenbrock_is_one_loop_with_a_running_sum():
    x = [0.1 * i - 1.0 for i in range(200)]
    trace = fad.compile(rosen, x).traces[0]
    (loop,) = trace.loops
    row = dict(zip(loops.LOOP_COLUMNS, loop))
    assert row["period"] == 9  # 8 ops and the INPUT row of x[i + 1]
    assert row["iterations"] >= 190
    assert row["vec_hi"] - row["vec_lo"] == 6  # the two squares, 1 - x, x - x**2, its square, 100 *
    assert row["ser_hi"] - row["ser_lo"] == 2  # the two adds of the running total
    assert row["chain"] == loops.OP_ADD * 2  # total comes in on the left
    assert row["def_hi"] - row["def_lo"] == 3  # x[i] read by three rows: added after each chunk


@pytest.mark.parametrize("n", [loops.MIN_ITERATIONS + 5, 60, 300, 5000])
def test_rosenbrock_gradient_is_fad_grads_bits(n):
    rng = np.random.default_rng(n)
    x = list(rng.uniform(-1.5, 1.5, n))
    cf = fad.compile(rosen, x)
    assert len(cf.traces[0].loops) == 1
    for _ in range(3):
        x = list(rng.uniform(-1.5, 1.5, n))
        same_bits(cf.grad(x), fad.grad(rosen)(x))
        v, g = cf.value_and_grad(x)
        v0, g0 = fad.value_and_grad(rosen)(x)
        assert v == v0 == cf(x)
        same_bits(g, g0)
        assert_like_rows(cf.traces[0], x)


def test_short_loops_are_left_alone():
    x = [0.5] * (loops.MIN_ITERATIONS - 1)  # MIN_ITERATIONS - 2 iterations
    assert len(fad.compile(rosen, x).traces[0].loops) == 0


def dot_loop(x):
    """Three accumulators of a loop, one a product (no chain: interpreted)."""
    s, p, m = x[0], x[1], x[2]
    for i in range(len(x) - 3):
        a = fad.tanh(x[i + 3] * 0.5) - x[i]
        s = s + a * a
        p = p * (1.0 + 0.01 * fad.sin(a))
        m = m - fad.sqrt(x[i + 1] ** 2 + 1.0) / 3.0
    return s + p + m


def test_loop_with_an_interpreted_product_and_a_subtraction():
    x = list(np.random.default_rng(2).uniform(-1, 1, 120))
    cf = fad.compile(dot_loop, x)
    trace = cf.traces[0]
    assert len(trace.loops) == 1
    assert trace.loops[0][loops.LOOP_COLUMNS.index("chain")] == -1  # mixed ops: interpreted
    assert_like_rows(trace, x)
    same_bits(cf.grad(x), fad.grad(dot_loop)(x))


def kinked(x):
    total = 0.0
    for i in range(len(x) - 1):
        a = x[i] - 0.25
        b = x[i + 1] * 2.0
        total = total + fad.abs(a) * b + fad.maximum(a, 0.125)  # the kinks run serial
    return total


def test_a_kink_in_a_loop_is_guarded_per_iteration():
    x = list(np.linspace(0.3, 0.9, 60))
    cf = fad.compile(kinked, x, on_branch_change="raise")
    trace = cf.traces[0]
    assert len(trace.loops) == 1
    assert_like_rows(trace, x)
    y = list(x)
    y[37] = 0.1  # abs(x[37] - 0.25) takes its other side
    changed = trace.values(np.array(y))[1]
    assert changed >= 0 and changed == twin(trace).values(np.array(y))[1]
    with pytest.raises(BranchChanged):
        cf.grad(y)
    retrace = fad.compile(kinked, x)
    same_bits(retrace.grad(y), fad.grad(kinked)(y))


def partial_sums(x):
    out, total = [], 0.0
    for i in range(len(x)):
        total = total + x[i] * x[i] * (i % 3 + 1)
        if i % 7 == 6:
            out.append(total)
    return out


def test_outputs_inside_a_loop():
    x = list(np.random.default_rng(3).uniform(-1, 1, 150))
    cf = fad.compile(partial_sums, x)
    trace = cf.traces[0]
    assert len(trace.loops) >= 1 and trace.n_out == 21
    assert_like_rows(trace, x)
    same_bits(cf.jacobian(x, mode="rev"), fad.jacobian(partial_sums, mode="rev")(x))


def test_a_zero_adjoint_stops_an_infinite_partial():
    # sqrt's partial at 0 is inf; multiplied by 0 the output does not depend on it
    def f(x):
        return sum(0.0 * fad.sqrt(x[i]) + x[i] * x[i + 1] for i in range(len(x) - 1))
    x = [0.0] * 50
    cf = fad.compile(f, x)
    assert len(cf.traces[0].loops) == 1
    g = cf.grad(x)
    assert not any(math.isnan(v) for v in g)
    same_bits(g, fad.grad(f)(x))
    assert_like_rows(cf.traces[0], x)


def test_nan_inputs_propagate_as_row_by_row():
    x = list(np.random.default_rng(4).uniform(-1, 1, 64))
    cf = fad.compile(rosen, x)
    x[20] = float("nan")
    same_bits(cf.grad(x), fad.grad(rosen)(x))
    assert_like_rows(cf.traces[0], x)


def wide(x):
    """Each iteration reads six inputs: many deferred products, small chunks."""
    total = 0.0
    for i in range(len(x) - 6):
        total = total + (x[i] * x[i + 1] - x[i + 2] / (2.0 + x[i + 3] ** 2)) * fad.exp(0.1 * x[i + 5]) + x[i + 6]
    return total


def test_many_chunks_and_deferred_products():
    x = list(np.random.default_rng(5).uniform(-1, 1, 3000))
    cf = fad.compile(wide, x)
    (loop,) = cf.traces[0].loops
    row = dict(zip(loops.LOOP_COLUMNS, loop))
    assert row["iterations"] > 10 * row["chunk"]
    assert row["def_hi"] - row["def_lo"] >= 6
    same_bits(cf.grad(x), fad.grad(wide)(x))
    assert_like_rows(cf.traces[0], x)


def test_grad_batch_and_pickle_keep_the_loops():
    x = list(np.random.default_rng(6).uniform(-1, 1, 80))
    cf = fad.compile(rosen, x)
    X = np.random.default_rng(7).uniform(-1, 1, (9, 80))
    G = cf.grad_batch(X, threads=2)
    for row, g in zip(X, G):
        same_bits(g, cf.grad(list(row)))
    again = pickle.loads(pickle.dumps(cf))
    assert len(again.traces[0].loops) == 1
    same_bits(again.grad(list(X[0])), cf.grad(list(X[0])))


def test_the_order_check_is_what_keeps_the_bits(monkeypatch):
    """x[i]'s adjoint gets 1 from the running sum s (a serial row, passed on
    at once) and C and -C from u and v (vector rows, deferred): in the
    recording's order (v, u, s): (-C + C) + 1 = 1; with the serial term
    first: (1 - C) + C = 0. check_order refuses that schedule."""
    C = 1e17

    def f(x):
        s, w = 0.0, 0.0
        for i in range(len(x)):
            s = s + x[i]
            u = x[i] * C
            v = x[i] * -C
            w = w + (u + v)
        return s + w

    x = [1.0] * 40
    want = fad.grad(f)(x)
    assert want == [1.0] * 40
    same_bits(fad.compile(f, x).grad(x), want)
    monkeypatch.setattr(loops, "check_order", lambda *args: True)
    unchecked = fad.compile(f, x)
    assert len(unchecked.traces[0].loops) == 1
    assert unchecked.grad(x) != want  # the schedule alone reorders the sums


# -- random loop programs --

UNARY = {"neg": lambda a: -a, "square": lambda a: a * a, "sin": fad.sin, "tanh": fad.tanh,
         "exp": lambda a: fad.exp(0.1 * a), "abs": fad.abs, "relu": fad.relu,
         "sqrt1": lambda a: fad.sqrt(a * a + 1.0)}
BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / (b * b + 1.0), "max": fad.maximum, "hypot": fad.hypot}
ACCUMULATE = {"add": lambda s, v: s + v, "radd": lambda s, v: v + s, "sub": lambda s, v: s - v,
              "rsub": lambda s, v: v - s, "mul": lambda s, v: s * (1.0 + 0.01 * v)}

step = st.one_of(
    st.tuples(st.sampled_from(sorted(UNARY)), st.integers(0, 30)),
    st.tuples(st.sampled_from(sorted(BINARY)), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("const"), st.floats(-2, 2, allow_nan=False), st.integers(0, 30)))
program = st.tuples(st.lists(step, min_size=1, max_size=8),
                    st.lists(st.tuples(st.sampled_from(sorted(ACCUMULATE)), st.integers(0, 30)),
                             min_size=0, max_size=2),
                    st.integers(0, 3), st.integers(20, 100))


def loop_function(body, accumulators, offsets):
    """f(x): a loop over x whose body reads x[i], x[i + 1] .. x[i + offsets],
    the accumulators (carried values) and earlier body values; with no
    accumulator, the body's last value in every iteration (no serial rows)."""
    def f(x):
        acc = [x[k] * 0.5 for k in range(len(accumulators))]
        out = []
        for i in range(len(x) - offsets):
            regs = [x[i + k] for k in range(offsets + 1)] + acc
            for op, *args in body:
                pick = [regs[k % len(regs)] for k in args if isinstance(k, int)]
                if op == "const":
                    regs.append(pick[0] * args[0] + args[0])
                elif op in UNARY:
                    regs.append(UNARY[op](pick[0]))
                else:
                    regs.append(BINARY[op](pick[0], pick[1]))
            acc = [ACCUMULATE[how](a, regs[-1 - k % len(body)]) for a, (how, k) in zip(acc, accumulators)]
            out.append(regs[-1])
        return sum(acc[1:], acc[0]) if acc else out
    return f


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program, st.integers(0, 2 ** 32 - 1))
def test_random_loops_give_the_row_by_row_bits(prog, seed):
    body, accumulators, offsets, iterations = prog
    f = loop_function(body, accumulators, offsets)
    rng = np.random.default_rng(seed)
    x = list(rng.uniform(-1.5, 1.5, iterations + offsets))
    cf = fad.compile(f, x)
    trace = cf.traces[0]
    event(f"loops: {len(trace.loops)}")
    if len(trace.loops):
        event("with serial rows" if trace.serial.shape[0] else "vector rows only")
    x2 = list(rng.uniform(-1.5, 1.5, len(x)))
    same_bits(trace.values(np.array(x2))[0], twin(trace).values(np.array(x2))[0])
    assert_like_rows(trace, x, directions=2)
    if accumulators:
        same_bits(cf.grad(x), fad.grad(f)(x))
    else:
        same_bits(cf.jacobian(x, mode="rev"), fad.jacobian(f, mode="rev")(x))


def test_loop_sweeps_in_a_thread_with_a_small_stack():
    """Their scratch is on the heap (Buffers), not the thread's stack: 32 KB
    of it in a 32 KiB thread (the least Python allows) would overflow it."""
    import os
    import subprocess
    import sys
    import tempfile
    code = """if True:
        import threading
        import numpy as np
        import fastad as fad
        from fastad._workloads import rosenbrock
        x = list(np.linspace(-1.0, 1.0, 500))
        cf = fad.compile(lambda v: rosenbrock(v, fad), x)
        assert len(cf.traces[0].loops) == 1
        out = []
        threading.stack_size(32 * 1024)
        t = threading.Thread(target=lambda: out.append((cf.grad(x), cf.hvp(x, [1.0] * 500))))
        t.start()
        t.join()
        assert out[0][0] == fad.grad(lambda v: rosenbrock(v, fad))(x)
        assert out[0][1] == cf.hvp(x, [1.0] * 500)
        print("ok")
    """
    # beside the fastad these tests imported (an installed one under CI), not the source tree
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fad.__file__)))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tempfile.gettempdir(), env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def three_loops(x):
    """A loop whose reads jump midway, a loop running backwards over the
    inputs the first one made (its reads go down the tape: a negative
    stride), a loop of products: each its own run of rows."""
    total = 0.0
    for i in range(100):
        j = i if i < 60 else 2 * i - 60  # the stride changes at i = 60
        total = total + x[j] * x[j + 1]
    for i in reversed(range(1, 55)):
        total = total - fad.tanh(x[i] - 0.5 * x[i - 1])
    p = 1.0
    for i in range(60):
        p = p * (1.0 + 0.001 * x[i])
    return total + p


def test_several_loops_and_strides_that_change():
    x = list(np.random.default_rng(8).uniform(-1, 1, 150))
    cf = fad.compile(three_loops, x)
    trace = cf.traces[0]
    strides = {int(v[loops.VECTOR_COLUMNS.index(c)]) for v in trace.vectors for c in ("a_stride", "b_stride")}
    assert len(trace.loops) >= 3 and any(s < 0 for s in strides)
    assert_like_rows(trace, x)
    same_bits(cf.grad(x), fad.grad(three_loops)(x))


def test_a_refused_long_loop_is_refused_on_its_first_chunks(monkeypatch):
    """check_order's cost is the loop's rows: a schedule it refuses is
    refused on a few chunks first, not checked whole once per phase (a
    3M-row trace took 12.7 s to plan that way; 0.4 s now)."""
    def f(x):  # the order check's own example (above), 3,000 iterations
        s, w = 0.0, 0.0
        for i in range(len(x)):
            s = s + x[i]
            w = w + (x[i] * 1e17 + x[i] * -1e17)
        return s + w

    checked = []
    real = loops.check_order
    monkeypatch.setattr(loops, "check_order", lambda *a: checked.append(a[-1].k) or real(*a))
    cf = fad.compile(f, [1.0] * 3000)
    assert len(cf.traces[0].loops) == 0
    assert checked and max(checked) < 3000  # every phase refused on its first chunks
    same_bits(cf.grad([1.0] * 3000), fad.grad(f)([1.0] * 3000))


def test_a_one_call_transform_does_not_look_for_loops():
    # fad.grad-like transforms compile for one call: finding loops would cost more than it saves
    x = [0.1 * i for i in range(100)]
    assert len(fad.compile(rosen, x).traces[0].loops) == 1
    from fastad.functional import _traced
    assert len(_traced(rosen, (x,), 0).traces[0].loops) == 0
    same_bits(fad.hessian(rosen)(x), fad.compile(rosen, x).hessian(x))

"""The compiled core (fastad/_core.pyx): textbook examples, the Var handle,
tapes and their rows, errors, threads."""
import copy
import math
import pickle
import sys
import threading

import numpy as np
import pytest

import fastad as fad
from fastad import ops
from fastad import reference as ref

CODE = {s.name: s.code for s in ops.OPS}


def central_difference(f, args, k, h=1e-6):
    up, down = list(args), list(args)
    up[k] += h
    down[k] -= h
    return (f(*up) - f(*down)) / (2 * h)


# ---------------------------------------------------------------------------
# Textbook examples, exact numbers
# ---------------------------------------------------------------------------

def test_x1_x2_plus_sin_x1():
    x1, x2 = fad.Var(2.0), fad.Var(3.0)
    z = x1 * x2 + fad.sin(x1)
    z.backward()
    assert z.value == 6.909297426825682
    assert (x1.grad, x2.grad) == (2.5838531634528574, 2.0)


def test_griewank_walther():
    # Griewank & Walther, "Evaluating Derivatives", the running example.
    x1, x2 = fad.Var(2.0), fad.Var(5.0)
    y = fad.log(x1) + x1 * x2 - fad.sin(x2)
    y.backward()
    assert (x1.grad, x2.grad) == (5.5, 1.7163378145367738)


def test_cs231n_add_mul():
    x, y, z = fad.Var(-2.0), fad.Var(5.0), fad.Var(-4.0)
    f = (x + y) * z
    f.backward()
    assert f.value == -12.0
    assert (x.grad, y.grad, z.grad) == (-4.0, -4.0, 3.0)


def _neuron(M, w0, w1, w2, x0, x1):
    return 1 / (1 + M.exp(-(w0 * x0 + w1 * x1 + w2)))


def test_cs231n_sigmoid_neuron():
    args = (2.0, -3.0, -3.0, -1.0, -2.0)
    vs = [fad.Var(a) for a in args]
    f = _neuron(fad, *vs)
    f.backward()
    assert f.value == 0.7310585786300049
    # CS231n prints w = [-0.2, -0.39, 0.2], x = [0.39, -0.59]; these are the
    # float64 numbers. The core computes them one ulp away from the values
    # in the brief (-0.19661193324148185 ...), exactly as the reference does,
    # so they are compared to 1e-12 relative.
    expected = (-0.19661193324148185, -0.3932238664829637, 0.19661193324148185,
                0.3932238664829637, -0.5898357997244456)
    got = tuple(v.grad for v in vs)
    assert got == pytest.approx(expected, rel=1e-12)
    rvs = [ref.Var(a) for a in args]
    _neuron(ref, *rvs).backward()
    assert got == tuple(v.grad for v in rvs)  # same algorithm, same rounding
    for k, g in enumerate(got):
        fd = central_difference(lambda *a: _neuron(math, *a), args, k)
        assert g == pytest.approx(fd, rel=1e-7, abs=1e-9)


def _staged(M, x, y):
    sig = M.sigmoid if M is not math else (lambda t: 1 / (1 + math.exp(-t)))
    return (x + sig(y)) / (sig(x) + (x + y) ** 2)


def test_cs231n_staged_example():
    x, y = fad.Var(3.0), fad.Var(-4.0)
    f = _staged(fad, x, y)
    f.backward()
    rx, ry = ref.Var(3.0), ref.Var(-4.0)
    rf = _staged(ref, rx, ry)
    rf.backward()
    assert f.value == pytest.approx(rf.value, rel=1e-12)
    assert f.value == pytest.approx(_staged(math, 3.0, -4.0), rel=1e-12)
    assert (x.grad, y.grad) == pytest.approx((rx.grad, ry.grad), rel=1e-12)
    for k, g in enumerate((x.grad, y.grad)):
        fd = central_difference(lambda *a: _staged(math, *a), (3.0, -4.0), k)
        assert g == pytest.approx(fd, rel=1e-6)


def test_gate_patterns():
    # add distributes, max routes, mul swaps (CS231n's "patterns in backward flow")
    x, y = fad.Var(2.0), fad.Var(-1.0)
    (x + y).backward(seed=3.0)
    assert (x.grad, y.grad) == (3.0, 3.0)
    x, y = fad.Var(2.0), fad.Var(-1.0)
    fad.maximum(x, y).backward(seed=3.0)
    assert (x.grad, y.grad) == (3.0, 0.0)
    x, y = fad.Var(2.0), fad.Var(-1.0)
    (x * y).backward(seed=3.0)
    assert (x.grad, y.grad) == (-3.0, 6.0)


def test_fan_out_adds_adjoints():
    x = fad.Var(3.0)
    y = x * x * x + x  # x read four times
    y.backward()
    assert x.grad == 3 * 9.0 + 1.0


# ---------------------------------------------------------------------------
# Var: grads, backward, retain_graph
# ---------------------------------------------------------------------------

def test_grads_accumulate_until_zeroed():
    x = fad.Var(3.0)
    (x * x).backward()
    (x * x).backward()
    assert x.grad == 12.0
    x.grad = 0.0
    (x * x).backward()
    assert x.grad == 6.0


def test_backward_seed():
    x = fad.Var(3.0)
    (x * x).backward(seed=2.0)
    assert x.grad == 12.0


def test_retain_graph_allows_a_second_backward():
    x = fad.Var(3.0)
    y = x * x
    y.backward(retain_graph=True)
    assert x.grad == 6.0
    y.backward()
    assert x.grad == 12.0
    with pytest.raises(fad.FastADError, match="retain_graph"):
        y.backward()
    assert x.grad == 12.0


def test_second_backward_without_retain_graph_raises():
    x = fad.Var(3.0)
    y = x * x
    y.backward()
    with pytest.raises(fad.FastADError, match="retain_graph"):
        y.backward()
    assert x.grad == 6.0


def test_consumed_node_cannot_be_used_in_new_ops():
    x = fad.Var(3.0)
    y = x * x
    y.backward()
    with pytest.raises(fad.FastADError):
        y + 1.0
    with pytest.raises(fad.FastADError):
        fad.sin(y)
    with pytest.raises(fad.FastADError):
        x * y
    # The leaf itself is free to start a new graph.
    z = x * 2.0
    z.backward()
    assert x.grad == 8.0


def test_mixing_tapes_raises():
    x, y = fad.Var(1.0), fad.Var(2.0)
    with fad.Tape():
        a = x * 2
    with fad.Tape():
        b = y * 3
    with pytest.raises(fad.FastADError, match="different tapes"):
        a + b
    with pytest.raises(fad.FastADError, match="different tapes"):
        fad.maximum(b, a)


def test_no_grad_gives_leaves_and_records_nothing():
    x = fad.Var(3.0)
    with fad.Tape() as t:
        with fad.no_grad():
            y = x * x + fad.sin(x)
            assert y.tape is None and y.is_leaf
            assert y.value == 9.0 + math.sin(3.0)
        z = x * 2.0  # recording again after the block
    assert len(t) == 2  # INPUT x, mul: nothing from inside no_grad
    assert z.tape is t
    y.backward()  # a leaf: d y / d y
    assert (y.grad, x.grad) == (1.0, 0.0)


def test_a_copy_of_a_recorded_value_is_itself_and_of_a_leaf_a_new_leaf():
    """copy.copy / copy.deepcopy of a recorded Var raised TypeError (the
    pickle route); a recorded value never changes, so its copy is itself and
    the derivative goes through. A user's leaf's copy is a new leaf with its
    value and grad, not connected to it (a parameter's snapshot, as in PyTorch)."""
    assert fad.grad(lambda x: copy.copy(x * 1.0) * x)(2.0) == 4.0
    assert fad.grad(lambda x: copy.deepcopy([x * x])[0] * x)(2.0) == 12.0
    x = fad.Var(2.0)
    x.grad = 1.5
    for c in (copy.copy(x), copy.deepcopy(x)):
        assert c is not x and c.is_leaf and (c.value, c.grad) == (2.0, 1.5)
    # a function's argument copies as itself (tests/test_compiled.py)
    assert fad.grad(lambda p: copy.deepcopy(p)["a"] * p["b"])({"a": 3.0, "b": 2.0}) == {"a": 2.0, "b": 3.0}


def test_transforms_record_inside_no_grad():
    """grad, value_and_grad, jacobian and hessian ask for a graph: inside a
    no_grad block they still record (they returned zeros), and the block is
    back in force after them."""
    A = np.array([1.0, 2.0])
    with fad.no_grad():
        assert fad.grad(lambda x: x * x)(3.0) == 6.0
        v, g = fad.value_and_grad(lambda x: (x * x).sum())(A)
        assert v == 5.0 and g.tolist() == [2.0, 4.0]
        assert fad.grad(lambda d: d["a"] * d["b"])({"a": 2.0, "b": 3.0}) == {"a": 3.0, "b": 2.0}
        assert fad.jacobian(lambda x: x * x)(A).tolist() == [[2.0, 0.0], [0.0, 4.0]]
        assert fad.hessian(lambda x: x[0] ** 2 * x[1])(A).tolist() == [[4.0, 2.0], [2.0, 0.0]]
        y = fad.Var(2.0) * 3.0
        assert y.tape is None  # still no recording of its own
    assert (fad.Var(2.0) * 3.0).tape is not None


def test_backward_of_a_leaf_adds_its_seed():
    x = fad.Var(1.0)
    x.backward()
    x.backward(seed=2.5)
    assert x.grad == 3.5


def test_non_leaf_grad_is_its_adjoint():
    a = fad.Var(1.5)
    b = a * 3.0
    c = b * b
    assert b.grad == 0.0  # before any sweep
    c.backward()
    assert b.grad == 2 * b.value
    assert c.grad == 1.0
    assert a.grad == 6 * b.value
    with pytest.raises(fad.FastADError):
        b.grad = 1.0


def test_comparisons_return_bools_on_values():
    x, y = fad.Var(1.0), fad.Var(2.0)
    results = [x < y, x <= y, x > y, x >= y, x == y, x != y, x < 1.5, 2.0 > x, 1.0 == x]
    assert all(type(r) is bool for r in results)
    assert results == [True, True, False, False, False, True, True, True, True]
    assert fad.Var(2.0) == fad.Var(2.0)
    assert bool(fad.Var(0.0)) is False and bool(fad.Var(-0.5)) is True


def test_hash_by_identity():
    a, b = fad.Var(1.0), fad.Var(1.0)
    s = {a, b, a}
    assert len(s) == 2 and a in s and b in s
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"
    n = a * 2.0
    assert n in {n}


def test_conversions_and_repr():
    v = fad.Var(2.71828)
    assert float(v) == 2.71828 and type(float(v)) is float
    assert int(v) == 2 and int(fad.Var(-2.7)) == -2
    assert f"{v:.2f}" == "2.72"
    assert repr(fad.Var(2.0)) == "Var(2.0)"
    n = v * 1.0
    assert "2.71828" in repr(n) and "row=" in repr(n)
    assert math.isclose(math.sqrt(fad.Var(4.0)), 2.0)  # float() protocol


def test_value_setter_on_a_leaf():
    x = fad.Var(2.0)
    y = x * 3.0
    x.value = 5.0
    assert x.value == 5.0
    z = x * x  # the new value, though y (same tape) read the old one
    assert z.value == 25.0 and y.value == 6.0
    z.backward()
    assert x.grad == 10.0
    x.value = 4  # ints are numbers
    assert x.value == 4.0 and type(x.value) is float
    with pytest.raises(TypeError):
        x.value = "a"


def test_value_setter_inside_one_tape():
    x = fad.Var(2.0)
    with fad.Tape() as t:
        y = x * 3.0
        x.value = 5.0
        z = y + x * 3.0
    assert z.value == 21.0
    z.backward()
    assert x.grad == 6.0
    assert t.rows()["val"][t.rows()["op"] == CODE["input"]].tolist() == [2.0, 5.0]


def test_value_setter_on_a_node_raises():
    x = fad.Var(2.0)
    y = x * 3.0
    with pytest.raises(fad.FastADError):
        y.value = 1.0
    assert y.value == 6.0


def test_leaf_pickles_node_does_not():
    x = fad.Var(1.5)
    x.grad = 0.25
    y = pickle.loads(pickle.dumps(x))
    assert (y.value, y.grad, y.is_leaf) == (1.5, 0.25, True)
    assert y is not x
    with pytest.raises(TypeError):
        pickle.dumps(x * 2.0)


def test_array_leaf_pickles_with_its_grad():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    (a * a).sum().backward()
    b = pickle.loads(pickle.dumps(a))
    assert b.value.tolist() == [1.0, 2.0, 3.0] and b.grad.tolist() == [2.0, 4.0, 6.0] and b is not a
    assert pickle.loads(pickle.dumps(fad.Array(np.ones(2)))).grad.tolist() == [0.0, 0.0]  # never swept
    with pytest.raises(TypeError):
        pickle.dumps(a * 2.0)


@pytest.mark.parametrize("bad", ["a", 1 + 2j, None, [1.0], np.array([1.0, 2.0])])
def test_var_of_a_non_number_raises(bad):
    with pytest.raises(TypeError):
        fad.Var(bad)


def test_var_call_forms():
    # Var(x) has a fast constructor (vectorcall); every other call form takes
    # the ordinary route with the same checks.
    assert fad.Var(value=2.5).value == 2.5
    assert fad.Var(True).value == 1.0 and fad.Var(3).value == 3.0
    assert list(map(fad.Var, [1.0, 2.0]))[1].value == 2.0
    with pytest.raises(TypeError, match="Var\\(\\) takes a real number, got Var"):
        fad.Var(fad.Var(1.0))
    with pytest.raises(TypeError, match="Var\\(\\) takes a real number, got str"):
        fad.Var(value="a")
    with pytest.raises(TypeError):
        fad.Var()
    with pytest.raises(TypeError):
        fad.Var(1.0, 2.0)
    with pytest.raises(TypeError):
        fad.Var(1.0, value=2.0)


def test_var_of_numpy_scalars():
    assert fad.Var(np.float64(2.5)).value == 2.5
    assert fad.Var(np.int64(3)).value == 3.0 and type(fad.Var(np.int64(3)).value) is float


def test_max_rows_overflow_raises():
    x = fad.Var(1.0)
    with fad.Tape(max_rows=10) as t:
        y = x
        with pytest.raises(fad.FastADError, match="max_rows"):
            for _ in range(20):
                y = y + 1.0
    assert len(t) == 10


def test_max_rows_bad_values():
    for bad in (0, -5, 2**31):
        with pytest.raises(ValueError):
            fad.Tape(max_rows=bad)


# ---------------------------------------------------------------------------
# Tapes and rows
# ---------------------------------------------------------------------------

def test_textbook_rows():
    x1, x2 = fad.Var(2.0), fad.Var(3.0)
    with fad.Tape() as t:
        z = x1 * x2 + fad.sin(x1)
    assert z.tape is t and z.index == 4 and x1.index is None
    r = t.rows()
    assert set(r) == {"op", "a", "b", "da", "db", "c", "val", "adj"}
    assert r["op"].tolist() == [CODE[n] for n in ("input", "input", "mul", "sin", "add")]
    assert r["a"].tolist() == [-1, -1, 0, 0, 2]
    assert r["b"].tolist() == [-1, -1, 1, -1, 3]
    # the partials, stored at recording: mul swaps its inputs' values, sin'
    # is cos, add passes 1 to both (an INPUT row keeps its value in da)
    assert r["da"].tolist() == [2.0, 3.0, 3.0, math.cos(2.0), 1.0]
    assert r["db"].tolist() == [0.0, 0.0, 2.0, 0.0, 1.0]
    assert r["val"].tolist() == [2.0, 3.0, 6.0, math.sin(2.0), z.value]
    assert (r["op"].dtype, r["a"].dtype, r["b"].dtype, r["c"].dtype, r["val"].dtype) == (
        np.uint8, np.int32, np.int32, np.float64, np.float64)
    assert r["adj"] is None
    assert [(row, leaf) for row, leaf in t.inputs()] == [(0, x1), (1, x2)]
    z.backward(retain_graph=True)
    adj = t.rows()["adj"]
    assert adj.tolist() == [x1.grad, x2.grad, 1.0, 1.0, 1.0]
    # rows() hands out copies
    r["val"][0] = 99.0
    assert t.rows()["val"][0] == 2.0


def test_rows_recompute_values_through_array_rows():
    # Values are recomputed from the rows: an elem row and a scalar-valued
    # array row (a full sum) keep theirs, and scalar rows above them follow.
    A = fad.Array(np.array([0.5, -1.25, 2.0]))
    x = fad.Var(0.75)
    with fad.Tape() as t:
        e = A[1] * x                 # elem row, then mul
        s = (A * A).sum()            # array rows, the sum a scalar
        y = fad.sin(s) + e / 3.0
    val = t.rows()["val"]
    for v in (e, s, y):
        assert val[v.index] == v.value
    y.backward()
    assert x.grad == pytest.approx(-1.25 / 3)
    assert A.grad.tolist() == pytest.approx((2 * math.cos(5.8125) * A.value + [0, 0.75 / 3, 0]).tolist())


def test_nbytes_counts_recomputed_values_while_the_tape_holds_them():
    x = fad.Var(1.5)
    with fad.Tape() as t:
        y = fad.exp(x) * x + 1.0
    before = t.nbytes
    t.rows()  # recomputes the values, and keeps them for the next reader
    assert t.nbytes == before + 8 * len(t)
    y.backward()  # consumed: the values go (a later reader recomputes them)
    after = t.nbytes
    t.rows()
    assert t.nbytes == after + 8 * len(t)


def test_constant_folding_rows():
    x = fad.Var(2.0)
    with fad.Tape() as t:
        exprs = [x + 2, 2 - x, x ** 2, x ** 3, 2 ** x, x / 4.0, 3.0 * x]
    r = t.rows()
    assert len(t) == 1 + len(exprs)
    rows = list(zip(r["op"].tolist(), r["a"].tolist(), r["b"].tolist(), r["c"].tolist()))
    assert rows[0] == (CODE["input"], -1, -1, 0.0)
    assert rows[1] == (CODE["add"], 0, -1, 2.0)     # x + 2: b is the constant
    assert rows[2] == (CODE["sub"], -1, 0, 2.0)     # 2 - x: a is the constant
    assert rows[3][:3] == (CODE["square"], 0, -1)   # x ** 2 is a square
    assert rows[4] == (CODE["power"], 0, -1, 3.0)   # x ** 3
    assert rows[5] == (CODE["power"], -1, 0, 2.0)   # 2 ** x
    assert rows[6] == (CODE["div"], 0, -1, 4.0)
    assert rows[7] == (CODE["mul"], -1, 0, 3.0)
    assert [e.value for e in exprs] == [4.0, 0.0, 4.0, 8.0, 4.0, 0.5, 6.0]


def test_tape_size_and_len():
    x = fad.Var(2.0)
    with fad.Tape() as t:
        assert len(t) == 0
        y = x
        for _ in range(1000):
            y = y * 1.0001
    assert len(t) == 1001
    assert t.nbytes >= 1001 * (1 + 4 + 4 + 8 + 8)
    assert "1,001 rows" in repr(t)


def test_leaf_used_on_two_tapes():
    x = fad.Var(2.0)
    with fad.Tape() as t1:
        a = x * 3.0
    with fad.Tape() as t2:
        b = x * 5.0
    c = a + x  # back on t1: x needs its INPUT row there again
    assert c.tape is t1 and b.tape is t2
    c.backward()
    assert x.grad == 4.0
    b.backward()
    assert x.grad == 9.0


def test_with_tape_after_backward_refuses_more_ops():
    x = fad.Var(2.0)
    with fad.Tape():
        y = x * x
        y.backward()
        with pytest.raises(fad.FastADError):
            x * 3.0


def test_an_earlier_sweeps_adjoints_never_leak_into_the_next():
    # The adjoint column is zeroed as it grows and swept rows are zeroed
    # again before the next sweep: on the same tape (retain_graph, more rows
    # recorded in between) and on a new tape that takes a freed one's arrays.
    x = fad.Var(2.0)
    with fad.Tape() as t:
        y = fad.sin(x) * x
        y.backward(retain_graph=True)
        z = y * 3.0 + x  # rows past the swept ones
    z.backward(retain_graph=True)
    g1 = 2.0 * (math.cos(2.0) * 2.0 + math.sin(2.0))
    assert x.grad == pytest.approx(g1 / 2.0 * (1 + 3) + 1)
    assert t.rows()["adj"][-1] == 1.0
    del y, z, t  # the tape's arrays are parked for the next one
    w = fad.Var(0.5)
    u = w * w
    u.backward()
    assert w.grad == 1.0
    assert u.tape.rows()["adj"].tolist() == [1.0, 1.0]


def test_with_tape_retain_graph_keeps_recording():
    x = fad.Var(2.0)
    with fad.Tape():
        y = x * x
        y.backward(retain_graph=True)
        z = y * 3.0
    z.backward()
    assert x.grad == 4.0 + 12.0


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

def test_threads_record_on_their_own_tapes(run_interleaved):
    n_threads, steps = 4, 200
    errors, last = {}, {}
    barrier = threading.Barrier(n_threads)

    def work(k):
        worst = 0.0
        try:
            for i in range(steps):
                t = 0.1 * k + 0.003 * i
                x = fad.Var(t)
                y = fad.sin(x) * x * k + fad.exp(-x * x)
                held = y
                y.backward()
                want = math.cos(t) * t * k + math.sin(t) * k - 2 * t * math.exp(-t * t)
                worst = max(worst, abs(x.grad - want))
            x = fad.Var(1.0)
            held = x * k  # keep one node alive while the others look
            last[k] = held
            barrier.wait()
        except Exception as e:  # pragma: no cover - reported below
            errors[k] = repr(e)
            barrier.abort()
        errors.setdefault(k, worst)

    run_interleaved([threading.Thread(target=work, args=(k,)) for k in range(1, n_threads + 1)])
    assert all(isinstance(e, float) and e < 1e-12 for e in errors.values()), errors
    tapes = [last[k].tape for k in range(1, n_threads + 1)]
    assert all(t is not None for t in tapes)
    assert len({id(t) for t in tapes}) == n_threads  # one tape per thread
    assert [last[k].value for k in range(1, n_threads + 1)] == [1.0, 2.0, 3.0, 4.0]


def test_two_graphs_on_the_thread_tape_and_what_the_error_says():
    """Graphs built outside any `with fad.Tape()` share the thread's tape,
    so the first backward() releases the second too; the error says so and
    what to do, and with a block each both sweep."""
    x = fad.Var(2.0)
    z1, z2 = x * x, x * 3.0
    z1.backward()
    with pytest.raises(fad.FastADError, match=r"share the thread's tape.*its own block"):
        z2.backward()
    x.grad = 0.0
    with fad.Tape():
        z1 = x * x
    with fad.Tape():
        z2 = x * 3.0
    z1.backward()
    z2.backward()
    assert x.grad == 7.0


def test_a_leaf_set_to_a_new_value_while_an_old_graph_lives(engine):
    """The new graph differentiates at the new value (the reference reused
    the leaf's input row, recorded at the old one: sin' gave cos 0.5, not 1)."""
    x = engine.Var(2.0)
    keep = x * x
    x.value = 3.0
    w = x * x
    w.backward()
    assert x.grad == 6.0 and keep.value == 4.0
    x = engine.Var(0.5)
    keep = engine.sin(x)
    x.value = 0.0
    engine.sin(x).backward()
    assert x.grad == 1.0


def test_comparisons_after_backward_compare_values(engine):
    """`if loss < best` after loss.backward(): the swept graph's value is
    compared as a number (no guard row on a released tape, no error), on
    both engines; Arrays compare elementwise."""
    x = engine.Var(2.0)
    loss = x * x
    loss.backward()
    assert (loss < 5, loss > 5, loss == 4.0, loss != 4.0, 5 > loss, loss >= x) == (
        True, False, True, False, True, True)
    assert bool(loss) and min(loss, 10.0) is loss and loss in [4.0]
    assert x.grad == 4.0
    if engine is fad:
        a = fad.Array(np.array([1.0, 2.0]))
        y = a * a
        total = y.sum()
        total.backward()
        assert (y > 1.0).tolist() == [False, True] and (total < 10.0) is True


def test_a_thread_that_reuses_a_finished_threads_ident_gets_its_own_tape():
    """Thread idents are reused (a new thread often gets the last one's):
    keyed by the ident, the per-thread state went to the new thread, whose
    ops landed on the finished thread's tape (so its backward() released
    values the first thread handed out). Keyed by CPython's thread-state id
    now. Tries until two threads share an ident (at once on Linux)."""
    def run(out, k):
        out[k] = (threading.get_ident(), fad.Var(1.0) * 2.0)

    for _ in range(50):
        got = {}
        for k in (0, 1):
            t = threading.Thread(target=run, args=(got, k))
            t.start()
            t.join()
        if got[0][0] == got[1][0]:
            break
    else:
        pytest.skip("no two threads shared an ident here")
    first, second = got[0][1], got[1][1]
    assert first.tape is not second.tape
    second.backward()
    assert first.value == 2.0 and (first * 3.0).value == 6.0  # the first thread's tape lives on


def _chain(n):
    x = fad.Var(0.5)
    y = x
    for _ in range(n):
        y = y * 1.0000001 + 0.0
    return x, y


def test_one_tape_swept_from_two_threads_gives_right_numbers_or_refuses():
    """A tape's sweep runs without the GIL over its one adjoint column: two
    threads sweeping it at once summed into each other's adjoints (x.grad
    was 2e26 where 16.6 was right). Now a second sweep while one runs raises
    FastADError, and every sweep that ran added exactly its own gradient."""
    x, y = _chain(300_000)
    outs = [y * 1.0, y * 2.0]
    outs[0].backward(retain_graph=True)
    one = x.grad  # d outs[0] / dx
    x.grad = 0.0
    done = {0: 0, 1: 0}

    def work(k):
        for _ in range(6):
            try:
                outs[k].backward(retain_graph=True)
                done[k] += 1
            except fad.FastADError as e:
                assert "being swept in another thread" in str(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done[0] + done[1] > 0
    assert x.grad == pytest.approx((done[0] + 2 * done[1]) * one, rel=1e-12)


def test_recording_on_a_tape_while_another_thread_sweeps_it_is_no_crash():
    """Growing a tape reallocates the rows a sweep in another thread is
    reading: that was a segfault. Now the grow raises FastADError. In a
    subprocess, so that a crash fails this test, not the whole run."""
    script = """if True:
        import threading, fastad as fad
        x = fad.Var(0.5); y = x
        for _ in range(300_000): y = y * 1.0000001
        done, seen = threading.Event(), []
        def record():
            z = y
            try:
                while not done.is_set(): z = z * 1.0
            except fad.FastADError as e:
                seen.append("being swept in another thread" in str(e))
        t = threading.Thread(target=record); t.start()
        for _ in range(30): y.backward(retain_graph=True)
        done.set(); t.join()
        print("ok", seen)
    """
    import os
    import subprocess
    import tempfile
    # beside the fastad these tests imported (an installed one under CI), not the source tree
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fad.__file__)))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=tempfile.gettempdir(), env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok") and "False" not in run.stdout


# ---------------------------------------------------------------------------
# debug_nans
# ---------------------------------------------------------------------------

def test_debug_nans_raises_naming_the_op():
    fad.debug_nans(True)
    with pytest.raises(FloatingPointError, match="'log'"):
        fad.log(fad.Var(-1.0))
    with pytest.raises(FloatingPointError, match="'sqrt'"):
        fad.sqrt(fad.Var(-2.0))
    # finite results and infinities are not errors
    assert fad.log(fad.Var(0.0)).value == -math.inf
    fad.debug_nans(False)
    assert math.isnan(fad.log(fad.Var(-1.0)).value)


def test_debug_nans_raises_a_fastad_error_and_holds_for_a_with_block():
    """The error is fad.NanError: a FastADError, as API.md's errors are, and
    still a FloatingPointError. `with fad.debug_nans():` turns it on for
    the block, then back to what it was."""
    assert issubclass(fad.NanError, fad.FastADError) and issubclass(fad.NanError, FloatingPointError)
    with fad.debug_nans():
        with pytest.raises(fad.NanError, match="'log'"):
            fad.log(fad.Var(-1.0))
        with fad.debug_nans(False):
            assert math.isnan(fad.log(-1.0))
        with pytest.raises(fad.NanError):
            fad.log(-1.0)
    assert math.isnan(fad.log(-1.0))
    assert repr(fad.debug_nans(False)) == "fad.debug_nans(False)"


def test_debug_nans_checks_plain_numbers_too():
    """fad.log(-1.0) on a float raises like fad.log(Var(-1.0)) (it returned
    nan); a nan in is no error, and inf - inf names its inputs."""
    fad.debug_nans(True)
    try:
        with pytest.raises(FloatingPointError, match=r"'log' made nan from inputs with no nan \(-1.0,\)"):
            fad.log(-1.0)
        with pytest.raises(FloatingPointError, match="'power'"):
            fad.power(-2.0, 0.5)
        assert math.isnan(fad.log(math.nan))
        with pytest.raises(FloatingPointError, match=r"'sub' made nan from inputs with no nan \(inf, inf\)"):
            fad.Var(math.inf) - math.inf
        with pytest.raises(FloatingPointError, match="'log'"):  # and arrays of them (nan before)
            fad.log(np.array([1.0, -1.0]))
        with pytest.raises(FloatingPointError, match="'arctan2'|'power'"):
            fad.power(np.array([-2.0]), np.array([0.5]))
        assert np.isnan(fad.log(np.array([np.nan, 1.0])))[0]
    finally:
        fad.debug_nans(False)
    assert math.isnan(fad.log(-1.0))


def test_debug_nans_reports_where_nan_is_made_not_where_it_flows():
    x = fad.Var(-1.0)
    with fad.Tape():
        y = fad.sqrt(x)  # nan made here, with debug_nans off
        fad.debug_nans(True)
        z = y + 1.0      # nan in, nan out: not this op's fault
        assert math.isnan(z.value)
        with pytest.raises(FloatingPointError, match="'sub'"):
            fad.Var(math.inf) - math.inf


def test_debug_nans_catches_a_nan_made_by_adding_up_adjoints():
    """sqrt(x) - sqrt(x) at 0: each use passes back a number (inf, -inf),
    their sum is the nan; and inside no_grad the forward check holds too."""
    fad.debug_nans(True)
    x = fad.Var(0.0)
    with pytest.raises(FloatingPointError, match="adding up the adjoint of row 0"):
        (fad.sqrt(x) - fad.sqrt(x)).backward()
    with pytest.raises(FloatingPointError, match="adding up"):
        fad.grad(lambda t: fad.sqrt(t) - fad.sqrt(t))(0.0)
    with pytest.raises(FloatingPointError, match="adding up the adjoint of element 0"):  # read by element
        fad.grad(lambda t: fad.sqrt(t[0]) - fad.sqrt(t[0]))(np.array([0.0, 1.0]))
    with pytest.raises(FloatingPointError, match="adding up the adjoint of element 0"):  # and by an array op
        fad.grad(lambda t: fad.sqrt(t[0]) - fad.sqrt(t[0]) + t.sum())(np.array([0.0, 1.0]))
    with pytest.raises(FloatingPointError, match="adding up the adjoint of row 1 .op 'elem'"):  # read once
        fad.grad(lambda t: (lambda a: fad.sqrt(a) - fad.sqrt(a))(t[0]))(np.array([0.0, 1.0]))
    with fad.no_grad(), pytest.raises(FloatingPointError, match="'log'"):
        fad.log(fad.Var(-1.0))
    with fad.no_grad(), pytest.raises(FloatingPointError, match="'log'"), np.errstate(invalid="ignore"):
        np.log(fad.Array(np.array([-1.0])))
    nan_in = fad.Var(math.nan)  # nan in, nan out: no raise, here or in the sweep
    (nan_in * 2.0 + nan_in * 3.0).backward()
    assert nan_in.grad == 5.0
    fad.debug_nans(False)
    assert math.isnan(fad.grad(lambda t: fad.sqrt(t) - fad.sqrt(t))(0.0))  # off: the IEEE answer


def test_debug_nans_names_the_op_that_made_nan_in_the_reverse_sweep():
    # (-2) ** y is 4 at y = 2, but d/dy = f log(-2) is nan: the forward sweep is
    # clean and the reverse sweep makes the first nan, at the power row.
    x, y = fad.Var(-2.0), fad.Var(2.0)
    fad.debug_nans(True)
    try:
        z = (x ** y) * 3.0
        with pytest.raises(FloatingPointError, match="reverse sweep.*'power'.*-2.0, 2.0"):
            z.backward()
    finally:
        fad.debug_nans(False)
    z2 = (x ** y) * 3.0  # off: the IEEE answer
    z2.backward()
    assert math.isnan(y.grad) and x.grad == -12.0


def test_round_and_trunc_give_numbers_as_for_a_float(engine):
    """round(v), round(v, n), math.trunc(v) work as on the float (TypeError
    before); under compile they pin the value, as float(v) does."""
    for value in (-2.5, 2.675, 7.0):
        v = engine.Var(value)
        assert (round(v), round(v, 2), math.trunc(v), int(v)) == \
            (round(value), round(value, 2), math.trunc(value), int(value))
    if engine is fad:
        cf = fad.compile(lambda x: x[0] * round(x[1]), [1.0, 2.4])
        assert cf([1.0, 3.6]) == 4.0 and cf.grad([1.0, 2.4]) == [2.0, 0.0]


@pytest.mark.parametrize("call", [
    lambda big: fad.Var(big),
    lambda big: fad.Var(2.0) * big,
    lambda big: big - fad.Var(2.0),
    lambda big: fad.Var(2.0) < big,
    lambda big: fad.sin(big),
    lambda big: np.add(fad.Var(2.0), big),
    lambda big: fad.Array(np.ones(2)) + big,
    lambda big: fad.grad(lambda t: t * t)(big),
    lambda big: fad.grad(lambda t: t[0])([big, 1.0]),
    lambda big: fad.grad(lambda t: t[0][0])([[big]]),
    lambda big: fad.compile(lambda t: t[0] * t[1], [1.0, 2.0]).grad([big, 2.0]),
    lambda big: setattr(fad.Var(1.0), "grad", big),
    lambda big: (fad.Var(1.0) * 2.0).backward(seed=big),
    lambda big: fad.Var(1.0).backward(seed=big),
], ids=["Var", "mul", "rsub", "compare", "sin", "ufunc", "array", "grad", "grad-list", "grad-tree", "compile",
        "grad-setter", "seed", "leaf-seed"])
def test_an_int_beyond_float64_is_a_value_error(call):
    # float() raises OverflowError; API.md's errors are TypeError, ValueError or FastADError
    with pytest.raises(ValueError, match="beyond float64"):
        call(10 ** 400)

"""fastad._replay: the Trace (a frozen tape) and its sweeps in C.

Traces are built here both from recordings (fad.compile) and by hand, row
by row, so every sweep is checked against formulas written out in the test,
and every check of _validate (rows from a pickle are user input) is hit
with a corrupted trace that must raise ValueError, never crash.
"""
import math
import pickle
import os
import subprocess
import tempfile
import sys
import threading

import numpy as np
import pytest

import fastad as fad
from fastad import loops, ops as fops
from fastad._replay import RowQueue, Trace

CODE = {s.name: s.code for s in fops.OPS}
N = -1  # "no argument" / "the constant c"


def hand_trace():
    """f(x0, x1) = x0 * x1 + sin(x0), g = (2 - x1) / 4 + x0 ** 3, two outputs.

    rows: 0 x0, 1 x1, 2 x0*x1, 3 sin(x0), 4 r2+r3, 5 2-x1 (const in a),
          6 r5/4 (const in b), 7 x0**3 (const in b), 8 r6+r7
    """
    op = [CODE["input"], CODE["input"], CODE["mul"], CODE["sin"], CODE["add"],
          CODE["sub"], CODE["div"], CODE["power"], CODE["add"]]
    a = [N, N, 0, 0, 2, N, 5, 0, 6]
    b = [N, N, 1, N, 3, 1, N, N, 7]
    c = [0, 0, 0, 0, 0, 2.0, 4.0, 3.0, 0]
    x0, x1 = 0.5, 1.5
    val0 = [x0, x1, x0 * x1, math.sin(x0), x0 * x1 + math.sin(x0), 2 - x1, (2 - x1) / 4,
            x0 ** 3, (2 - x1) / 4 + x0 ** 3]
    return Trace(op, a, b, c, val0, [0, 1], [4, 8], [0.0, 0.0])


def hand_f(x0, x1):
    return np.array([x0 * x1 + math.sin(x0), (2 - x1) / 4 + x0 ** 3])


def hand_J(x0, x1):
    return np.array([[x1 + math.cos(x0), x0], [3 * x0 ** 2, -0.25]])


def hand_H0(x0, x1):  # Hessian of output 0
    return np.array([[-math.sin(x0), 1.0], [1.0, 0.0]])


def hand_H1(x0, x1):  # Hessian of output 1
    return np.array([[6 * x0, 0.0], [0.0, 0.0]])


def trace_args(t):
    return [t.op, t.a, t.b, t.c, t.val0, t.in_rows, t.out_rows, t.out_const]


# ---------------------------------------------------------------------------
# a trace from a recording
# ---------------------------------------------------------------------------

def test_trace_from_recording_mirrors_the_tape():
    outside = fad.Var(2.0)  # a leaf from outside f: a constant of the trace
    cf = fad.compile(lambda x: x * outside + fad.abs(x) + (x > 1.0), 3.0)
    t = cf.traces[0]
    with fad.Tape() as tape:
        x = fad.Var(3.0)
        y = x * outside + fad.abs(x) + (x > 1.0)
    rows = tape.rows()
    assert t.op.tolist() == rows["op"].tolist()
    assert t.a.tolist() == rows["a"].tolist() and t.b.tolist() == rows["b"].tolist()
    assert t.c.tolist() == rows["c"].tolist() and t.val0.tolist() == rows["val"].tolist()
    assert (t.n, t.n_in, t.n_out) == (len(tape), 1, 1)
    assert t.op.dtype == np.uint8 and t.a.dtype == np.int32 and t.c.dtype == np.float64
    # a kink or guard row remembers its piece, a smooth row has none
    kinds = {s.code: s.kind for s in fops.OPS}
    for i, code in enumerate(t.op):
        if kinds[code] in ("kink", "guard"):
            assert t.branch0[i] >= 0
        else:
            assert t.branch0[i] == -1
    assert t.branch0[t.op == CODE["gt"]].tolist() == [1]  # 3 > 1 is true
    t_neg = fad.compile(lambda x: fad.abs(x) + (x > 1.0), -3.0).traces[0]
    assert t_neg.branch0[t_neg.op == CODE["gt"]].tolist() == [0]
    abs_pos = t.branch0[t.op == CODE["abs"]]
    abs_neg = t_neg.branch0[t_neg.op == CODE["abs"]]
    assert len(abs_pos) == len(abs_neg) == 1 and abs_pos[0] != abs_neg[0]
    lowered = [t.code, t.la, t.lb, t.pool]
    assert t.nbytes == sum(arr.nbytes for arr in [t.branch0] + lowered + trace_args(t))
    # the outside leaf is frozen at its recorded value
    assert cf.value_and_grad(3.0) == (y.value, 3.0)
    outside.value = 5.0
    assert cf.value_and_grad(3.0) == (y.value, 3.0)


def test_recorded_trace_methods_match_grad_exactly():
    def f(x):
        return fad.tanh(x[0] * x[1]) + fad.maximum(x[0], x[2]) * fad.exp(x[1]) - fad.relu(x[2])
    cf = fad.compile(f, np.array([0.4, -0.3, 0.2]))
    t = cf.traces[0]
    for x in [np.array([0.4, -0.3, 0.2]), np.array([1.1, 0.7, 0.9]), np.array([0.9, 2.0, 0.1])]:
        y, g, changed = t.value_and_grad(x)
        assert changed == -1
        want_v, want_g = fad.value_and_grad(f)(x)
        assert y.tolist() == [want_v] and np.array_equal(g, want_g)
        y2, changed2 = t.values(x)
        assert changed2 == -1 and y2.tolist() == [want_v]
        y3, J, changed3 = t.jacobian_rev(x)
        assert changed3 == -1 and np.array_equal(J, want_g[None, :])
        y4, vj, changed4 = t.vjp(x, [1.0])
        assert changed4 == -1 and np.array_equal(vj, want_g)


# ---------------------------------------------------------------------------
# a trace built by hand: every sweep against formulas
# ---------------------------------------------------------------------------

def test_hand_trace_all_sweeps():
    t = hand_trace()
    assert (t.n, t.n_in, t.n_out) == (9, 2, 2)
    assert (t.branch0 == -1).all()
    rng = np.random.default_rng(0)
    for x0, x1 in [(0.5, 1.5), (1.2, 0.3), (2.0, -0.7)]:  # x0 < 0: see the next test
        x = np.array([x0, x1])
        y, changed = t.values(x)
        assert changed == -1
        np.testing.assert_allclose(y, hand_f(x0, x1), rtol=1e-15)
        J = hand_J(x0, x1)
        for k in range(2):
            y2, g, _ = t.value_and_grad(x, k)
            assert np.array_equal(y2, y)
            np.testing.assert_allclose(g, J[k], rtol=1e-15)
        _, Jr, _ = t.jacobian_rev(x)
        np.testing.assert_allclose(Jr, J, rtol=1e-15)
        V = rng.normal(size=(2, 3))
        _, JV, _ = t.jvp(x, V)
        assert JV.shape == (2, 3)
        np.testing.assert_allclose(JV, J @ V, rtol=1e-14)
        _, JV1, _ = t.jvp(x, V[:, 0])  # a single vector is one column
        np.testing.assert_allclose(JV1[:, 0], J @ V[:, 0], rtol=1e-14)
        u = rng.normal(size=2)
        _, uJ, _ = t.vjp(x, u)
        np.testing.assert_allclose(uJ, u @ J, rtol=1e-14)
        for k, H in enumerate([hand_H0(x0, x1), hand_H1(x0, x1)]):
            g, HV, _ = t.hvp(x, np.eye(2), k)
            np.testing.assert_allclose(g, J[k], rtol=1e-15)
            np.testing.assert_allclose(HV, H, rtol=1e-14, atol=1e-15)


def test_hand_trace_hvp_at_negative_base():
    """x0 ** 3 (power with a constant exponent) at x0 < 0: the Hessian is
    6 x0. op_second computes the d/dy partials (log x0 = nan) even though
    y is a constant whose tangent is 0, and nan * 0 poisons H."""
    t = hand_trace()
    for x0, x1 in [(-1.2, 0.3), (-0.5, 2.0)]:
        g, HV, changed = t.hvp(np.array([x0, x1]), np.eye(2), 1)
        assert changed == -1
        np.testing.assert_allclose(g, hand_J(x0, x1)[1], rtol=1e-15)
        np.testing.assert_allclose(HV, hand_H1(x0, x1), rtol=1e-14, atol=1e-15)


def test_unused_inputs_constant_outputs_and_input_outputs():
    # rows: 0 x0, 1 x1 (x2 has no row); outputs: x0 * 2, the constant 7, x1 itself
    t = Trace([CODE["input"], CODE["input"], CODE["mul"]], [N, N, 0], [N, N, N], [0, 0, 2.0],
              [1.0, 1.0, 2.0], [0, 1, -1], [2, -1, 1], [0.0, 7.0, 0.0])
    x = np.array([3.0, 4.0, 5.0])
    y, changed = t.values(x)
    assert y.tolist() == [6.0, 7.0, 4.0] and changed == -1
    assert t.value_and_grad(x, 0)[1].tolist() == [2.0, 0.0, 0.0]
    assert t.value_and_grad(x, 1)[1].tolist() == [0.0, 0.0, 0.0]
    assert t.value_and_grad(x, 2)[1].tolist() == [0.0, 1.0, 0.0]
    assert t.jacobian_rev(x)[1].tolist() == [[2, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert t.jvp(x, np.eye(3))[1].tolist() == [[2, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert t.vjp(x, [1.0, 10.0, 100.0])[1].tolist() == [2.0, 100.0, 0.0]
    assert not t.hvp(x, np.eye(3), 1)[1].any()


def test_empty_trace():
    t = Trace([], [], [], [], [], [], [-1], [3.5])
    assert t.n == 0
    y, changed = t.values(np.zeros(0))
    assert y.tolist() == [3.5] and changed == -1
    y, g, changed = t.value_and_grad(np.zeros(0))
    assert y.tolist() == [3.5] and g.shape == (0,) and changed == -1


def test_changed_reports_the_first_row_on_another_piece():
    def f(x):  # recorded at (1, 2): every kink on its upper piece
        return fad.abs(x[0]) + fad.relu(x[1]) + fad.maximum(x[1], x[0])
    cf = fad.compile(f, np.array([1.0, 2.0]))
    t = cf.traces[0]
    abs_row = int(np.flatnonzero(t.op == CODE["abs"])[0])
    relu_row = int(np.flatnonzero(t.op == CODE["relu"])[0])
    max_row = int(np.flatnonzero(t.op == CODE["maximum"])[0])
    assert abs_row < relu_row < max_row
    assert t.values(np.array([0.5, 1.5]))[1] == -1
    assert t.values(np.array([-1.0, 2.0]))[1] == abs_row
    assert t.values(np.array([-1.0, -2.0]))[1] == abs_row  # the first of two
    assert t.values(np.array([1.0, -2.0]))[1] == relu_row
    assert t.values(np.array([3.0, 2.0]))[1] == max_row
    assert t.values(np.array([2.0, 2.0]))[1] == max_row  # a tie is a piece of its own
    assert t.values(np.array([1.0, math.nan]))[1] == relu_row  # relu(nan) is not > 0
    assert t.values(np.array([0.0, 2.0]))[1] == abs_row  # abs at 0 too
    assert t.values(np.array([math.nan, 2.0]))[1] == abs_row  # and nan
    for method, extra in [("value_and_grad", ()), ("jacobian_rev", ()), ("vjp", ([1.0],)),
                          ("jvp", (np.eye(2),)), ("hvp", (np.eye(2),))]:
        assert getattr(t, method)(np.array([1.0, -2.0]), *extra)[-1] == relu_row, method


KINK_PIECES = {  # op: (function of x, points on each of its pieces)
    "abs": (lambda x: fad.abs(x[0]), [(-1.0, 0.0), (0.0, 0.0), (1.0, 0.0)]),
    "sign": (lambda x: fad.sign(x[0]) * x[1], [(-1.0, 1.0), (0.0, 1.0), (1.0, 1.0)]),
    "relu": (lambda x: fad.relu(x[0]), [(-1.0, 0.0), (1.0, 0.0)]),
    "maximum": (lambda x: fad.maximum(x[0], x[1]), [(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]),
    "minimum": (lambda x: fad.minimum(x[0], x[1]), [(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]),
}


@pytest.mark.parametrize("name", list(KINK_PIECES))
def test_every_piece_of_every_kink_is_remembered(name):
    """Recorded on any piece (below, at, above the kink), a replay on any
    other piece is reported. op_branch returns -1 for the lower piece of
    abs, sign, maximum and minimum, and -1 in branch0 means "a smooth row,
    never checked": recordings on that piece never notice a change."""
    f, pieces = KINK_PIECES[name]
    for rec in pieces:
        t = fad.compile(f, np.array(rec)).traces[0]
        row = int(np.flatnonzero(t.op == CODE[name])[0])
        assert t.branch0[row] != -1, f"recorded at {rec}: the {name} row is not checked"
        for other in pieces:
            want = -1 if other == rec else row
            assert t.values(np.array(other))[1] == want, f"recorded at {rec}, replayed at {other}"


def test_guard_rows_change_with_the_comparison():
    cf = fad.compile(lambda x: x * 2.0 if x < 1.0 else x * 3.0, 0.5)
    t = cf.traces[0]
    lt_row = int(np.flatnonzero(t.op == CODE["lt"])[0])
    assert t.branch0[lt_row] == 1
    assert t.values([0.9])[1] == -1
    assert t.values([1.0])[1] == lt_row
    assert t.values([math.nan])[1] == lt_row  # nan < 1 is false


def test_maximum_tie_splits_and_absolute_zero():
    t = fad.compile(lambda x: fad.maximum(x[0], x[1]), [1.0, 1.0]).traces[0]
    assert t.value_and_grad([2.0, 2.0])[1].tolist() == [0.5, 0.5]
    # sqrt'(0) = inf behind a relu that is off: the adjoint 0 passes nothing on
    cf = fad.compile(lambda x: fad.relu(fad.sqrt(x) - 1.0), 0.0)
    y, g, changed = cf.traces[0].value_and_grad([0.0])
    assert changed == -1 and y.tolist() == [0.0] and g.tolist() == [0.0]
    assert cf.grad(0.0) == 0.0 == fad.grad(lambda x: fad.relu(fad.sqrt(x) - 1.0))(0.0)


def test_absolute_zero_in_tangent_and_hvp_sweeps():
    """relu(sqrt(x) - 1) is 0 on [0, 1): its gradient at 0 is 0 (the reverse
    sweep's absolute zero), so its Hessian and its forward-mode derivative
    must be 0 too, not 0 * inf = nan (sqrt's tangent at 0 is inf, relu's
    partial there is 0)."""
    t = fad.compile(lambda x: fad.relu(fad.sqrt(x) - 1.0), 0.0).traces[0]
    g, HV, _ = t.hvp([0.0], [[1.0]])
    assert g.tolist() == [0.0]
    assert HV.tolist() == [[0.0]]
    _, JV, _ = t.jvp([0.0], [[1.0]])
    assert JV.tolist() == [[0.0]]  # = the reverse-mode Jacobian


def blocks_and_one_by_one(sweep, x, seed, zero_column):
    """(V, sweep(x, V), the same product column by column) for 40 random
    directions V, one of them zero: 40 make two blocks of 16 and a part."""
    V = np.random.default_rng(seed).normal(size=(len(x), 40))
    V[:, zero_column] = 0.0
    whole = sweep(x, V)
    one_by_one = np.column_stack([sweep(x, V[:, j:j + 1])[1][:, 0] for j in range(40)])
    return V, whole, one_by_one


def test_jvp_sweeps_columns_in_blocks_exactly_as_one_by_one():
    """jvp sweeps up to 16 directions at once. 40 columns make two full
    blocks and a part; each column must come out as a sweep along it alone
    would make it, bit for bit: a row only some columns reach (sqrt at 0,
    whose partial is inf, behind a flat relu), an unused input, a constant
    leaf from outside the function, a zero column."""
    w = fad.Var(2.0)  # from outside: a constant INPUT row of the trace

    def f(x):
        chain = sum(x[i] * fad.sin(x[i + 1]) for i in range(0, 38))  # x[39] unused
        return [chain, fad.relu(fad.sqrt(x[0]) - 1.0) * x[5] + w * x[3], x[7] / x[8] * w]

    x = np.linspace(0.0, 1.5, 40)  # x[0] = 0: sqrt's partial is inf there
    t = fad.compile(f, list(x)).traces[0]
    V, (y, JV, changed), one_by_one = blocks_and_one_by_one(t.jvp, x, 3, 4)
    assert changed == -1 and JV.shape == (3, 40)
    assert np.array_equal(JV, one_by_one)
    assert np.all(np.isfinite(JV)) and not JV[:, 4].any()
    J = t.jacobian_rev(x)[1]
    np.testing.assert_allclose(JV, J @ V, rtol=1e-12, atol=1e-12)
    assert np.array_equal(t.jvp(x, np.eye(40))[1], J)  # a basis column picks a column of J


def test_hvp_sweeps_columns_in_blocks_exactly_as_one_by_one(rosenbrock_hessian):
    """hvp sweeps up to 16 directions at once, after one reverse sweep: 40
    columns (two full blocks and a part) come out as 40 single products
    would, bit for bit, and as the analytic Hessian of a Rosenbrock-like
    sum says."""
    w = fad.Var(0.5)  # a constant leaf from outside

    def f(x):
        s = sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(39))
        return s + w * fad.relu(fad.sqrt(x[0]) - 1.0)  # flat at x[0] = 0, where sqrt' = inf

    x = np.linspace(0.0, 1.2, 40)
    t = fad.compile(f, list(x)).traces[0]
    V, (g, HV, changed), one_by_one = blocks_and_one_by_one(t.hvp, x, 4, 7)
    assert changed == -1 and HV.shape == (40, 40)
    assert np.array_equal(HV, one_by_one)
    assert np.array_equal(g, t.value_and_grad(x)[1])
    assert np.array_equal(t.hvp(x, V[:, :1])[0], g)  # one direction: the fused backward pass's gradient
    H = rosenbrock_hessian(x)
    np.testing.assert_allclose(t.hvp(x, np.eye(40))[1], H, rtol=1e-13, atol=1e-11)
    np.testing.assert_allclose(HV, H @ V, rtol=1e-12, atol=1e-9)
    assert not HV[:, 7].any()


def test_a_trace_keeps_no_block_of_tangents_after_a_hessian():
    """Scratch for the next call stays with a trace (values, adjoints,
    tangents: a few numbers a row), but not the blocks of 16 tangents a
    Hessian or a forward Jacobian sweeps with."""
    t = fad.compile(lambda x: sum(xi * fad.sin(xi) for xi in x), [0.5] * 100).traces[0]
    arrays = t.nbytes
    per_row = 4 * 8 + 1  # val, adj, tan, adj_tan and a reached flag
    kept = per_row * t.n + (2 * loops.SCRATCH * 8 if len(t.loops) else 0)  # and the loop sweeps' scratch
    t.hvp(np.full(100, 0.5), np.eye(100)[:, :1])
    assert 0 < t.nbytes - arrays <= kept
    H = t.hvp(np.full(100, 0.5), np.eye(100))[1]
    J = t.jvp(np.full(100, 0.5), np.eye(100))[1]
    assert H.shape == (100, 100) and J.shape == (1, 100)
    assert 0 < t.nbytes - arrays <= kept


def test_trace_hessian_checks_its_range_and_output():
    t = fad.compile(lambda x: x[0] * x[1] * x[2], [1.0, 2.0, 3.0]).traces[0]
    g, H, changed = t.hessian([1.0, 2.0, 3.0], 1, 3)
    assert changed == -1 and H.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    for lo, hi in ((0, 4), (-1, 2), (2, 1)):
        with pytest.raises(ValueError, match="outside the 3 inputs"):
            t.hessian([1.0, 2.0, 3.0], lo, hi)
    with pytest.raises(ValueError, match="one scalar output"):
        hand_trace().hessian([0.5, 1.5], 0, 2)


def test_nan_and_inf_propagate_without_errors():
    t = hand_trace()
    y, changed = t.values([math.nan, 1.0])
    assert changed == -1 and math.isnan(y[0]) and math.isnan(y[1])
    y, g, _ = t.value_and_grad([math.inf, 1.0])
    assert math.isnan(y[0])  # sin(inf)
    t = fad.compile(lambda x: fad.log(x) * fad.sqrt(x), 1.0).traces[0]
    y, g, changed = t.value_and_grad([-1.0])
    assert changed == -1 and math.isnan(y[0]) and math.isnan(g[0])


def every_shape(x, y):
    """Each arithmetic op with two rows, a constant second and a constant
    first argument, constants 0.0 and -0.0 (equal, but not the same bits),
    and a general row."""
    return [x + y, x + 2.0, 2.0 + x, x - y, x - 2.0, 2.0 - x, x * y, x * 2.0, 2.0 * x,
            x / y, x / 2.0, 2.0 / x, -x, x ** 2, x * 0.0, x * -0.0, fad.sin(x) ** 0.5]


def test_lowered_rows_keep_op_arguments_and_constant_bits():
    """The rows forward_sweep and reverse_sweep read (code, la, lb, pool)
    say what the recorded ones say."""
    with fad.Tape() as tape:
        every_shape(fad.Var(1.5), fad.Var(0.5))
    rows = tape.rows()
    op, a, b, c = rows["op"], rows["a"], rows["b"], rows["c"]
    n = len(op)
    t = Trace(op, a, b, c, rows["val"], [0, 1], [n - 1], [0.0])
    row = op != CODE["input"]
    a_const, b_const = row & (a < 0), row & (b < 0)
    assert np.array_equal(t.code & 63, np.where(row, op, 0))
    assert np.array_equal(t.code & 64 != 0, a_const) and np.array_equal(t.code & 128 != 0, b_const)
    assert np.array_equal(t.la[~a_const], a[~a_const]) and np.array_equal(t.lb[~b_const], b[~b_const])
    bits = lambda v: np.asarray(v, np.float64).view(np.uint64)
    assert np.array_equal(bits(t.pool[~t.la[a_const]]), bits(c[a_const]))
    assert np.array_equal(bits(t.pool[~t.lb[b_const]]), bits(c[b_const]))
    assert len(t.pool) == len(set(bits(c[a_const | b_const]).tolist())) == 4  # 0, -0, 0.5, 2


@pytest.mark.parametrize("x, y", [(2.0, 3.0), (-0.5, 0.25), (1e-300, -7.0)])
def test_every_shape_replays_as_it_records(x, y):
    """Values and every output's gradient, bit for bit (the sign of a zero
    included) as recording them anew at the same point."""
    cf = fad.compile(every_shape, 1.5, 0.5)
    t = cf.traces[0]
    want = [fad.value_and_grad(lambda x, y, k=k: every_shape(x, y)[k], argnums=(0, 1))(x, y)
            for k in range(17)]
    got, J, changed = t.jacobian_rev(np.array([x, y]))
    assert changed == -1
    assert got.view(np.uint64).tolist() == np.array([w[0] for w in want]).view(np.uint64).tolist()
    assert J.view(np.uint64).tolist() == np.array([w[1] for w in want]).view(np.uint64).tolist()
    assert math.copysign(1.0, got[15]) == (-1.0 if x > 0 else 1.0)  # x * -0.0


# ---------------------------------------------------------------------------
# pickling and threads
# ---------------------------------------------------------------------------

def test_trace_pickle_round_trip():
    t = hand_trace()
    fn, args = t.__reduce__()
    assert fn is Trace and args[-1] == fops.fingerprint()
    t2 = pickle.loads(pickle.dumps(t))
    for name in ("op", "a", "b", "c", "val0", "branch0", "in_rows", "out_rows", "out_const"):
        assert np.array_equal(getattr(t2, name), getattr(t, name)), name
        assert getattr(t2, name).dtype == getattr(t, name).dtype
    x = np.array([0.3, -0.8])
    assert np.array_equal(t2.jacobian_rev(x)[1], t.jacobian_rev(x)[1])
    assert np.array_equal(t2.hvp(x, np.eye(2))[1], t.hvp(x, np.eye(2))[1])


def test_grad_rows_from_many_threads_share_one_trace():
    def f(x):
        return sum(fad.sin(x[i]) * fad.exp(x[7 - i] * 0.3) for i in range(8))
    cf = fad.compile(f, [1.0] * 8)
    t = cf.traces[0]
    X = np.random.default_rng(1).normal(size=(400, 8))
    want = np.stack([t.value_and_grad(x)[1] for x in X])
    wantY = np.array([t.values(x)[0][0] for x in X])
    G = np.empty_like(X)
    Y = np.empty(len(X))
    changed = np.zeros(len(X), np.int8)
    # 8 threads share one queue of blocks of 3 rows (the last block is short)
    G[:] = Y[:] = np.nan
    rows = RowQueue(0, 400, 3)
    threads = [threading.Thread(target=t.grad_rows, args=(X, G, Y, changed, rows)) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert np.array_equal(G, want) and np.array_equal(Y, wantY) and not changed.any()
    G[:] = np.nan
    t.grad_rows(X, G, Y, changed, rows)  # the queue is spent: no row is swept again
    assert np.isnan(G).all()


def test_a_row_queue_hands_out_each_row_once():
    t = fad.compile(lambda x: x[0] * x[1], [1.0, 2.0]).traces[0]
    X = np.arange(20.0).reshape(10, 2)
    for lo, hi, block in [(0, 10, 1), (2, 9, 4), (0, 10, 10), (0, 10, 64), (5, 5, 2)]:
        G, Y = np.zeros_like(X), np.zeros(10)
        t.grad_rows(X, G, Y, np.zeros(10, np.int8), RowQueue(lo, hi, block))
        inside = (np.arange(10) >= lo) & (np.arange(10) < hi)
        assert np.array_equal(Y[inside], X[inside, 0] * X[inside, 1]) and not Y[~inside].any()
        assert np.array_equal(G[inside], X[inside, ::-1]) and not G[~inside].any()
    for lo, hi, block in [(-1, 2, 1), (3, 2, 1), (0, 2, 0)]:
        with pytest.raises(ValueError, match="need 0 <= lo <= hi, block >= 1"):
            RowQueue(lo, hi, block)


def test_grad_rows_marks_rows_on_other_branches():
    t = fad.compile(lambda x: fad.abs(x[0]) * x[1], [1.0, 2.0]).traces[0]
    X = np.array([[1.0, 2.0], [-1.0, 2.0], [3.0, -1.0]])
    G = np.empty_like(X)
    Y = np.empty(3)
    changed = np.zeros(3, np.int8)
    t.grad_rows(X, G, Y, changed, RowQueue(0, 3))
    assert changed.tolist() == [0, 1, 0]
    assert G[0].tolist() == [2.0, 1.0] and G[2].tolist() == [-1.0, 3.0]
    assert Y[[0, 2]].tolist() == [2.0, -3.0]
    changed[:] = 0
    t.grad_rows(X, G, Y, changed, RowQueue(1, 1))  # an empty range does nothing
    assert not changed.any()


def test_grad_rows_checks_shapes_and_ranges():
    t = fad.compile(lambda x: x[0] * x[1], [1.0, 2.0]).traces[0]
    X = np.ones((4, 2))
    G = np.empty((4, 2))
    Y = np.empty(4)
    ch = np.zeros(4, np.int8)
    rows = RowQueue(0, 4)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        t.grad_rows(np.ones((4, 3)), np.empty((4, 3)), Y, ch, rows)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        t.grad_rows(X, np.empty((3, 2)), Y, ch, rows)
    with pytest.raises(ValueError, match="B rows"):
        t.grad_rows(X, G, np.empty(3), ch, rows)
    with pytest.raises(ValueError, match="B rows"):
        t.grad_rows(X, G, Y, np.zeros(5, np.int8), rows)
    with pytest.raises(ValueError, match="outside the batch"):
        t.grad_rows(X, G, Y, ch, RowQueue(0, 5))
    with pytest.raises(ValueError, match="one scalar output"):
        hand_trace().grad_rows(X, G, Y, ch, rows)
    for k in range(5):  # None for any argument: a TypeError, not a crash
        args = [X, G, Y, ch, rows]
        args[k] = None
        with pytest.raises(TypeError):
            t.grad_rows(*args)


def test_input_lengths_are_checked():
    t = hand_trace()
    for method, extra in [("values", ()), ("value_and_grad", ()), ("jacobian_rev", ()),
                          ("vjp", ([1.0, 1.0],)), ("jvp", (np.eye(2),)), ("hvp", (np.eye(2),))]:
        with pytest.raises(ValueError, match="expected 2 input numbers, got 3"):
            getattr(t, method)(np.ones(3), *extra)
        with pytest.raises(ValueError, match=r"expected a vector of 2 input numbers, got shape \(1, 2\)"):
            getattr(t, method)(np.ones((1, 2)), *extra)
    with pytest.raises(ValueError, match="cotangent has 3 numbers, the output 2"):
        t.vjp(np.ones(2), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        t.jvp(np.ones(2), np.ones(3))  # cannot be (2, m)


def test_out_k_out_of_range_is_an_error_not_a_crash():
    """Trace.value_and_grad / hvp index out_rows[out_k] without a bounds
    check: an out_k past the outputs must raise, not read (or segfault)."""
    code = (
        "import numpy as np, fastad as fad\n"
        "t = fad.compile(lambda x: x[0] * x[1], [1.0, 2.0]).traces[0]\n"
        "for call in (lambda: t.value_and_grad(np.ones(2), 1000000),\n"
        "             lambda: t.value_and_grad(np.ones(2), -1000000),\n"
        "             lambda: t.hvp(np.ones(2), np.eye(2), 1000000)):\n"
        "    try:\n"
        "        call()\n"
        "    except (ValueError, IndexError) as e:\n"
        "        print('raised', type(e).__name__)\n"
        "    else:\n"
        "        print('no error')\n"
    )
    # Run beside the fastad these tests imported (an installed one under CI), not the source tree.
    package_parent = os.path.dirname(os.path.dirname(fad.__file__))
    env = dict(os.environ, PYTHONPATH=package_parent)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tempfile.gettempdir(), env=env)
    assert proc.returncode == 0, f"crashed with return code {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.count("raised") == 3, proc.stdout


# ---------------------------------------------------------------------------
# corrupted traces: a clear ValueError, never a crash
# ---------------------------------------------------------------------------

def corrupt(**changes):
    args = dict(zip(["op", "a", "b", "c", "val0", "in_rows", "out_rows", "out_const"],
                    [np.array(v).copy() for v in trace_args(hand_trace())]))
    for name, fix in changes.items():
        args[name] = fix(args[name]) if callable(fix) else fix
    return args


def _set(i, v):
    def fix(arr):
        arr = arr.copy()
        arr[i] = v
        return arr
    return fix


CORRUPTIONS = {
    "a_self_reference": (dict(a=_set(4, 4)), "not earlier"),
    "a_forward": (dict(a=_set(2, 7)), "not earlier"),
    "a_out_of_range": (dict(a=_set(8, 1000)), "not earlier"),
    "a_below_minus_one": (dict(a=_set(3, -5)), "not earlier"),
    "b_forward": (dict(b=_set(2, 2)), "not earlier"),
    "b_out_of_range": (dict(b=_set(4, 99999)), "not earlier"),
    "input_with_argument": (dict(a=_set(1, 0)), "input row with arguments"),
    "row_without_argument": (dict(a=_set(3, -1)), "no argument that is not an input"),
    "bad_op_code": (dict(op=_set(3, len(fops.OPS) + 10)), "op code"),
    "op_code_255": (dict(op=_set(3, 255)), "op code"),
    "short_a": (dict(a=lambda a: a[:-1]), "trace array a has shape"),
    "long_b": (dict(b=lambda b: np.append(b, -1)), "trace array b has shape"),
    "short_c": (dict(c=lambda c: c[:3]), "trace array c has shape"),
    "short_val0": (dict(val0=lambda v: v[:-2]), "trace array val0 has shape"),
    "in_rows_out_of_range": (dict(in_rows=_set(1, 9)), "in_rows"),
    "in_rows_negative": (dict(in_rows=_set(0, -7)), "in_rows"),
    "out_rows_out_of_range": (dict(out_rows=_set(0, 50)), "out_rows"),
    "out_rows_negative": (dict(out_rows=_set(1, -2)), "out_rows"),
    "out_const_length": (dict(out_const=np.zeros(3)), "out_const"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_trace_raises_value_error(name):
    changes, message = CORRUPTIONS[name]
    args = corrupt(**changes)
    with pytest.raises(ValueError, match=message):
        Trace(*args.values())
    # the same arguments arriving in a pickle
    with pytest.raises(ValueError, match=message):
        pickle.loads(pickle.dumps(_Pickled(list(args.values()) + [fops.fingerprint()])))


class _Pickled:
    """Pickles as a Trace built from these (possibly corrupted) arguments."""

    def __init__(self, args):
        self.args = tuple(args)

    def __reduce__(self):
        return (Trace, self.args)


def test_array_op_codes_are_refused():
    first_array = min((s.code for s in fops.OPS if s.kind == "array"), default=None)
    if first_array is None:  # no array ops in this op table: any code past it is unknown
        first_array = len(fops.OPS)
    with pytest.raises(ValueError):
        Trace(*corrupt(op=_set(3, first_array)).values())


def test_wrong_fingerprint_raises():
    args = trace_args(hand_trace())
    with pytest.raises(ValueError, match=r"fingerprint bad.*compile the function again"):
        Trace(*args, fingerprint="bad")
    assert Trace(*args, fingerprint=fops.fingerprint()).n == 9
    assert Trace(*args).n == 9  # no fingerprint: made in this process
    # a whole compiled function pickled by another fastad: its bytes carry another fingerprint
    cf = fad.compile(lambda x: x[0] * fad.sin(x[1]), [1.0, 2.0])
    blob = pickle.dumps(cf)
    fp = fops.fingerprint().encode()
    assert fp in blob
    with pytest.raises(ValueError, match="another version of fastad's op table"):
        pickle.loads(blob.replace(fp, b"0" * len(fp)))
    assert pickle.loads(blob).grad([1.0, 2.0]) == cf.grad([1.0, 2.0])


def test_corrupted_compiled_function_pickle():
    cf = fad.compile(lambda x: x * x + 1.0, 2.0)
    state = cf.__getstate__()
    t = state["traces"][0]
    bad_a = t.a.copy()
    bad_a[-1] = len(bad_a) + 3
    state["traces"] = [_Pickled([t.op, bad_a, t.b, t.c, t.val0, t.in_rows, t.out_rows,
                                 t.out_const, fops.fingerprint()])]

    class Evil:
        def __reduce__(self):
            return (_restore, (state,))
    with pytest.raises(ValueError, match="not earlier"):
        pickle.loads(pickle.dumps(Evil()))


def _restore(state):
    from fastad.compiled import CompiledFunction
    cf = CompiledFunction.__new__(CompiledFunction)
    cf.__dict__.update(state)
    return cf


def test_live_rows_marks_what_the_roots_depend_on():
    from fastad._replay import live_rows
    op = np.array([0, 0, 3, 16, 1], np.uint8)        # x, y, x*y, sin(x), x*y + y
    a = np.array([-1, -1, 0, 0, 2], np.int32)
    b = np.array([-1, -1, 1, -1, 1], np.int32)
    assert live_rows(op, a, b, [4]).tolist() == [True, True, True, False, True]
    assert live_rows(op, a, b, [3]).tolist() == [True, False, False, True, False]
    assert live_rows(op, a, b, []).tolist() == [False] * 5
    # more arguments than a and b (a concatenate's, in aux): earlier rows only
    assert live_rows(op, a, b, [4], {4: [3, -1, 7]}).tolist() == [True] * 5
    with pytest.raises(IndexError, match="root row 5 is outside the 5 rows"):
        live_rows(op, a, b, [5])
    with pytest.raises(ValueError, match="differ in length"):
        live_rows(op, a[:4], b, [0])


def test_a_trace_reuses_its_buffers_across_methods_exactly():
    """A trace lends its scratch buffers from one call to the next, and each
    method leaves them in its own state (adjoints, tangents). Any order of
    calls on one trace must give what a fresh trace gives, bit for bit (a
    constant leaf from outside the function included: its INPUT row gets an
    adjoint too)."""
    k = fad.Var(1.5)

    def f(x):
        return [x[0] * x[1] * k + fad.sin(x[2]), fad.exp(x[1] * 0.5) * k - x[0] / (2.0 + x[2] * x[2]),
                fad.tanh(x[1] * x[2]) - x[0]]
    t = fad.compile(f, [0.3, -0.7, 1.1]).traces[0]
    x = np.array([0.4, -0.2, 0.9])
    V = np.random.default_rng(2).normal(size=(3, 2))
    calls = [("value_and_grad", 2), ("jvp", V), ("value_and_grad", 0), ("jacobian_rev",),
             ("vjp", np.array([1.0, -2.0, 0.5])), ("value_and_grad", 1), ("hvp", V, 0),
             ("value_and_grad", 2), ("value_and_grad", 2)]
    for name, *more in calls:
        fresh = pickle.loads(pickle.dumps(t))
        got, want = getattr(t, name)(x, *more), getattr(fresh, name)(x, *more)
        for g, w in zip(got, want):
            assert np.array_equal(g, w), name


def test_a_big_endian_input_vector_is_read_as_its_numbers():
    # '>f8' is float64 to NumPy: the sweeps read its bytes as doubles (1e-320s)
    t = hand_trace()
    x = np.array([0.7, 1.3], dtype=">f8")
    native = np.array([0.7, 1.3])
    for method in ("values", "value_and_grad"):
        got, want = getattr(t, method)(x), getattr(t, method)(native)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(t.values(x)[0], hand_f(0.7, 1.3))

# -- RecycledLists: the gradient lists of a compiled function of one list --

def _list_grads():
    cf = fad.compile(lambda v: v[0] * v[1] + v[2] ** 3, [1.0, 2.0, 3.0])
    return cf, (lambda x: [x[1], x[0], 3 * x[2] ** 2])


def test_a_list_let_go_is_written_again_and_a_list_still_held_is_not():
    cf, grad = _list_grads()
    first = cf.grad([1.0, 2.0, 3.0])
    second = cf.grad([4.0, 5.0, 6.0])
    third = cf.grad([7.0, 8.0, 9.0])  # both earlier lists still held: a new one
    assert (first, second, third) == (grad([1.0, 2.0, 3.0]), grad([4.0, 5.0, 6.0]), grad([7.0, 8.0, 9.0]))
    assert len({id(first), id(second), id(third)}) == 3
    kept_id = id(second)
    del second
    again = cf.grad([2.0, 2.0, 2.0])  # the `g = cf.grad(x)` loop: the list of two calls ago is free
    assert id(again) == kept_id and again == grad([2.0, 2.0, 2.0])
    assert first == grad([1.0, 2.0, 3.0]) and third == grad([7.0, 8.0, 9.0])


def test_recycling_leaves_alone_what_the_caller_kept_or_changed():
    cf, grad = _list_grads()
    g = cf.grad([1.0, 2.0, 3.0])
    kept = g[0]          # a float taken out of the list
    g[1] = "not a float"  # an item replaced
    del g
    cf.grad([0.0, 0.0, 0.0])
    h = cf.grad([5.0, 6.0, 7.0])  # (one of the two lists above, written again)
    assert kept == 2.0 and type(kept) is float
    assert h == grad([5.0, 6.0, 7.0]) and all(type(v) is float for v in h)
    h.append(1.0)  # another length: made anew, not written
    del h
    for x in ([1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [3.0, 2.0, 1.0]):
        assert cf.grad(x) == grad(x)
    value, g = cf.value_and_grad([1.0, 2.0, 3.0])
    assert (value, g) == (29.0, grad([1.0, 2.0, 3.0]))


def test_a_compiled_function_with_recycled_lists_pickles():
    cf, grad = _list_grads()
    cf.grad([1.0, 2.0, 3.0])
    back = pickle.loads(pickle.dumps(cf))
    assert back.grad([2.0, 1.0, 1.0]) == grad([2.0, 1.0, 1.0])
    assert back.grad([2.0, 1.0, 1.0]) == grad([2.0, 1.0, 1.0])


def test_a_returned_list_holding_objects_that_run_code_as_they_go_is_not_written():
    # what a caller puts in a list is let go of before any list is written:
    # a __del__ that emptied the recycled lists (reached through gc) made
    # the writing loop read past the end (a segfault)
    import gc
    cf, grad = _list_grads()
    ran = []

    class EmptiesTheLists:
        def __del__(self):
            ran.append(1)
            for held in gc.get_referents(cf._lists["grad"])[0]:
                if held is not None:
                    held.clear()

    g = cf.grad([1.0, 2.0, 3.0])
    g[0] = EmptiesTheLists()
    del g
    for x in ([1.0, 2.0, 3.0], [2.0, 1.0, 0.5], [0.5, 0.5, 0.5]):
        assert cf.grad(x) == grad(x)
    assert ran == [1]


def test_long_gradient_lists_are_not_held_between_calls():
    import gc
    n = (1 << 17) + 1
    cf = fad.compile(lambda v: v[0] * v[n - 1], [1.0] * n)
    g = cf.grad([2.0] * n)
    assert g[0] == 2.0 and g[n - 1] == 2.0 and g[1] == 0.0
    del g
    assert gc.get_referents(cf._lists["grad"])[0] == [None, None]


def test_recycled_lists_under_threads_hand_each_caller_its_own_numbers():
    # the GIL is held while a list is written: no thread sees another's numbers
    cf, grad = _list_grads()
    bad = []

    def work(seed):
        rng = np.random.default_rng(seed)
        kept = []
        for k in range(2000):
            x = rng.uniform(-2.0, 2.0, 3).tolist()
            g = cf.grad(x)
            if k % 7 == 0:
                kept.append((x, g))
            if g != grad(x):
                bad.append(x)
        bad.extend(x for x, g in kept if g != grad(x))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


# -- Trace.grad_list: cf.grad and cf.value_and_grad of one flat list, in C --

def test_list_path_gives_the_general_paths_numbers():
    def f(x):
        return x[0] * x[1] + fad.sin(x[2]) + 0.0 * x[3]  # x[4] unused
    x = [0.5, -1.5, 2.0, 3.0, 7.0]
    cf = fad.compile(f, x)
    trace = cf.traces[0]
    value, g = trace.grad_list(x, cf._recycler("grad"))
    y, g0, changed = trace.value_and_grad(np.array(x))
    assert changed < 0 and value == y[0] and g == g0.tolist()
    assert g[4] == 0.0 and type(g) is list and all(type(v) is float for v in g)
    assert cf.value_and_grad(x) == fad.value_and_grad(f)(x)
    assert cf.grad(x) == fad.grad(f)(x)


def test_list_path_leaves_other_items_and_other_branches_to_the_general_path():
    cf = fad.compile(lambda x: fad.abs(x[0]) * x[1], [1.0, 2.0], on_branch_change="raise")
    trace, lists = cf.traces[0], cf._recycler("grad")
    assert trace.grad_list([1, 2.0], lists) is None  # an int: pack_numbers takes it
    assert cf.grad([1, 2.0]) == [2.0, 1.0]
    assert trace.grad_list([np.float64(1.0), 2.0], lists) is not None  # a float subclass is a float
    assert trace.grad_list([-1.0, 2.0], lists) is None  # another branch
    with pytest.raises(fad.BranchChanged):
        cf.grad([-1.0, 2.0])
    assert trace.grad_list([1.0, 2.0, 3.0], lists) is None  # another length: the general error
    with pytest.raises((TypeError, ValueError)):
        cf.grad([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        cf.grad([1.0, "2"])


def test_list_path_of_a_constant_output():
    cf = fad.compile(lambda x: 3.0 + 0.0 * 0.0, [1.0, 2.0])
    assert cf.traces[0].grad_list([1.0, 2.0], cf._recycler("grad")) == (3.0, [0.0, 0.0])
    assert cf.value_and_grad([5.0, 6.0]) == (3.0, [0.0, 0.0])


def test_a_flat_list_direction_is_read_as_before():
    # pack_numbers reads floats and ints in C; anything else as NumPy reads it
    cf = fad.compile(lambda x: x[0] * x[0] * x[1], [1.0, 2.0])
    want = cf.hvp([1.0, 2.0], [1.0, 0.0])
    assert want == [4.0, 2.0]
    assert cf.hvp([1.0, 2.0], [1, 0]) == want
    assert cf.hvp([1.0, 2.0], [True, False]) == want
    assert cf.hvp([1.0, 2.0], [np.float32(1.0), 0.0]) == want
    for bad in ([1.0, "a"], [1.0, "0"], [None, 1.0], [1.0, b"3"]):  # (NumPy would read "0" and None)
        with pytest.raises(TypeError):
            cf.hvp([1.0, 2.0], bad)
        with pytest.raises(TypeError):
            cf.jvp([1.0, 2.0], bad)


def test_debug_nans_holds_on_the_list_path():
    cf = fad.compile(lambda x: fad.sqrt(x[0]) + x[1], [1.0, 2.0])
    assert math.isnan(cf.grad([-1.0, 2.0])[0])
    fad.debug_nans(True)
    try:
        with pytest.raises(fad.NanError):
            cf.grad([-1.0, 2.0])
        with pytest.raises(fad.NanError):
            cf.value_and_grad([-1.0, 2.0])
    finally:
        fad.debug_nans(False)
    assert cf.grad([4.0, 2.0]) == [0.25, 1.0]

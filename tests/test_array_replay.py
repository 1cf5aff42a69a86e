"""fastad/_array_replay.pxi: fad.compile of functions with array ops.

Their ndarray arguments arrive as Arrays, and a replay rebuilds the tape
with the new inputs: array rows by the front end's NumPy code, scalar rows
by the recording's rules in C. So a replay must give exactly what fad.grad
gives (compared with ==), on every branch; kinks and array comparisons
retrace when an element changes piece; forward mode and second order go
through a scalarized twin.
"""
import concurrent.futures
import multiprocessing
import pickle

import numpy as np
import pytest

import fastad as fad
from fastad import ops as fops
from fastad._core import ArrayTrace
from fastad._replay import Trace
from fastad.compiled import CompiledFunction

RNG = np.random.default_rng(11)
A = RNG.normal(size=(4, 3))
X = RNG.normal(size=(5, 4))


def mlp(p):
    h = np.tanh(X @ p["W"] + p["b"])
    return np.mean(fad.log_softmax(h, axis=1)[:, 0]) + 0.1 * np.sum(p["W"] ** 2)


def shapes(x):
    y = fad.concatenate([x.reshape(2, 3), np.ones((1, 3))], axis=0)
    z = fad.stack([y.T @ y, np.eye(3)], axis=0)
    return np.sum(z[0] * np.transpose(z, (0, 2, 1))[1]) + np.max(y) * np.min(y) + np.prod(x[:3]) + x[4] * y[2, 1]


def reductions(x):
    return fad.logsumexp(x * 2.0) + np.sum(np.sin(x), axis=0).sum() + x[1:].mean() ** 2


def mixed(x, s):
    """A scalar argument, element reads and scalar ops beside array rows."""
    t = s * x[0] + fad.exp(x[1]) / (1.0 + s * s)
    return np.sum(np.einsum("i,ij->j", x[:4], A) * t) + np.sqrt(np.sum(x * x))


def piecewise(x):
    """Kinks on arrays and a comparison that steers Python."""
    y = fad.relu(x) + np.abs(x - 0.5) + np.maximum(x, 0.25) + fad.clip(x, -0.5, 0.5)
    if (x > 0).sum() >= 3:
        return np.sum(y * y)
    return np.sum(fad.where(x < 0.0, np.sin(x), x * 3.0)) + np.sum(y)


CASES = {
    "mlp": (mlp, lambda r: ({"W": r.normal(size=(4, 3)) * 0.5, "b": r.normal(size=3)},)),
    "shapes": (shapes, lambda r: (r.normal(size=6),)),
    "reductions": (reductions, lambda r: (r.normal(size=(3, 2)),)),
    "mixed": (mixed, lambda r: (r.normal(size=5) * 0.5 + 1.0, float(r.normal()))),
    "piecewise": (piecewise, lambda r: (r.uniform(-1, 1, 5),)),
}


def same(got, want):
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            same(got[k], want[k])
    elif isinstance(want, tuple):
        assert type(got) is tuple and len(got) == len(want)
        for g, w in zip(got, want):
            same(g, w)
    else:
        assert type(got) is type(want), (type(got), type(want))
        assert np.array_equal(got, want), (got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_replay_equals_fad_grad_at_new_points(name):
    f, draw = CASES[name]
    r = np.random.default_rng(5)
    args = draw(r)
    nums = tuple(range(len(args)))
    cf = fad.compile(f, *args, argnums=nums)
    assert isinstance(cf.traces[0], ArrayTrace)
    for _ in range(12):
        args = draw(r)
        value, grads = fad.value_and_grad(f, argnums=nums)(*args)
        assert cf(*args) == value
        got_value, got = cf.value_and_grad(*args)
        assert got_value == value
        same(got, grads)
        same(cf.grad(*args), grads)


def test_kinks_and_comparisons_retrace_or_raise():
    x0 = np.array([0.3, 0.6, 0.9, -0.2, 0.1])
    cf = fad.compile(piecewise, x0, on_branch_change="raise")
    assert cf.grad(x0 + 0.01).tolist() == fad.grad(piecewise)(x0 + 0.01).tolist()
    with pytest.raises(fad.BranchChanged, match="'relu, elementwise'"):  # element 3 turns on
        cf.grad(np.array([0.3, 0.6, 0.9, 0.2, 0.1]))
    cf = fad.compile(lambda x: np.sum(x * x) if (x > 0).all() else np.sum(-x), np.ones(3),
                     on_branch_change="raise")
    with pytest.raises(fad.BranchChanged, match="compare"):
        cf.grad(np.array([1.0, -1.0, 1.0]))
    cf = fad.compile(lambda x: np.sum(x * x) if (x > 0).all() else np.sum(-x), np.ones(3))
    assert cf.grad(np.array([1.0, -1.0, 1.0])).tolist() == [-1.0, -1.0, -1.0]
    assert cf.grad(np.array([1.0, 2.0, 3.0])).tolist() == [2.0, 4.0, 6.0]
    assert len(cf.traces) == 2


def test_a_replay_skips_the_rows_no_output_or_guard_reads(monkeypatch):
    """Dead code (an unused matmul, a relu of it, an element read of it) is
    not replayed: NumPy runs once per live array row, a dead kink is not
    checked (its flip retraces nothing), and the gradient is fad.grad's."""
    import fastad.array as farray
    W = np.random.default_rng(2).normal(size=(4, 4))
    calls = []
    make_kernel = farray.kernel

    def counted(op, *rest):  # each kernel the trace makes says when it runs
        run = make_kernel(op, *rest)
        return lambda *args: calls.append(fops.OPS[op].name) or run(*args)

    monkeypatch.setattr(farray, "kernel", counted)

    def f(x):
        unused = fad.relu(W @ x)  # dead: a matmul and a kink
        _ = unused[0] * x[1]      # dead: an element read and a scalar row
        if (x[:2] > 0).all():     # a guard: live
            return np.sum(np.tanh(x) * x)
        return np.sum(x)

    x0 = np.array([0.5, 0.2, -0.3, 0.8])
    cf = fad.compile(f, x0, on_branch_change="raise")
    t = cf.traces[0]
    names = [fops.OPS[op].name for op in t.op]
    assert not t.live[names.index("matmul")] and not t.live[names.index("elem")]
    assert t.live[names.index("compare")]
    calls.clear()
    x1 = np.array([0.4, 0.3, 0.9, -0.7])  # relu(W @ x) flips pieces: dead, so no BranchChanged
    assert cf.grad(x1).tolist() == fad.grad(f)(x1).tolist()
    assert "matmul" not in calls and len(calls) == sum(
        t.live[i] and fops.OPS[op].kind == "array" and fops.OPS[op].name not in ("array_input", "elem")
        for i, op in enumerate(t.op))
    with pytest.raises(fad.BranchChanged, match="compare"):  # the live guard still holds
        cf.grad(np.array([-0.4, 0.3, 0.9, -0.7]))


def test_comparison_returns_numpy_bools_and_records_a_guard_row():
    x = fad.Array(np.array([1.0, -2.0]))
    with fad.Tape() as t:
        c = x > 0.0
        d = 0.5 <= x
    assert c.dtype == bool and c.tolist() == [True, False] and d.tolist() == [True, False]
    assert [fops.OPS[op].name for op in t.rows()["op"]] == ["array_input", "compare", "compare"]
    y = x * 2.0
    assert (y == np.array([2.0, -4.0])).all() and not (y != y).any()


def test_array_output_jacobian_and_vjp():
    def f(x):
        return np.tanh(A.T @ x) * x[:3]
    x = RNG.normal(size=4)
    cf = fad.compile(f, x)
    assert isinstance(cf.traces[0], ArrayTrace)
    J = cf.jacobian(x)
    assert J.shape == (3, 4)
    same(J, fad.jacobian(f, mode="rev")(x))
    np.testing.assert_allclose(cf.jacobian(x, mode="fwd"), J, rtol=1e-13, atol=1e-15)
    out, pullback = fad.vjp(f, x)
    w = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(pullback(w)[0], w @ J, rtol=1e-13, atol=1e-15)
    same(cf(x), f(x))


def test_second_order_through_the_scalarized_twin():
    Q = A @ A.T + np.eye(4)

    def f(x):  # NumPy calls: the twin runs them element by element
        return 0.5 * x @ Q @ x + np.log(np.sum(np.exp(x)))
    x = RNG.normal(size=4)
    cf = fad.compile(f, x)
    assert isinstance(cf.traces[0], ArrayTrace)
    p = np.exp(x) / np.sum(np.exp(x))
    H = Q + np.diag(p) - np.outer(p, p)  # analytic
    np.testing.assert_allclose(cf.hessian(x), H, rtol=1e-12)
    v = RNG.normal(size=4)
    np.testing.assert_allclose(cf.hvp(x, v), H @ v, rtol=1e-12)
    assert isinstance(cf._twin.traces[0], Trace)
    np.testing.assert_allclose(fad.hvp(f)(x, v), H @ v, rtol=1e-12)


def _lse_quadratic(x):
    return fad.logsumexp(x) + 0.25 * (x @ x)


@pytest.mark.parametrize("f", [
    _lse_quadratic,
    lambda x: fad.logsumexp(x.reshape(2, 2) * np.array([[1.0], [2.0]]), axis=1).sum(),
    lambda x: (fad.softmax(x) * np.arange(4.0)).sum(),
    lambda x: fad.log_softmax(x.reshape(2, 2), axis=0)[1, 0],
    lambda x: (fad.stack([x[0] * x[1], x[2], 2.0]) ** 2).sum(),
    lambda x: (fad.concatenate([x, x[:2] * x[3]]) ** 2).sum() + fad.concatenate([x, x], axis=None)[5],
], ids=["logsumexp", "logsumexp-axis", "softmax", "log_softmax", "stack", "concatenate"])
def test_array_builders_in_forward_mode_and_second_order(f):
    """fad.logsumexp, softmax, log_softmax, stack and concatenate build
    object arrays of scalar rows in the scalarized twin (they made Array
    rows, which it refused): forward mode gives reverse mode's gradient, the
    Hessian is symmetric and matches central differences of the gradient."""
    x = np.array([0.3, -1.2, 2.0, 0.7])
    g = fad.grad(f)(x)
    np.testing.assert_allclose(fad.jacobian(f, mode="fwd")(x), g, rtol=1e-13, atol=1e-15)
    H = fad.hessian(f)(x)
    np.testing.assert_allclose(H, H.T, rtol=1e-13, atol=1e-15)
    eps = 1e-5
    fd = np.array([(fad.grad(f)(x + eps * e) - fad.grad(f)(x - eps * e)) / (2 * eps) for e in np.eye(4)])
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-7)
    v = np.array([1.0, 0.5, -1.0, 2.0])
    np.testing.assert_allclose(fad.hvp(f)(x, v), H @ v, rtol=1e-12, atol=1e-14)
    if f is _lse_quadratic:  # the textbook Hessian: diag(p) - p p^T (+ the quadratic's 0.5 I)
        p = np.exp(x) / np.exp(x).sum()
        np.testing.assert_allclose(H, np.diag(p) - np.outer(p, p) + 0.5 * np.eye(4), rtol=1e-13, atol=1e-15)


def test_grad_batch_runs_rows_through_grad():
    cf = fad.compile(mlp_flat, np.ones(12))
    assert isinstance(cf.traces[0], ArrayTrace)
    Xs = RNG.normal(size=(6, 12))
    G = cf.grad_batch(Xs, threads=2)
    for row, g in zip(Xs, G):
        assert np.array_equal(g, fad.grad(mlp_flat)(row))


def mlp_flat(w):
    return mlp({"W": w.reshape(4, 3), "b": np.zeros(3)})


def test_element_loops_on_arrays_stay_scalar_traces():
    cf = fad.compile(lambda x: x[0] * x[1] + fad.sin(x[2]), np.ones(3))
    assert isinstance(cf.traces[0], Trace)  # forward mode, second order, threads: all in C
    cf = fad.compile(lambda x: fad.stack([x[0], x[1] * x[0]]).sum(), [2.0, 3.0])
    assert isinstance(cf.traces[0], ArrayTrace)  # arrays built from numbers
    assert cf.grad([2.0, 3.0]) == [4.0, 2.0]
    assert cf.hvp([2.0, 3.0], [1.0, 0.0]) == [0.0, 1.0]  # the twin stacks object arrays
    for f in (lambda x: (fad.Array(np.arange(2.0)) * x[0]).sum(),
              lambda x: fad.logsumexp(fad.Array(np.arange(2.0)) * x[0])):
        cf = fad.compile(f, [2.0])
        with pytest.raises(TypeError, match="builds fastad Arrays"):  # an Array times a Var: no twin
            cf.hvp([2.0], [1.0])


W_CLOSED = fad.Array(np.ones(2))


@pytest.mark.parametrize("f", [
    lambda x: (W_CLOSED * np.array([x[0], x[0]])).sum() * x[0],  # an object array meeting an Array:
    lambda x: fad.stack([W_CLOSED, np.array([x[0], x[0]])]).sum() * x[0],  # once a RecursionError,
], ids=["times", "stack"])                                                  # then "builds fastad Arrays"
def test_a_closed_over_array_meeting_an_object_array_of_vars_has_a_twin(f):
    assert fad.compile(f, [2.0]).hvp([2.0], [1.0]) == [4.0]


def test_a_model_of_numbers_over_data_arrays_has_its_exact_hessian():
    # p[0] * xs is one array row when recorded; forward mode and second order
    # run on the twin, where it is one scalar row per element (they raised
    # "builds fastad Arrays" before)
    xs = np.linspace(0.0, 1.0, 5)
    ys = 2.0 * xs + 1.0

    def f(p):
        return ((p[0] * xs + p[1] - ys) ** 2).sum()

    cf = fad.compile(f, [1.0, 0.0])
    assert isinstance(cf.traces[0], ArrayTrace)
    H = 2.0 * np.array([[np.sum(xs * xs), np.sum(xs)], [np.sum(xs), 5.0]])
    np.testing.assert_allclose(cf.hessian([1.0, 0.0]), H, rtol=1e-14)
    np.testing.assert_allclose(fad.hessian(f)([0.3, -2.0]), H, rtol=1e-14)
    p, t = [0.5, 0.25], [1.0, -2.0]
    assert cf.jvp((p,), t)[1] == pytest.approx(np.dot(cf.grad(p), t), rel=1e-14)


A_DATA = np.array([0.5, 1.5, 2.5])


@pytest.mark.parametrize("f", [
    lambda p: (np.exp(p[0] * A_DATA) * p[1]).sum(),
    lambda p: (np.maximum(p[0], A_DATA) * p[1] ** 2).sum(),
    lambda p: (fad.maximum(A_DATA, p[0]) * p[1] ** 2).sum(),
    lambda p: (fad.where(A_DATA > 1.0, p[0] * p[1], p[1]) ** 2).sum(),
    lambda p: fad.power(A_DATA, p[0] * p[1]).sum(),
    lambda p: fad.arctan2(p[0], A_DATA * p[1]).sum(),
], ids=["np.exp", "np.maximum", "fad.maximum", "fad.where", "fad.power", "fad.arctan2"])
def test_numbers_with_data_arrays_have_hessians(f):
    p = np.array([0.9, 1.3])
    cf = fad.compile(f, list(p))
    H = cf.hessian(list(p))
    h = 1e-6
    for j in range(2):
        e = np.eye(2)[j] * h
        fd = (np.array(fad.grad(f)(list(p + e))) - np.array(fad.grad(f)(list(p - e)))) / (2 * h)
        np.testing.assert_allclose(H[:, j], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H, H.T, rtol=1e-13)
    assert fad.jacobian(f, mode="fwd")(list(p)) == pytest.approx(np.array(cf.grad(list(p))), rel=1e-13)


def _in_place(x):
    y = x * 2.0
    y += 1.0  # NumPy passes out= to the ufunc
    return np.sum(y ** 2)


def _hessian_by_differences(f, x, h=1e-6):
    """Central differences of fad.grad, column by column."""
    return np.array([(fad.grad(f)(x + h * e) - fad.grad(f)(x - h * e)) / (2 * h) for e in np.eye(len(x))]).T


@pytest.mark.parametrize("f", [
    _in_place,
    lambda x: np.sum(x.reshape(2, 2).mean(axis=1) ** 2),  # np.mean divides with out=
    lambda x: np.sum(x[x > 0] ** 3),  # a mask from a comparison indexes
], ids=["in-place", "mean-axis", "mask"])
def test_forward_mode_and_second_order_of_numpy_idioms(f):
    # Each raised on the scalarized twin: a RecursionError, or an IndexError
    x = np.array([0.7, -1.2, 1.9, 0.4])
    fd = _hessian_by_differences(f, x)
    np.testing.assert_allclose(fad.hessian(f)(x), fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fad.compile(f, x).hessian(x), fd, rtol=1e-6, atol=1e-7)
    v = np.array([1.0, 2.0, -1.0, 0.5])
    np.testing.assert_allclose(fad.jvp(f, (x,), (v,))[1], fad.grad(f)(x) @ v, rtol=1e-13)


M = np.array([[1.0, -0.5, 0.0, 2.0], [0.3, 1.0, -1.0, 0.0], [0.0, 0.7, 1.5, -0.2]])

# NumPy functions on the twin's Scalarized arrays made plain object arrays,
# where the next ufunc ran NumPy's object loop: elem.tanh(), a float's
# tanh (a constant in the result), no Var.hypot.
NUMPY_FUNCTIONS = {
    "concatenate": lambda x: np.sum(np.tanh(np.concatenate([x, np.ones(1)]))),
    "stack": lambda x: np.sum(np.exp(np.stack([x, np.zeros(4)]))),
    "stack-sum-axis": lambda x: np.sum(np.hypot(np.sum(np.stack([x, x * x]), axis=0), 1.0)),
    "dot": lambda x: np.sum(np.hypot(np.dot(M, x), 1.0)),
    "einsum": lambda x: np.sum(np.hypot(np.einsum("ij,j->i", M, x), 1.0)),
    "outer": lambda x: np.sum(np.hypot(np.outer(x, x[:2]), 0.5)),
    "where": lambda x: np.sum(np.hypot(np.where(x > 0.5, x, 0.25), 1.0)),
    "clip": lambda x: np.sum(np.tanh(np.clip(np.dot(M, x), -1.0, 1.0))),
}


@pytest.mark.parametrize("f", NUMPY_FUNCTIONS.values(), ids=NUMPY_FUNCTIONS.keys())
def test_second_order_through_numpy_functions(f):
    x = np.array([0.7, -1.2, 1.9, 0.4])
    fd = _hessian_by_differences(f, x)
    np.testing.assert_allclose(fad.hessian(f)(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f", NUMPY_FUNCTIONS.values(), ids=NUMPY_FUNCTIONS.keys())
def test_forward_mode_through_numpy_functions_gives_the_gradient(f):
    x = np.array([0.7, -1.2, 1.9, 0.4])
    np.testing.assert_allclose(fad.jacobian(f, mode="fwd")(x), fad.grad(f)(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("f", [
    lambda x: np.sum(np.hypot(fad.sigmoid(x), 1.0)),
    lambda x: np.sum(np.hypot(fad.maximum(x, 0.5), 1.0)),
    lambda x: np.sum(np.hypot(fad.power(x, 3.0), 1.0)),
], ids=["sigmoid", "maximum", "power"])
def test_second_order_through_fastad_functions_of_the_twins_arrays(f):
    # fad.sigmoid(x) ... of a Scalarized x made plain object arrays too
    x = np.array([0.7, -1.2, 1.9, 0.4])
    fd = _hessian_by_differences(f, x)
    np.testing.assert_allclose(fad.hessian(f)(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f,same", [
    (lambda x: np.sum(np.hypot(*np.broadcast_arrays(x, np.ones((2, 4))))),
     lambda x: np.sum(np.hypot(np.stack([x, x]), 1.0))),
    (lambda x: np.sum(np.hypot(np.split(np.concatenate([x, 2.0 * x]), 2)[1], 1.0)),
     lambda x: np.sum(np.hypot(2.0 * x, 1.0))),
], ids=["broadcast_arrays", "split"])
def test_second_order_through_numpy_functions_that_return_several_arrays(f, same):
    # each of the tuple's or list's object arrays is Scalarized (fad.grad has
    # no np.broadcast_arrays or np.split: compared with a function it has)
    x = np.array([0.7, -1.2, 1.9, 0.4])
    np.testing.assert_allclose(fad.hessian(f)(x), fad.hessian(same)(x), rtol=1e-14, atol=1e-15)


def test_value_is_read_on_the_scalarized_twin_too():
    # an element-only function records one Var per number; .value raised AttributeError there
    f = lambda x: x[0] * x[1] / x.value.std()
    x = np.array([0.7, -1.2, 1.9])
    c = x.std()  # a constant to the derivatives, as .value always is
    H = np.zeros((3, 3))
    H[0, 1] = H[1, 0] = 1.0 / c
    np.testing.assert_allclose(fad.hessian(f)(x), H, rtol=1e-14)
    cf = fad.compile(f, x)
    np.testing.assert_allclose(cf.hessian(x), H, rtol=1e-14)
    np.testing.assert_allclose(cf.grad(x), [x[1] / c, x[0] / c, 0.0], rtol=1e-14)


def test_compile_takes_a_0d_array():
    f = lambda a: (a * np.array([1.0, 2.0])).sum() * a
    cf = fad.compile(f, np.array(1.5))
    assert cf(np.array(2.0)) == 12.0 and cf.grad(np.array(2.0)) == 12.0
    assert cf.hessian(np.array(1.5)) == 6.0


def test_raise_holds_forward_mode_and_second_order_to_the_example_branches():
    # the scalarized twin was recorded where it was first needed, so "raise"
    # let another branch through there and then refused the example's own
    cf = fad.compile(lambda x: np.sum(np.maximum(x, 0.0) * x), np.ones(3), on_branch_change="raise")
    with pytest.raises(fad.BranchChanged):
        cf.hessian(-np.ones(3))
    np.testing.assert_array_equal(cf.hessian(np.full(3, 2.0)), 2.0 * np.eye(3))
    with pytest.raises(fad.BranchChanged):
        cf.jvp((-np.ones(3),), np.ones(3))


@pytest.mark.parametrize("f", [
    lambda a: a.max(axis=1), lambda a: np.min(a, axis=0, keepdims=True), lambda a: np.max(a) * a[0],
    lambda a: a.min(axis=(0, 1), keepdims=True),
], ids=["max-axis1", "min-axis0-keepdims", "max-all", "min-tuple-axes"])
@pytest.mark.parametrize("x", [
    np.array([[1.0, 1.0, 0.5], [2.0, 3.0, 3.0]]),  # ties
    np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]),  # all tied
    np.array([[1.0, np.nan, 0.5], [2.0, 3.0, np.nan]]),  # nans take the derivative
    np.array([[0.3, 1.7, -0.4], [2.2, 0.9, 1.1]]),  # no tie
], ids=["ties", "all-tied", "nan", "distinct"])
def test_forward_mode_splits_ties_of_max_and_min_as_reverse_mode_does(f, x):
    # the twin's object max gave the whole derivative to one of the tied elements;
    # its 1/k is 1 - (k - 1)/k there: equal up to an ulp, and the value exact
    np.testing.assert_allclose(fad.jacobian(f, mode="fwd")(x), fad.jacobian(f, mode="rev")(x),
                               rtol=1e-15, atol=0)
    np.testing.assert_array_equal(fad.jvp(f, (x,), (np.ones_like(x),))[0], f(x))


def test_a_replay_where_the_extreme_moves_records_again():
    f = lambda a: np.min(a, axis=0).sum() * a[0, 0]  # noqa: E731
    cf = fad.compile(f, np.array([[1.0, 1.0, 0.5], [2.0, 3.0, 3.0]]))
    g = lambda a: np.max(a, axis=0).sum() * a[0, 0]  # noqa: E731
    cg = fad.compile(g, np.array([[1.0, np.nan, 0.5], [1.0, 2.0, 3.0]]))  # a nan leads column 1
    for z in (np.array([[0.0, 5.0, 1.0], [4.0, 1.0, 9.0]]), np.array([[1.0, 1.0, 0.5], [2.0, 3.0, 3.0]])):
        v = np.arange(6.0).reshape(2, 3)
        assert cf.jvp((z,), v)[1] == pytest.approx(np.sum(fad.grad(f)(z) * v), rel=1e-14)
        assert cg.jvp((z,), v)[1] == pytest.approx(np.sum(fad.grad(g)(z) * v), rel=1e-14)


def test_pickle_and_process_pool():
    x = RNG.normal(size=5)
    cf = fad.compile(_module_piecewise, x)
    cf2 = pickle.loads(pickle.dumps(cf))
    assert isinstance(cf2.traces[0], ArrayTrace)
    points = [np.random.default_rng(k).uniform(-1, 1, 5) for k in range(8)]
    for p in points:
        assert np.array_equal(cf2.grad(p), cf.grad(p))
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        grads = list(pool.map(cf.grad, points))
    for p, g in zip(points, grads):
        assert np.array_equal(g, fad.grad(_module_piecewise)(p))


def _module_piecewise(x):
    return piecewise(x)


def _trace_parts(t):
    fn, args = t.__reduce__()
    assert fn is ArrayTrace and args[-1] == fops.fingerprint()
    return list(args)


def test_a_damaged_pickle_is_refused():
    cf = fad.compile(shapes, np.arange(6.0))
    parts = _trace_parts(cf.traces[0])
    ArrayTrace(*parts)  # as it was: accepted
    elem = int(np.flatnonzero(parts[0] == fops.BY_NAME["elem"].code)[0])
    bad = [p.copy() if isinstance(p, (np.ndarray, dict, list)) else p for p in parts]
    bad[3][elem] = 1e6  # an element far outside its array
    with pytest.raises(ValueError, match="outside its array"):
        ArrayTrace(*bad)
    bad = [p.copy() if isinstance(p, (np.ndarray, dict, list)) else p for p in parts]
    bad[1][elem] = elem  # an argument that is not earlier
    with pytest.raises(ValueError, match="not earlier"):
        ArrayTrace(*bad)
    with pytest.raises(ValueError, match="op table"):
        ArrayTrace(*parts[:-1], "0" * 16)
    bad = [p.copy() if isinstance(p, (np.ndarray, dict, list)) else p for p in parts]
    row = next(r for r, s in bad[5].items() if parts[0][r] == fops.BY_NAME["matmul"].code)
    bad[5][row] = (7, 7)  # a recorded shape the replay cannot make
    with pytest.raises(fad.FastADError, match="shape"):
        ArrayTrace(*bad).values(np.arange(6.0))


def test_wrong_arguments_are_named():
    cf = fad.compile(mlp, {"W": np.ones((4, 3)), "b": np.ones(3)})
    with pytest.raises(TypeError, match=r"array\(4, 3\)"):  # (a W of another shape records again)
        cf.grad({"W": np.ones((4, 3))})
    g = cf.grad({"W": np.full((4, 3), np.nan), "b": np.ones(3)})
    assert np.isnan(g["W"]).all()


# ---------------------------------------------------------------------------
# random array programs: a replay equals fad.grad, bit for bit, everywhere
# ---------------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

M4 = np.random.default_rng(7).normal(size=(4, 4)) * 0.5
C31 = np.random.default_rng(8).normal(size=(3, 1))
ARRAY_STEPS = ["sin", "tanh", "gauss", "relu", "abs", "add", "mul", "row_sub", "matmul", "flip",
               "halves", "where", "elem", "max_center", "reshape",
               # columns and rows against (3, 4), constants on either side, kernels of every kind
               "log_softmax", "col", "lse_row", "prod_col", "einsum", "take"]


def array_step(kind, v, w, c):
    """One instruction on (3, 4) arrays v, w (Arrays or ndarrays) and a number c."""
    if kind == "sin":
        return np.sin(v)
    if kind == "tanh":
        return np.tanh(v * c)
    if kind == "gauss":
        return np.exp(-v * v)
    if kind == "relu":
        return fad.relu(v - c)
    if kind == "abs":
        return np.abs(v) * c
    if kind == "add":
        return v + w
    if kind == "mul":
        return v * w
    if kind == "row_sub":
        return v - np.sum(w, axis=0) * 0.25
    if kind == "matmul":
        return v @ M4
    if kind == "flip":
        return v[::-1]
    if kind == "halves":
        return fad.concatenate([v[:, 2:], v[:, :2]], axis=1)
    if kind == "where":
        return fad.where(v > c, v, w)
    if kind == "elem":
        return v * v[1, 2]
    if kind == "max_center":
        return v - np.max(v, axis=1, keepdims=True)
    if kind == "reshape":
        return v.reshape(-1)[::-1].reshape(3, 4)
    if kind == "log_softmax":
        return fad.log_softmax(v, axis=1)
    if kind == "col":
        return C31 - v * C31 if c > 0 else v / (C31 * C31 + 1.0)
    if kind == "lse_row":
        return v - fad.logsumexp(w, axis=0, keepdims=True)
    if kind == "prod_col":
        return v * np.prod(w * 0.25 + 1.0, axis=1, keepdims=True)
    if kind == "einsum":
        return np.einsum("ij,jk->ik", v, M4)
    if kind == "take":
        return v[np.array([2, 0, 1])]
    raise ValueError(kind)


def array_program(program):
    def f(x):
        vals = [x]
        for kind, i, j, c in program:
            vals.append(array_step(kind, vals[i % len(vals)], vals[j % len(vals)], c))
        return np.sum(vals[-1] * np.arange(1.0, 13.0).reshape(3, 4)) + np.sum(np.sin(vals[len(vals) // 2]))
    return f


array_programs = st.lists(
    st.tuples(st.sampled_from(ARRAY_STEPS), st.integers(0, 100), st.integers(0, 100),
              st.floats(-1.0, 1.0, allow_nan=False)),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(program=array_programs, seed=st.integers(0, 2 ** 16))
def test_random_array_programs_replay_as_fad_grad(program, seed):
    f = array_program(program)
    r = np.random.default_rng(seed)
    cf = fad.compile(f, r.normal(size=(3, 4)))
    assert isinstance(cf.traces[0], ArrayTrace)
    for _ in range(4):
        x = r.normal(size=(3, 4))
        value, g = fad.value_and_grad(f)(x)
        got_value, got = cf.value_and_grad(x)
        assert got_value == value or (np.isnan(got_value) and np.isnan(value))
        assert np.array_equal(got, g, equal_nan=True)


def test_numpy_that_arrays_lack_falls_back_to_one_var_per_number():
    """x.tolist() and np.linalg.norm do not take an fad.Array; on an object
    array of Vars they work, so compile records the function that way."""
    def f(x):
        return np.linalg.norm(x) + sum(v * v for v in x.tolist())
    x = np.array([3.0, 4.0])
    cf = fad.compile(f, x)
    assert isinstance(cf.traces[0], Trace)
    assert cf.grad(x).tolist() == [3.0 / 5.0 + 6.0, 4.0 / 5.0 + 8.0]


def _damaged(parts, index, change):
    bad = [p.copy() if isinstance(p, (np.ndarray, dict, list)) else p for p in parts]
    change(bad[index])
    return bad


@pytest.mark.parametrize("index,change,match", [
    (4, lambda aux: aux.pop(), "aux has"),                                 # one row's parameters lost
    (5, lambda shapes: shapes.update({1_000: (2,)}), "not an array row"),  # a shape for no row
    (6, lambda consts: consts.update({2: 1.0}), "constant of row 2"),     # a constant on a non-input row
    (9, lambda leaves: leaves.__setitem__(0, (3, 0, (6,))), "leaf row 3"),
    (10, lambda outs: outs.__setitem__(0, (10 ** 6, None, 0.0)), "outputs refer"),
    (2, lambda b: None, None),                                             # untouched: accepted
])
def test_each_damaged_column_is_refused(index, change, match):
    cf = fad.compile(shapes, np.arange(6.0))
    parts = _trace_parts(cf.traces[0])
    bad = _damaged(parts, index, change)
    if match is None:
        ArrayTrace(*bad)
        return
    with pytest.raises(ValueError, match=match):
        ArrayTrace(*bad)


def test_damaged_constants_and_element_reads_are_refused():
    """What the replay reads through raw pointers: a constant array (a
    closed-over fad.Array) must be C-contiguous float64, a constant number
    a float, and an element read must come from a row with an array value,
    not from another element read. Each of these, damaged in a pickle,
    crashed the replay before (an int8 constant read as float64 past its
    end; an element read through the NULL of an element row)."""
    C, w = fad.Array(np.arange(1.0, 9.0)), fad.Var(3.0)
    cf = fad.compile(lambda x: C[7] * x[0] + w * np.sum(x * x) + x[0] * x[1], np.ones(3))
    parts = _trace_parts(cf.traces[0])
    const_row = next(r for r, v in parts[6].items() if isinstance(v, np.ndarray))
    elem_rows = np.flatnonzero(parts[0] == fad.ops.BY_NAME["elem"].code)
    array_row = next(r for r in parts[5] if r != const_row)
    for value in (np.zeros(8, np.int8), np.ones(16)[::2], np.ones(8, ">f8"), [1.0] * 8):
        with pytest.raises(ValueError, match=f"constant of row {const_row}"):
            ArrayTrace(*_damaged(parts, 6, lambda consts: consts.update({const_row: value})))
    number_row = next(r for r, v in parts[6].items() if type(v) is float)  # w's
    with pytest.raises(ValueError, match=f"constant of row {number_row} is not a float"):  # a number's constant
        ArrayTrace(*_damaged(parts, 6, lambda consts: consts.update({number_row: np.float32(1.0)})))
    first, second = int(elem_rows[0]), int(elem_rows[1])

    def from_an_element_row(parts):
        parts[1][second], parts[3][second] = first, 0.0
        parts[5][first] = (8,)
    bad = [p.copy() if isinstance(p, (np.ndarray, dict, list)) else p for p in parts]
    from_an_element_row(bad)
    with pytest.raises(ValueError, match=f"row {second} reads an element"):
        ArrayTrace(*bad)
    with pytest.raises(ValueError, match="reads an element"):  # a 0-d shape: one number, no array
        ArrayTrace(*_damaged(parts, 5, lambda shapes: shapes.update({array_row: ()})))
    np.testing.assert_array_equal(ArrayTrace(*parts).value_and_grad(np.ones(3))[1], cf.grad(np.ones(3)))


def test_a_damaged_argument_layout_is_made_again_on_load():
    """pack_numbers trusts a compiled function's argument layout: a pickle
    that names a dict where the argument is a flat list crashed it. The
    layout is made from the argument structure on load, not read."""
    cf = fad.compile(lambda x: x[0] * x[1], [1.0, 2.0])
    cf._flat_args = [(dict, 2, None)]
    loaded = pickle.loads(pickle.dumps(cf))
    assert loaded.grad([3.0, 4.0]) == [4.0, 3.0]
    with pytest.raises(TypeError, match="shaped like"):
        loaded.grad({"a": 1.0, "b": 2.0})


def test_a_trace_whose_recorded_shapes_its_kernels_do_not_make_says_so():
    """A replayed row's value must have the recorded shape; a trace whose
    shapes table says otherwise (damaged in a pickle) is refused at the row."""
    cf = fad.compile(shapes, np.arange(6.0))
    parts = _trace_parts(cf.traces[0])
    names = [fops.OPS[op].name for op in parts[0]]
    one_number = next(i for i, n in enumerate(names) if n == "amax")  # np.max(y): a number
    array_row = next(i for i, n in enumerate(names) if n == "matmul")  # y.T @ y: (3, 3)
    x = np.arange(6.0)
    for row, shape, match in ((one_number, (1,), r"made one number, the recording shape \(1,\)"),
                              (array_row, (9,), r"made shape \(3, 3\), the recording \(9,\)")):
        bad = _damaged(parts, 5, lambda table: table.update({row: shape}))
        with pytest.raises(fad.FastADError, match=match):
            ArrayTrace(*bad).values(x)


def test_wrong_inputs_to_a_trace_are_named():
    t = fad.compile(mixed, np.ones(5), 0.5).traces[0]
    with pytest.raises(ValueError, match="2 input parts"):
        t.values([np.ones(5)])
    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(5,\)"):
        t.values([np.ones(4), 0.5])
    with pytest.raises(ValueError, match="6 input numbers"):
        t.values(np.ones(7))
    assert t.values([np.ones(5), 0.5])[0][0] == mixed(np.ones(5), 0.5)


def test_second_order_of_an_unpickled_array_lambda_says_why_it_cannot():
    cf = fad.compile(lambda x: np.sum(np.sin(x) * x), np.ones(3))
    cf2 = pickle.loads(pickle.dumps(cf))
    assert cf2.f is None and np.array_equal(cf2.grad(np.ones(3) * 2.0), cf.grad(np.ones(3) * 2.0))
    with pytest.raises(fad.FastADError, match="did not survive pickling"):
        cf2.hvp(np.ones(3), np.ones(3))
    assert cf.hvp(np.ones(3), np.ones(3)).shape == (3,)  # the original has its function


def test_the_truth_of_a_one_element_array_guards_the_replay():
    def f(x):
        return (x ** 2).sum() if x[1:2] else (x ** 3).sum()
    cf = fad.compile(f, np.array([1.0, 2.0]))
    x = np.array([3.0, 0.0])  # x[1:2] is now false: the other branch
    assert cf(x) == 27.0
    assert cf.grad(x).tolist() == fad.grad(f)(x).tolist() == [27.0, 0.0]
    assert len(cf.traces) == 2


def test_a_tracked_where_condition_guards_the_replay():
    """where(cond, ...) keeps its mask; when cond is itself tracked (true where
    nonzero), a replay whose mask differs must re-record, not reuse it."""
    def f(x):
        return np.sum(fad.where(x - x[0], x * 2.0, x * 3.0))
    cf = fad.compile(f, np.array([1.0, 2.0, 3.0]))
    x = np.array([2.0, 2.0, 5.0])  # element 1 now equals element 0: its mask flips
    assert cf.grad(x).tolist() == fad.grad(f)(x).tolist() == [3.0, 3.0, 2.0]
    assert len(cf.traces) == 2


def test_a_reshape_to_one_number_replays():
    # a scalar row has no recorded shape: its reshape kernel reshaped to None, (1,)
    f = lambda x: (x * x)[0:1].reshape(()) * 3.0  # noqa: E731
    x = np.array([1.0, 2.0])
    cf = fad.compile(f, x)
    for point in (x, np.array([-2.0, 5.0])):
        assert cf(point) == float(f(point))
        np.testing.assert_array_equal(cf.grad(point), fad.grad(f)(point))


def test_an_element_of_a_zero_d_array_replays():
    """x[()] of a 0-d argument or constant beside array work: a regression
    of the damaged-pickle check (an element read of shape () refused)."""
    f = lambda x: x[()] * np.sum(x * x)  # noqa: E731
    cf = fad.compile(f, np.array(2.0))
    assert cf.grad(np.array(3.0)) == fad.grad(f)(np.array(3.0)) == 27.0
    assert fad.jacobian(f)(np.array(2.0)) == 12.0 and fad.vjp(f, np.array(2.0))[0] == 8.0
    D = fad.Array(np.array(4.0))
    g = lambda x: D[()] * np.sum(x * x)  # noqa: E731
    assert fad.compile(g, np.array([1.0, 2.0])).grad(np.array([1.0, 2.0])).tolist() == [8.0, 16.0]

"""Tests of the reference engine's arrays (fastad.reference.Array).

Every array op is checked against central finite differences the way
autograd checks its rules: for a random output weighting u and random input
directions v, the reverse sweep's <u, J v> = sum_k <grad_k, v_k> must match
the directional difference (<u, f(x + h v)> - <u, f(x - h v)>) / 2h.
"""
import math

import numpy as np
import pytest

from fastad import ops
from fastad import reference as ref

Array, Var = ref.Array, ref.Var
CODE = {spec.name: spec.code for spec in ops.OPS}
RNG = np.random.default_rng(0)


def value(out):
    return np.asarray(out.value if isinstance(out, (Var, Array)) else out, dtype=np.float64)


def leaf(x):
    return Array(x) if isinstance(x, np.ndarray) else Var(x)


def check(f, *inputs, h=1e-6, rtol=1e-6, trials=2):
    """f's reverse-mode vector-Jacobian product against directional central
    differences; inputs are ndarrays (Array leaves) or floats (Var leaves)."""
    rng = np.random.default_rng(len(inputs))
    for _ in range(trials):
        leaves = [leaf(x) for x in inputs]
        out = f(*leaves)
        u = rng.standard_normal(np.shape(value(out)))
        out.backward(u if isinstance(out, Array) else float(u))
        grads = [np.asarray(lf.grad, dtype=np.float64) for lf in leaves]
        for lf, x in zip(leaves, inputs):
            assert np.shape(lf.grad) == np.shape(x)
        vs = [rng.standard_normal(np.shape(x)) for x in inputs]

        def along(t):
            moved = [x + t * v if isinstance(x, np.ndarray) else x + t * float(v)
                     for x, v in zip(inputs, vs)]
            return float(np.sum(u * value(f(*[leaf(m) for m in moved]))))
        numeric = (along(h) - along(-h)) / (2 * h)
        analytic = sum(float(np.sum(g * v)) for g, v in zip(grads, vs))
        assert analytic == pytest.approx(numeric, rel=rtol, abs=1e-7)


def rand(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape)


# ---------------------------------------------------------------------------
# Elementwise ops: one map row each, over broadcasting shapes
# ---------------------------------------------------------------------------

UNARY = [s for s in ops.SCALAR_OPS if s.arity == 1 and s.kind == "smooth"]
BINARY = [s for s in ops.SCALAR_OPS if s.arity == 2 and s.kind == "smooth"]
SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 3)), ((4, 1, 3), (2, 3))]
CALL = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
        "div": lambda x, y: x / y, "power": lambda x, y: x ** y, "neg": lambda x: -x}


@pytest.mark.parametrize("spec", UNARY, ids=[s.name for s in UNARY])
def test_unary_map(spec):
    f = CALL.get(spec.name) or getattr(ref, spec.name)
    x = rand(2, 3, lo=spec.domain[0], hi=spec.domain[1])
    check(f, x)
    out = f(Array(x))
    assert out.tape.op[out.index] == CODE["map"] and out.tape.c[out.index] == spec.code
    np.testing.assert_allclose(out.value, [[f(float(e)) for e in r] for r in x], rtol=1e-14)


@pytest.mark.parametrize("spec", BINARY, ids=[s.name for s in BINARY])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_map_broadcasting(spec, shapes):
    f = CALL.get(spec.name) or getattr(ref, spec.name)
    x, y = (rand(*s, lo=spec.domain[0], hi=spec.domain[1]) for s in shapes)
    x = float(x) if x.ndim == 0 else x  # a Var against an Array
    check(f, x, y)
    check(lambda a: f(a, y), x)  # the other argument a constant ndarray
    check(lambda b: f(x if isinstance(x, float) else x.copy(), b), y)


@pytest.mark.parametrize("name", ["maximum", "minimum", "relu", "abs"])
def test_kinks_away_from_the_kink(name):
    x, y = rand(2, 3) + 0.1, rand(3) - 0.05
    if name in ("maximum", "minimum"):
        check(getattr(ref, name), x, y)
    else:
        check(getattr(ref, name), x)


def test_elementwise_ties_and_kinks():
    a, b = Array(np.array([1.0, 2.0, 0.0])), Array(np.array([1.0, 1.0, 3.0]))
    ref.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [0.5, 1.0, 0.0] and b.grad.tolist() == [0.5, 0.0, 1.0]
    assert ref.grad(lambda a: ref.relu(a).sum())(np.array([0.0, 2.0, -1.0])).tolist() == [0, 1, 0]
    assert ref.grad(lambda a: ref.clip(a, 0.0, 1.0).sum())(np.array([-1, 0.5, 2])).tolist() == [0, 1, 0]


def test_absolute_zero_elementwise():
    """sqrt'(0) = inf, but that element is not used: its gradient is 0, not
    nan (each element of a map row is a scalar op under the zero rule)."""
    a = Array(np.array([0.0, 4.0]))
    ref.sqrt(a)[1].backward()
    assert a.grad.tolist() == [0.0, 0.25]


# ---------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 2)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes):
    x, y = (rand(*s) for s in shapes)
    check(lambda a, b: a @ b, x, y)
    check(lambda a: np.matmul(a, y), x)
    check(lambda b: x @ b, y)


def test_matmul_rule():
    """D = W @ X: dW = dD @ X.T, dX = W.T @ dD."""
    W, X, dD = rand(3, 4), rand(4, 2), rand(3, 2)
    w, x = Array(W), Array(X)
    with ref.Tape() as t:
        D = w @ x
    D.backward(dD)
    np.testing.assert_allclose(w.grad, dD @ X.T, rtol=1e-14)
    np.testing.assert_allclose(x.grad, W.T @ dD, rtol=1e-14)
    assert t.op == [CODE["array_input"], CODE["array_input"], CODE["matmul"]]


EINSUMS = [("ij,jk->ik", (3, 4), (4, 2)), ("ij,j->i", (3, 4), (4,)), ("i,j->ij", (3,), (4,)),
           ("ij,ij->", (3, 4), (3, 4)), ("ijk,ik->j", (2, 3, 4), (2, 4)), ("ij,jk", (3, 4), (4, 2)),
           ("ij,j->j", (3, 4), (4,)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 5))]


@pytest.mark.parametrize("spec,sx,sy", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(spec, sx, sy):
    x, y = rand(*sx), rand(*sy)
    check(lambda a, b: np.einsum(spec, a, b), x, y)
    np.testing.assert_allclose(value(np.einsum(spec, Array(x), y)), np.einsum(spec, x, y))


def test_einsum_one_operand_dot_outer():
    x, v, w = rand(3, 4), rand(4), rand(3)
    check(lambda a: np.einsum("ij->j", a), x)
    check(lambda a: np.einsum("ij->", a), x)
    check(lambda a, b: np.dot(a, b), x, v)
    check(lambda a, b: np.dot(a, b), v, v)
    check(lambda a, b: a.dot(b), x.T, x)
    check(lambda a, b: np.outer(a, b), w, v)
    check(lambda a, b: a @ b, x, v)


# ---------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 2)]


@pytest.mark.parametrize("method", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(method, axis, keepdims):
    x = rand(2, 3, 4, lo=0.5, hi=1.5) * RNG.choice([-1, 1], size=(2, 3, 4))
    check(lambda a: getattr(a, method)(axis=axis, keepdims=keepdims), x)
    numpy_fn = {"max": np.max, "min": np.min}.get(method) or getattr(np, method)
    out = numpy_fn(Array(x), axis=axis, keepdims=keepdims)
    expect = numpy_fn(x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(value(out), expect, rtol=1e-14)
    assert isinstance(out, Var) == (np.ndim(expect) == 0)


def test_extremum_ties_split_evenly():
    a = Array(np.array([[3.0, 1.0, 3.0], [2.0, 2.0, 2.0]]))
    a.max(axis=1).sum().backward()
    np.testing.assert_allclose(a.grad, [[0.5, 0, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    assert ref.grad(lambda a: a.min())(np.array([1.0, 1.0, 2.0])).tolist() == [0.5, 0.5, 0.0]


def test_prod_with_zeros():
    """d prod / dx_j is the product of the others, also where some x are 0."""
    g = ref.grad(lambda a: a.prod())(np.array([2.0, 0.0, 3.0, 4.0]))
    assert g.tolist() == [0.0, 24.0, 0.0, 0.0]
    g = ref.grad(lambda a: a.prod())(np.array([2.0, 0.0, 0.0]))
    assert g.tolist() == [0.0, 0.0, 0.0]
    check(lambda a: a.prod(axis=0), np.array([[0.0, 1.5], [2.0, -1.0], [0.5, 0.7]]))


@pytest.mark.parametrize("axis", AXES[:4], ids=str)
def test_logsumexp_softmax(axis):
    x = rand(2, 3, 4)
    check(lambda a: ref.logsumexp(a, axis=axis), x)
    check(lambda a: ref.logsumexp(a, axis=axis, keepdims=True), x)
    if axis is not None:
        check(lambda a: ref.softmax(a, axis=axis), x)
        check(lambda a: ref.log_softmax(a, axis=axis), x)
    lse = value(ref.logsumexp(Array(x), axis=axis))
    np.testing.assert_allclose(lse, np.log(np.sum(np.exp(x), axis=axis)), rtol=1e-14)


def test_stable_at_1000():
    x = np.array([1000.0, 999.0, 998.0])
    v, g = ref.value_and_grad(lambda a: ref.logsumexp(a))(x)
    shifted = np.exp(x - 1000.0)
    assert v == pytest.approx(1000.0 + math.log(shifted.sum()), rel=1e-15)
    np.testing.assert_allclose(g, shifted / shifted.sum(), rtol=1e-12)  # x - lse: ulp(1000)
    s = ref.softmax(Array(x))
    ls = ref.log_softmax(Array(np.stack([x, -x])), axis=1)
    assert np.all(np.isfinite(s.value)) and np.all(np.isfinite(ls.value))
    assert s.value.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(s.value, shifted / shifted.sum(), rtol=1e-12)
    for fn in (lambda a: ref.softmax(a)[0], lambda a: ref.log_softmax(a)[2],
               lambda a: ref.logsumexp(a * 2.0)):
        g = ref.grad(fn)(x)
        assert np.all(np.isfinite(g))
    check(lambda a: ref.log_softmax(a), x)


# ---------------------------------------------------------------------------
# Shapes, indexing, joining
# ---------------------------------------------------------------------------

SHAPE_OPS = {
    "reshape": lambda a: a.reshape(4, 6), "reshape_tuple": lambda a: a.reshape((3, -1)),
    "np.reshape": lambda a: np.reshape(a, (24,)), "T": lambda a: a.T,
    "transpose": lambda a: a.transpose(1, 2, 0), "np.transpose": lambda a: np.transpose(a, (2, 0, 1)),
    "swapaxes": lambda a: a.swapaxes(0, 2), "ravel": lambda a: a.ravel(),
    "expand_dims": lambda a: np.expand_dims(a, 1), "squeeze": lambda a: np.squeeze(a[:, :1]),
    "squeeze_method": lambda a: a[:1].squeeze(0),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(name):
    x = rand(2, 3, 4)
    check(SHAPE_OPS[name], x)
    np.testing.assert_array_equal(value(SHAPE_OPS[name](Array(x))), SHAPE_OPS[name](x))


KEYS = [1, -1, None, (1, 2), (slice(None), 1), (Ellipsis, 2), (None, 0), slice(None, None, -1),
        (slice(0, 2), [0, 0, 2]), ([0, 1, 1], [2, 0, 2]), np.array([True, False, True]),
        (1, slice(1, None)), ([[0, 1], [2, 2]],)]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_getitem(key):
    x = rand(3, 4)
    check(lambda a: a[key], x)
    np.testing.assert_array_equal(value(Array(x)[key]), x[key])


def test_element_reads_are_elem_rows():
    a, m = Array(np.arange(4.0)), Array(np.arange(6.0).reshape(2, 3))
    with ref.Tape() as t:
        e, f, g = a[2], a[-1], m[1, 2]
        row = m[1]
    assert all(isinstance(v, Var) for v in (e, f, g))
    assert [t.op[v.index] for v in (e, f, g)] == [CODE["elem"]] * 3
    assert [t.c[v.index] for v in (e, f, g)] == [2.0, 3.0, 5.0]
    assert (e.value, f.value, g.value) == (2.0, 3.0, 5.0)
    assert isinstance(row, Array) and t.op[-1] == CODE["getitem"]
    assert [v.value for v in a] == [0.0, 1.0, 2.0, 3.0] and len(a) == 4


def test_repeated_indices_accumulate():
    g = ref.grad(lambda a: (a[[0, 0, 2, 0]] * np.array([1.0, 2.0, 3.0, 4.0])).sum())(np.zeros(3))
    assert g.tolist() == [7.0, 0.0, 3.0]
    g = ref.grad(lambda a: a[1] * a[1] + a[1])(np.array([0.0, 3.0]))
    assert g.tolist() == [0.0, 7.0]
    g = ref.grad(lambda a: a[np.array([[1, 1], [1, 0]])].sum())(np.zeros(2))
    assert g.tolist() == [1.0, 3.0]


def test_concatenate_and_stack():
    x, y, z = rand(2, 3), rand(4, 3), rand(2, 2)
    check(lambda a, b: ref.concatenate([a, b]), x, y)
    check(lambda a, b: np.concatenate([a, b, a], axis=0), x, y)
    check(lambda a, c: np.concatenate((a, c, 2.0 * a), axis=1), x, z)
    check(lambda a, c: ref.concatenate([a, c], axis=None), x, z)
    check(lambda a, b: np.stack([a, a * 2.0, b[:2]]), x, y)
    check(lambda a: np.stack([a, np.ones((2, 3))], axis=-1), x)
    check(lambda s, t: ref.stack([s, t, s * t]), 1.5, -0.5)  # Vars -> Array
    check(lambda a, s: ref.concatenate([a, s, 3.0]), rand(3), 0.7)  # a Var is a length-1 piece
    with ref.Tape() as t:
        out = ref.stack([Var(1.0), Array(np.ones(1))[0]])
    assert t.op[-1] == CODE["stack"] and t.a[-1] == t.b[-1] == -1  # variadic: rows in aux
    np.testing.assert_array_equal(out.value, [1.0, 1.0])


def test_where():
    x, y = rand(2, 3), rand(3)
    cond = x > 0.3
    check(lambda a, b: np.where(cond, a, b), x, y)
    check(lambda a, b: ref.where(cond, a * b, 0.0), x, y)
    check(lambda a: ref.where(a > 0.0, a, 0.1 * a), x)  # a tracked condition counts by value
    np.testing.assert_array_equal(value(np.where(cond, Array(x), y)), np.where(cond, x, y))


# ---------------------------------------------------------------------------
# Scalars and arrays on one tape
# ---------------------------------------------------------------------------

def test_mixed_scalar_array_graphs():
    x, y, a = rand(3), 0.7, -1.3
    check(lambda v, s: v.sum() * s, x, y)
    check(lambda v, s: v[1] * s + ref.sin(v[0]), x, y)
    check(lambda v, s, t: (v * s + t).prod(), x, y, a)  # Vars broadcast into arrays
    check(lambda v, s: ref.exp(ref.stack([s, s * s]) @ v[:2]), x, y)
    check(lambda v, s: np.maximum(v, s).mean() * ref.tanh(s), x, y)
    check(lambda v, s: s * np.ones(3) + v, x, y)  # Var with a float ndarray -> Array
    check(lambda v, s: v @ (np.arange(3.0) * s), x, y)


def test_watch_gives_input_rows_in_order():
    x, a = Var(1.0), Array(np.ones(2))
    with ref.Tape() as t:
        t.watch(x, a)
        y = (a * x).sum()
    assert t.op[:2] == [CODE["input"], CODE["array_input"]] and t.inputs() == [(0, x), (1, a)]
    with pytest.raises(TypeError):
        t.watch(y)


def test_one_backward_fills_both():
    a, x = Array(np.array([1.0, 2.0, 3.0])), Var(2.0)
    with ref.Tape() as t:
        y = np.sin(a).sum() * x
    y.backward()
    np.testing.assert_allclose(a.grad, np.cos([1.0, 2.0, 3.0]) * 2.0, rtol=1e-15)
    assert x.grad == pytest.approx(np.sin([1.0, 2.0, 3.0]).sum(), rel=1e-15)
    assert t.op == [CODE[n] for n in ("array_input", "map", "sum", "input", "mul")]
    assert t.inputs() == [(0, a), (3, x)]
    r = t.rows()
    assert np.isnan(r["val"][:2]).all() and np.isnan(r["adj"][:2]).all()  # array-valued rows
    assert r["val"][2:].tolist() == [t.val[2], 2.0, y.value] and r["c"][1] == CODE["sin"]
    assert r["adj"][2:].tolist() == [2.0, t.val[2], 1.0]


def test_grads_accumulate_and_nodes_hold_adjoints():
    a = Array(np.array([1.0, 2.0]))
    h = a * a
    out = h.sum()
    out.backward(retain_graph=True)
    out.backward(seed=2.0)
    assert a.grad.tolist() == [6.0, 12.0] and h.grad.tolist() == [2.0, 2.0]
    a.grad = np.zeros(2)
    (a * 3.0).backward(np.array([1.0, -1.0]))
    assert a.grad.tolist() == [3.0, -3.0]
    a.backward(np.ones(2))  # a leaf: d a / d a = identity
    assert a.grad.tolist() == [4.0, -2.0]
    b = Array(np.array([[5.0]]))
    b.backward()  # one element: seed 1
    assert b.grad.tolist() == [[1.0]] and Array(np.ones(3)).grad.tolist() == [0.0] * 3


def test_numpy_protocols():
    a = Array(np.array([0.5, -1.0, 2.0]))
    assert isinstance(np.sin(a), Array) and isinstance(np.sum(a), Var)
    assert isinstance(np.maximum(a, 0), Array) and isinstance(np.float64(2.0) * a, Array)
    assert isinstance(np.ones(3) + a, Array) and isinstance(np.ones(3) @ a, Var)
    assert np.shape(a) == (3,) and np.ndim(a) == 1 and np.size(a) == 3
    assert (a > 0).tolist() == [True, False, True] and (a == a.value).all()
    np.testing.assert_allclose(np.clip(a, 0.0, 1.0).value, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(np.mean(a).value, a.value.mean())
    v = Var(2.0)
    assert isinstance(v * np.ones(2), Array) and isinstance(np.ones(2) * v, Array)
    assert isinstance(np.sin(v), Var) and (v < np.array([1.0, 3.0])).tolist() == [False, True]
    objs = np.exp(np.array([Var(0.0), Var(1.0)], dtype=object))  # NumPy's object loop
    assert objs.dtype == object and objs[0].value == 1.0
    assert isinstance(ref.sin(np.zeros(2)), np.ndarray)  # constants: plain NumPy, no tape
    assert ref.stack([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_grad_and_value_and_grad():
    def f(p, x):
        return ref.tanh(p["W"] @ x + p["b"]).sum() * p["s"]
    p = {"W": rand(2, 3), "b": rand(2), "s": 1.5}
    x = rand(3)
    v, (gp, gx) = ref.value_and_grad(f, (0, 1))(p, x)
    h = np.tanh(p["W"] @ x + p["b"])
    assert v == pytest.approx(h.sum() * 1.5, rel=1e-14)
    dz = (1 - h * h) * 1.5
    np.testing.assert_allclose(gp["W"], np.outer(dz, x), rtol=1e-13)
    np.testing.assert_allclose(gp["b"], dz, rtol=1e-13)
    np.testing.assert_allclose(gx, p["W"].T @ dz, rtol=1e-13)
    assert gp["s"] == pytest.approx(h.sum()) and type(gp["s"]) is float
    assert gx.dtype == np.float64 and gp["W"].shape == (2, 3)
    g = ref.grad(lambda xs: xs[0].sum() * 2.0)([np.ones(2), np.ones((2, 2))])
    assert g[0].tolist() == [2.0, 2.0] and g[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert ref.grad(lambda a: a * 3.0)(np.array([2.0])).tolist() == [3.0]  # size 1 is a scalar
    assert ref.grad(lambda a: (a * a).sum(keepdims=True))(np.array([[2.0]])).tolist() == [[4.0]]
    gi = ref.grad(lambda a: (a * a).sum())(np.array([1, 2]))  # ints taken as float64
    assert gi.dtype == np.float64 and gi.tolist() == [2.0, 4.0]
    assert ref.grad(lambda a, b: b * 2.0)(np.ones(2), 1.0).tolist() == [0.0, 0.0]
    outside = Array(np.ones(2))
    ref.grad(lambda a: (a * outside).sum())(np.ones(2))
    assert outside.grad.tolist() == [0.0, 0.0]  # grad() leaves other leaves alone


def test_leaf_values_are_copies_and_read_only():
    x = np.array([1, 2])
    a = Array(x)
    x[0] = 5
    assert a.value.dtype == np.float64 and a.value.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        a.value[0] = 3.0
    a.value = np.array([3.0, 4.0])
    assert (a * 1.0).value.tolist() == [3.0, 4.0]


# ---------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------

def test_errors():
    a = Array(np.ones((2, 3)))
    for bad in (np.array(["x"]), np.array([1j]), np.array([None], dtype=object),
                np.array([True]), [Var(1.0)], "x"):
        with pytest.raises(TypeError):
            Array(bad)
    with pytest.raises(TypeError, match="numpy.cumsum"):
        np.cumsum(a)
    with pytest.raises(TypeError, match="numpy.floor"):
        np.floor(a)
    with pytest.raises(TypeError, match=r"\.value"):
        np.asarray(a)
    with pytest.raises(TypeError, match="reduce"):
        np.add.reduce(a)
    with pytest.raises(TypeError, match="out="):
        np.sum(a, out=np.zeros(()))
    with pytest.raises(ValueError):
        a + np.ones(4)  # shapes that do not broadcast
    with pytest.raises(ValueError):
        a @ np.ones(4)
    with pytest.raises(ValueError, match="seed"):
        (a * 2.0).backward()
    with pytest.raises(ValueError, match="jacobian"):
        ref.grad(lambda x: x * 2.0)(np.ones(2))
    with pytest.raises(TypeError):
        a[Var(0.0)]
    with pytest.raises(IndexError):
        Array(np.ones(3))[3]
    with pytest.raises(TypeError):
        np.einsum("...i,i", a, np.ones(3))
    with pytest.raises(TypeError):
        np.einsum("ii,i", np.ones((3, 3)), Array(np.ones(3)))
    with pytest.raises(ValueError):
        a.sum(axis=2)
    with pytest.raises(TypeError):
        a + "x"
    with pytest.raises(TypeError):
        ref.grad(lambda x: x.sum())(np.array(["a"]))
    with pytest.raises(TypeError):
        ref.grad(lambda x: x.sum())(a)
    with pytest.raises(ValueError):
        a.item()
    with pytest.raises(ValueError):
        bool(a)
    h = a * 2.0
    with pytest.raises(ref.FastADError):
        h.grad = np.zeros((2, 3))
    with pytest.raises(ref.FastADError):
        h.value = np.zeros((2, 3))
    with pytest.raises(ValueError):
        a.grad = np.zeros(3)


def test_released_and_mixed_tapes():
    a = Array(np.ones(2))
    s = (a * 2.0).sum()
    s.backward()
    with pytest.raises(ref.FastADError, match="already swept"):
        s.backward()
    with ref.Tape():
        h1 = a * 2.0
    with ref.Tape():
        h2 = a * 3.0
    with pytest.raises(ref.FastADError, match="different tapes"):
        h1 + h2
    h3 = a * 2.0
    h3.sum().backward()
    with pytest.raises(ref.FastADError, match="already swept"):
        h3 + 1.0


# ---------------------------------------------------------------------------
# Against the compiled core (where it is built)
# ---------------------------------------------------------------------------

def _core():
    import fastad
    return fastad


AGREE = {
    "mlp": (lambda e, W, b, x: e.tanh(W @ x + b).sum(), (rand(3, 4), rand(3), rand(4))),
    "logsumexp_rows": (lambda e, a: e.logsumexp(a * 3.0, axis=1).sum(), (rand(3, 4),)),
    "softmax_ce": (lambda e, a: -e.log_softmax(a)[2], (rand(5) * 400.0,)),
    "gather_max": (lambda e, a: (a[[0, 0, 2]] * 2.0).sum() + a.max() * a.min(), (rand(4),)),
    "einsum_prod": (lambda e, a, b: (np.einsum("ij,jk->ik", a, b) / 3.0).prod(), (rand(2, 3), rand(3, 2))),
    "where_leaky": (lambda e, a: np.where(a.value > 0, a, 0.1 * a).sum(), (rand(2, 3),)),
    "join_mean": (lambda e, a, b: e.concatenate([a, b * b], axis=1).mean()
                  + np.stack([a, a]).sum(), (rand(2, 3), rand(2, 2))),
    "mixed_scalars": (lambda e, a, x, y: a.sum() * x + a[1] * y + e.sin(x * a).prod(), (rand(3), 0.3, -1.2)),
    "shapes": (lambda e, a: (a.T.reshape(4, 3)[1:, ::2] ** 2).sum(axis=0)[1], (rand(3, 4),)),
}


@pytest.mark.parametrize("name", AGREE)
def test_agrees_with_core(name):
    fad = _core()
    f, args = AGREE[name]
    nums = tuple(range(len(args)))
    v_ref, g_ref = ref.value_and_grad(lambda *xs: f(ref, *xs), nums)(*args)
    v_fad, g_fad = fad.value_and_grad(lambda *xs: f(fad, *xs), nums)(*args)
    assert v_fad == pytest.approx(v_ref, rel=1e-12, abs=1e-12)
    for gr, gf in zip(g_ref, g_fad):
        np.testing.assert_allclose(gf, gr, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# the two engines agree where an audit found them apart
# ---------------------------------------------------------------------------

def test_a_bool_index_is_a_mask_in_both_engines(engine):
    a = engine.Array(np.array([1.0, 2.0, 3.0]))
    got = a[True]  # NumPy's x[True]: a new axis, all of x (the reference read it as a[1])
    assert isinstance(got, engine.Array) and got.value.tolist() == [[1.0, 2.0, 3.0]]
    assert a[False].value.shape == (0, 3)


@pytest.mark.parametrize("call", [
    lambda a: np.stack([a, np.ones(2)], out=np.zeros((2, 2))),
    lambda a: np.concatenate([a, np.ones(1)], out=np.zeros(3)),
    lambda a: np.concatenate([a, np.ones(1)], dtype=np.int32),
    lambda a: np.dot(a, np.ones(2), out=np.zeros(())),
    lambda a: np.outer(a, np.ones(2), out=np.zeros((2, 2))),
    lambda a: np.einsum("i,i->", a, np.ones(2), out=np.zeros(())),
], ids=["stack-out", "concatenate-out", "concatenate-dtype", "dot-out", "outer-out", "einsum-out"])
def test_numpy_keywords_a_recorded_result_cannot_honour_are_refused(engine, call):
    # the reference ignored them: an out= array left as it was
    with pytest.raises(TypeError):
        call(engine.Array(np.ones(2)))


def test_the_engines_agree_on_small_cases(engine):
    a = engine.Array(np.array([1.0, 2.0]))
    assert float(np.einsum("i,i->", a, np.ones(2), optimize=True).value) == 3.0  # optimize: no path to pick
    a.grad = np.ones(2)
    a.grad = None  # zeroes a leaf's gradient
    assert a.grad.tolist() == [0.0, 0.0]
    assert engine.grad(lambda p: (p * p).sum())(np.array(3.0)) == 6.0  # a 0-d array argument
    with pytest.raises(ValueError, match="bool"):  # not a zero gradient
        engine.grad(lambda p: p.sum() > 0)(np.ones(2))
    v = engine.Var(2.0)
    assert v.sum() is v and v.mean(keepdims=True) is v
    with pytest.raises(ValueError, match="no axis"):
        v.sum(axis=1)

"""fad.Array: the NumPy front end (fastad/array.py) and its backward rules
(fastad/array_rules.py).

Gradients are checked against central finite differences the cheap way: for
a random output cotangent u and a random input direction v,
<u, J v> (one reverse sweep seeded with u, then <grad, v>) must match
(<u, f(x + h v)> - <u, f(x - h v)>) / 2h. Shapes and axes come from
hypothesis; values from a NumPy generator seeded by hypothesis, so a failure
reproduces.
"""
import contextlib
import copy
import gc
import math
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import fastad as fad
from fastad import ops as _ops

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=12, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
SEEDS = st.integers(0, 2**32 - 1)
H = 1e-6
RTOL = 1e-6


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def leaf(x, like=None):
    """A Var for a Python float, an Array for an ndarray (or for anything,
    when `like`, the original input, is an ndarray: 0-d sums are np.float64)."""
    if isinstance(x if like is None else like, np.ndarray):
        return fad.Array(np.asarray(x))
    return fad.Var(float(x))


def val(o):
    return o.value if isinstance(o, (fad.Var, fad.Array)) else o


def draw(rng, shape, domain=(-3.0, 3.0), offset=None):
    """Uniform values in domain; with offset, snapped to a 0.1 grid plus
    offset, so kink ops (abs, maximum, clip...) stay >= 0.05 from their kinks."""
    lo, hi = domain
    x = rng.uniform(lo, hi, size=shape)
    if offset is not None:
        x = np.clip(np.round(x * 10) / 10, lo + 0.1, hi - 0.1) + offset
    return np.asarray(x, np.float64)


def scalar(rng, domain=(-3.0, 3.0), offset=None):
    return float(draw(rng, (), domain, offset))


def check_grad(f, xs, rng, h=H, rtol=RTOL):
    """Check f's reverse sweep against central differences by random
    projections. xs: floats (made Vars) and ndarrays (made Arrays); returns
    the output value and the gradients."""
    leaves = [leaf(x) for x in xs]
    out = f(*leaves)
    assert isinstance(out, (fad.Var, fad.Array)), f"f returned an untracked {type(out).__name__}"
    y = np.asarray(val(out))
    u = rng.standard_normal(y.shape)
    out.backward(seed=u if isinstance(out, fad.Array) else float(u))
    grads = [lf.grad for lf in leaves]
    for g, x in zip(grads, xs):
        if isinstance(x, np.ndarray):
            assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == x.shape
        else:
            assert isinstance(g, float)
        assert np.all(np.isfinite(g))
    vs = [rng.standard_normal(x.shape) if isinstance(x, np.ndarray) else float(rng.standard_normal())
          for x in xs]
    with fad.no_grad():
        fp = np.asarray(val(f(*[leaf(x + h * v, x) for x, v in zip(xs, vs)])))
        fm = np.asarray(val(f(*[leaf(x - h * v, x) for x, v in zip(xs, vs)])))
    fd = float(np.sum(u * (fp - fm))) / (2 * h)
    ad = float(sum(np.sum(g * v) for g, v in zip(grads, vs)))
    scale = 1.0 + float(sum(np.sum(np.abs(g * v)) for g, v in zip(grads, vs))) + abs(fd)
    assert abs(ad - fd) <= rtol * scale, f"reverse {ad} vs finite differences {fd}"
    return y, grads


def assert_value(out, want, rtol=1e-12, atol=1e-12):
    got = np.asarray(val(out))
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# 1a. elementwise functions
# ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])
UNARY_NUMPY = {  # name -> the value NumPy gives
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos,
    "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "exp": np.exp,
    "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "log2": np.log2, "log10": np.log10,
    "sqrt": np.sqrt, "cbrt": np.cbrt, "square": np.square, "abs": np.abs, "sign": np.sign,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "relu": lambda x: np.maximum(x, 0.0),
    "erf": _erf,
}
UNARY_UFUNC = {n: getattr(np, n) for n in UNARY_NUMPY if n not in ("sigmoid", "relu", "erf")}
KINKS = {"abs", "sign", "relu", "maximum", "minimum", "clip"}


def test_unary_table_covers_the_api():
    assert set(UNARY_NUMPY) == set(_ops.UNARY)


@pytest.mark.parametrize("name", sorted(UNARY_NUMPY))
@FEW
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=SEEDS)
def test_unary_function(name, shape, seed):
    rng = np.random.default_rng(seed)
    x = draw(rng, shape, _ops.BY_NAME[name].domain, 0.05 if name in KINKS else None)
    fn = getattr(fad, name)
    y, _ = check_grad(fn, [x], rng)
    assert_value(y, UNARY_NUMPY[name](x), rtol=1e-14)
    if name in UNARY_UFUNC:  # np.sin(Array) dispatches to fastad: same value, recorded
        out = UNARY_UFUNC[name](fad.Array(x))
        assert isinstance(out, (fad.Array, fad.Var))
        assert_value(out, UNARY_NUMPY[name](x), rtol=1e-14)
        check_grad(UNARY_UFUNC[name], [x], rng)


@pytest.mark.parametrize("name", sorted(UNARY_NUMPY))
def test_unary_gradient_is_the_scalar_derivative(name):
    # The map row's partials come from the scalar core: elementwise they
    # equal the scalar Var gradient (to an ulp: the array's value is NumPy's,
    # e.g. np.cbrt or np.tanh, and a partial may be computed from it, as 1 - f^2).
    rng = np.random.default_rng(7)
    x = draw(rng, (5,), _ops.BY_NAME[name].domain, 0.05 if name in KINKS else None)
    a = fad.Array(x)
    getattr(fad, name)(a).sum().backward()
    want = []
    for xi in x:
        v = fad.Var(float(xi))
        getattr(fad, name)(v).backward()
        want.append(v.grad)
    np.testing.assert_allclose(a.grad, want, rtol=1e-14, atol=1e-300)


def test_neg_pos_abs_operators():
    rng = np.random.default_rng(0)
    x = draw(rng, (3, 2), offset=0.05)
    y, g = check_grad(lambda a: -a, [x], rng)
    assert_value(y, -x)
    y, g = check_grad(lambda a: abs(a), [x], rng)
    assert_value(y, np.abs(x))
    a = fad.Array(x)
    assert (+a) is a
    (abs(a) * 1.0).sum().backward()
    np.testing.assert_array_equal(a.grad, np.sign(x))


BINARY = {  # name -> (fastad's way, NumPy's value)
    "add": (lambda x, y: x + y, np.add),
    "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply),
    "div": (lambda x, y: x / y, np.true_divide),
    "power": (lambda x, y: x ** y, np.power),
    "maximum": (fad.maximum, np.maximum),
    "minimum": (fad.minimum, np.minimum),
    "arctan2": (fad.arctan2, np.arctan2),
    "hypot": (fad.hypot, np.hypot),
    "power_fn": (fad.power, np.power),
}
UFUNC2 = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "power": np.power, "maximum": np.maximum, "minimum": np.minimum,
          "arctan2": np.arctan2, "hypot": np.hypot}


def _binary_inputs(name, rng, sx, sy):
    spec = _ops.BY_NAME[name.replace("_fn", "")]
    kink = spec.name in KINKS
    x = draw(rng, sx, spec.domain, 0.05 if kink else None)
    y = draw(rng, sy, spec.domain, 0.0 if kink else None)
    return x, y


@pytest.mark.parametrize("kinds", ["Array,Array", "Array,ndarray", "ndarray,Array"])
@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=SEEDS)
def test_binary_broadcasting(name, kinds, shapes, seed):
    rng = np.random.default_rng(seed)
    sx, sy = shapes.input_shapes
    x, y = _binary_inputs(name, rng, sx, sy)
    fn, ref = BINARY[name]
    want = ref(x, y)
    if kinds == "Array,Array":
        out, _ = check_grad(fn, [x, y], rng)
    elif kinds == "Array,ndarray":
        out, _ = check_grad(lambda a: fn(a, y), [x], rng)
    else:
        out, _ = check_grad(lambda b: fn(x, b), [y], rng)
    assert_value(out, want, rtol=1e-14)
    assert np.shape(out) == shapes.result_shape


@pytest.mark.parametrize("name", sorted(UFUNC2))
def test_binary_ufunc_dispatch(name):
    rng = np.random.default_rng(1)
    x, y = _binary_inputs(name, rng, (2, 3), (3,))
    out, _ = check_grad(UFUNC2[name], [x, y], rng)
    assert_value(out, UFUNC2[name](x, y), rtol=1e-14)
    out, _ = check_grad(lambda b: UFUNC2[name](x, b), [y], rng)  # ndarray first
    assert_value(out, UFUNC2[name](x, y), rtol=1e-14)


SCALAR_KINDS = ["Array,float", "float,Array", "Array,int", "Array,Var", "Var,Array",
                "Array,np.float64", "np.float64,Array", "Array,0-d ndarray"]


@pytest.mark.parametrize("kinds", SCALAR_KINDS)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_with_scalars(name, kinds):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{kinds}".encode()))
    spec = _ops.BY_NAME[name.replace("_fn", "")]
    kink = spec.name in KINKS
    array_first = kinds.startswith("Array")
    arr = draw(rng, (2, 3), spec.domain, (0.05 if array_first else 0.0) if kink else None)
    s = scalar(rng, spec.domain, (0.0 if array_first else 0.05) if kink else None)
    if kinds.endswith("int") or kinds.startswith("int"):
        s = int(round(s)) or 1
        if kink:
            arr = draw(rng, (2, 3), spec.domain, 0.05)
    fn, ref = BINARY[name]
    want = ref(arr, s) if array_first else ref(s, arr)
    other = kinds.split(",")[1 if array_first else 0]
    if other == "Var":
        f = (lambda a, v: fn(a, v)) if array_first else (lambda v, a: fn(v, a))
        xs = [arr, s] if array_first else [s, arr]
    else:
        c = {"float": float(s), "int": s, "np.float64": np.float64(s),
             "0-d ndarray": np.array(s)}[other]
        f = (lambda a: fn(a, c)) if array_first else (lambda a: fn(c, a))
        xs = [arr]
    out, grads = check_grad(f, xs, rng)
    assert_value(out, want, rtol=1e-14)
    if other == "Var":
        assert isinstance(grads[1 if array_first else 0], float)


# Same-shape elementwise ops (the common case) record and sweep in C
# (fastad/_core.pyx: map_record, map_backward); everything else goes through
# fastad/array.py and array_rules._map. Both give the same numbers.

FAST_KINDS = ["Array,Array", "Array,float", "float,Array", "Array,int", "x,x",
              "Array,ndarray", "ndarray,Array"]


@contextlib.contextmanager
def route(fast):
    """fast=True: make the general route raise, so the test proves the C
    route ran; fast=False: switch the C route off, so the general one runs."""
    import fastad.array as front
    import fastad.array_rules as rules
    from fastad import _core
    saved = front.binary, front.unary, rules.RULES[_ops.BY_NAME["map"].code]
    if fast:
        def refuse(*args):
            raise AssertionError("the general route ran for a same-shape elementwise op")
        front.binary = front.unary = rules.RULES[_ops.BY_NAME["map"].code] = refuse
    else:
        _core._fast_elementwise(False)
    try:
        yield
    finally:
        front.binary, front.unary, rules.RULES[_ops.BY_NAME["map"].code] = saved
        _core._fast_elementwise(True)


@pytest.mark.parametrize("fast", [True, False], ids=["C route", "general route"])
@pytest.mark.parametrize("kinds", FAST_KINDS)
@pytest.mark.parametrize("name", sorted(UFUNC2))
def test_same_shape_binary_routes_agree_with_the_reference(name, kinds, fast):
    from fastad import reference as ref
    rng = np.random.default_rng(zlib.crc32(f"{name}/{kinds}".encode()))
    x, y = _binary_inputs(name, rng, (2, 3), (2, 3))
    c = float(y[0, 0]) if kinds != "Array,int" else (int(round(y[0, 0])) or 1)
    if kinds == "Array,int" and name in KINKS:
        x = draw(rng, (2, 3), _ops.BY_NAME[name].domain, 0.05)
    forms = {"Array,Array": (lambda M, a, b: UFUNC2[name](a, b), [x, y]),
             "Array,float": (lambda M, a: UFUNC2[name](a, c), [x]),
             "float,Array": (lambda M, b: UFUNC2[name](c, b), [y]),
             "Array,int": (lambda M, a: UFUNC2[name](a, c), [x]),
             "x,x": (lambda M, a: UFUNC2[name](a, a), [x]),
             "Array,ndarray": (lambda M, a: UFUNC2[name](a, y), [x]),
             "ndarray,Array": (lambda M, b: UFUNC2[name](x, b), [y])}
    f, xs = forms[kinds]
    seed = rng.standard_normal((2, 3))
    results = []
    for M in (fad, ref):
        with route(fast) if M is fad else contextlib.nullcontext():
            leaves = [M.Array(v) for v in xs]
            out = f(M, *leaves)
            out.backward(seed=seed)
        results.append((out.value, [lf.grad for lf in leaves]))
    (v1, g1), (v2, g2) = results
    np.testing.assert_array_equal(v1, UFUNC2[name](*[c if isinstance(v, (int, float)) else v for v in
                                                     {"Array,Array": (x, y), "Array,float": (x, c),
                                                      "float,Array": (c, y), "Array,int": (x, c),
                                                      "x,x": (x, x), "Array,ndarray": (x, y),
                                                      "ndarray,Array": (x, y)}[kinds]]))
    np.testing.assert_allclose(v1, v2, rtol=1e-14)
    for p, q in zip(g1, g2):
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("fast", [True, False], ids=["C route", "general route"])
@pytest.mark.parametrize("name", sorted(UNARY_UFUNC))
def test_same_shape_unary_routes_agree_with_the_reference(name, fast):
    from fastad import reference as ref
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = draw(rng, (3, 2), _ops.BY_NAME[name].domain, 0.05 if name in KINKS else None)
    seed = rng.standard_normal((3, 2))
    results = []
    for M in (fad, ref):
        with route(fast) if M is fad else contextlib.nullcontext():
            a = M.Array(x)
            out = UNARY_UFUNC[name](a) if M is fad else getattr(M, name)(a)
            out.backward(seed=seed)
        results.append((out.value, a.grad))
    np.testing.assert_array_equal(results[0][0], UNARY_UFUNC[name](x))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-13, atol=1e-300)


BIAS_SHAPES = {"row (3,)": (3,), "row (1, 3)": (1, 3), "one (1,)": (1,), "same (2, 3)": (2, 3)}


@pytest.mark.parametrize("fast", [True, False], ids=["C route", "general route"])
@pytest.mark.parametrize("order", ["full,bias", "bias,full"])
@pytest.mark.parametrize("bias", sorted(BIAS_SHAPES))
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "arctan2"])
def test_bias_broadcasting_routes_agree_with_the_reference(name, bias, order, fast):
    # A bias row, (n,) or (1, n) against (m, n), repeats with a period in
    # flat order: the C route sweeps it, accumulating the bias's adjoint.
    rng = np.random.default_rng(zlib.crc32(f"{name}/{bias}/{order}".encode()))
    x, y = _binary_inputs(name, rng, (2, 3), BIAS_SHAPES[bias])
    _agrees_with_the_reference(name, (x, y) if order == "full,bias" else (y, x),
                               rng.standard_normal((2, 3)), fast)


def _agrees_with_the_reference(name, args, seed, fast):
    """UFUNC2[name] of Arrays of args, swept with seed by the route `fast`
    picks: NumPy's value, and the reference's gradients in their shapes."""
    from fastad import reference as ref
    results = []
    for M in (fad, ref):
        with route(fast) if M is fad else contextlib.nullcontext():
            leaves = [M.Array(v) for v in args]
            out = UFUNC2[name](*leaves)
            out.backward(seed=seed)
            results.append((out.value, [lf.grad for lf in leaves]))
    np.testing.assert_array_equal(results[0][0], UFUNC2[name](*args))
    for p, q in zip(results[0][1], results[1][1]):
        assert p.shape == q.shape
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-300)


# Against f of shape (2, 3, 4): operands whose non-1 axes are a run of f's
# own (a column, a middle run, a leading run, a period) are walked by the C
# route; the others take the general one.
WALKED = {"column (2, 3, 1)": (2, 3, 1), "middle (3, 1)": (3, 1), "middle (1, 3, 1)": (1, 3, 1),
          "leading (2, 1, 1)": (2, 1, 1), "period (3, 4)": (3, 4), "period (4,)": (4,),
          "one (1, 1, 1)": (1, 1, 1)}
NOT_WALKED = {"gap (2, 1, 4)": (2, 1, 4)}


@pytest.mark.parametrize("fast", [True, False], ids=["C route", "general route"])
@pytest.mark.parametrize("order", ["full,other", "other,full"])
@pytest.mark.parametrize("other", sorted(WALKED) + sorted(NOT_WALKED))
@pytest.mark.parametrize("name", ["sub", "mul", "div", "maximum"])
def test_walked_broadcasts_agree_with_the_reference(name, other, order, fast):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{other}/{order}".encode()))
    x, y = _binary_inputs(name, rng, (2, 3, 4), {**WALKED, **NOT_WALKED}[other])
    args = (x, y) if order == "full,other" else (y, x)
    seed = rng.standard_normal((2, 3, 4))
    if fast and other in NOT_WALKED:  # the C route declines it
        with pytest.raises(AssertionError, match="the general route ran"):
            with route(True):
                UFUNC2[name](*[fad.Array(v) for v in args])
        return
    _agrees_with_the_reference(name, args, seed, fast)


def test_a_column_is_swept_in_c():
    """A keepdims reduction's column against its matrix (log_softmax's x -
    logsumexp(x)): the C route records and sweeps it, with the numbers by hand."""
    a = fad.Array(np.arange(6.0).reshape(2, 3))
    c = fad.Array(np.array([[1.0], [2.0]]))
    with route(True):
        (a * c).sum().backward()
    np.testing.assert_array_equal(c.grad, [[3.0], [12.0]])
    np.testing.assert_array_equal(a.grad, [[1.0] * 3, [2.0] * 3])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the reference's erf at nan
@pytest.mark.parametrize("fast", [True, False], ids=["C route", "general route"])
@pytest.mark.parametrize("name", ["sigmoid", "relu", "erf"])
def test_functions_without_a_ufunc_take_the_c_route_too(name, fast):
    # NumPy has no ufunc for these: the C route computes the value by the
    # scalar rule, as the general route does.
    from fastad import reference as ref
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = draw(rng, (3, 4), offset=0.05)
    x[0, 0] = np.nan
    seed = rng.standard_normal((3, 4))
    results = []
    for M in (fad, ref):
        with route(fast) if M is fad else contextlib.nullcontext():
            a = M.Array(x)
            out = getattr(M, name)(a)
            out.backward(seed=seed)
        results.append((out.value, a.grad))
    np.testing.assert_allclose(results[0][0], UNARY_NUMPY[name](x), rtol=1e-15)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-15)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-13, atol=1e-300)
    assert np.isnan(results[0][0][0, 0])  # nan in, nan out (its gradient: as the reference says)


def test_same_shape_route_accumulates_in_place_beside_other_rules():
    """One array read by C-swept rows, an element loop (whose adjoint the C
    sweep writes through a pointer), a transpose (whose adjoint arrives
    F-ordered, which the C route declines) and a broadcast: every
    contribution lands once."""
    from fastad import reference as ref
    rng = np.random.default_rng(11)
    x0, y0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))

    def f(M, x, y):
        z = M.sin(x * y) + x          # C route, x read twice
        t = (z * 2.0).T               # the adjoint of z * 2.0 arrives F-ordered
        e = x.reshape(-1)[4] * 3.0    # an element of a reshaped x
        b = x * np.ones((2, 3, 3))    # broadcasting: the general route
        return (t * y).sum() + e + b.sum() + (x * x).sum()

    grads = []
    for M in (fad, ref):
        x, y = M.Array(x0), M.Array(y0)
        f(M, x, y).backward()
        grads.append((x.grad, y.grad))
    for p, q in zip(*grads):
        np.testing.assert_allclose(p, q, rtol=1e-13)
    with fad.Tape() as t:
        a = fad.Array(np.arange(4.0))
        s = a[1] * a[2] + (a * a).sum()  # elem rows and a map row on one array
    s.backward()
    np.testing.assert_array_equal(a.grad, 2 * np.arange(4.0) + [0.0, 2.0, 1.0, 0.0])


def test_same_shape_route_copies_ndarray_constants():
    c = np.array([1.0, 2.0, 3.0])
    a = fad.Array(np.array([4.0, 5.0, 6.0]))
    with route(True):
        out = (a * c).sum()
    c[:] = 100.0  # changing the caller's array after recording changes nothing
    out.backward()
    np.testing.assert_array_equal(a.grad, [1.0, 2.0, 3.0])
    assert out.value == 32.0
    with route(True):
        b = fad.Array(np.ones(3))
        ((np.arange(3) + b) * b).sum().backward()  # an int ndarray is a float64 constant
    np.testing.assert_array_equal(b.grad, np.arange(3) + 2.0)


def test_powers_take_the_same_shape_route():
    x = np.array([0.5, 1.5, 2.5])
    with route(True):
        a = fad.Array(x)
        with fad.Tape() as t:
            out = (a ** 2 + a ** 3 + 2.0 ** a).sum()
        out.backward()
    names = [fad.ops.OPS[int(c)].name for op, c in zip(t.rows()["op"], t.rows()["c"])
             if fad.ops.OPS[op].name == "map"]
    assert names == ["square", "power", "add", "power", "add"]
    np.testing.assert_allclose(a.grad, 2 * x + 3 * x ** 2 + np.log(2.0) * 2.0 ** x, rtol=1e-15)


def test_same_shape_route_is_off_under_no_grad_and_debug_nans():
    a = fad.Array(np.array([1.0, 2.0]))
    with fad.no_grad():
        y = a * a
    assert y.is_leaf
    np.testing.assert_array_equal(y.value, [1.0, 4.0])
    fad.debug_nans(True)
    try:
        with np.errstate(invalid="ignore"), pytest.raises(FloatingPointError, match="op 'log' made nan"):
            fad.Array(np.array([-1.0, 2.0])) * 0.0 + np.log(fad.Array(np.array([-1.0, 2.0])))
    finally:
        fad.debug_nans(False)


def test_power_two_is_square_and_integer_powers():
    rng = np.random.default_rng(3)
    x = draw(rng, (4,), (0.5, 2.5))
    out, (g,) = check_grad(lambda a: a ** 2, [x], rng)
    assert_value(out, x ** 2)
    a = fad.Array(x)
    (a ** 2).sum().backward()
    np.testing.assert_allclose(a.grad, 2 * x, rtol=1e-15)
    a = fad.Array(x)
    (a ** 3).sum().backward()
    np.testing.assert_allclose(a.grad, 3 * x ** 2, rtol=1e-14)
    check_grad(lambda a: 2.0 ** a, [x], rng)
    check_grad(lambda a: np.float_power(a, 1.5), [x], rng)


@pytest.mark.parametrize("which", ["where", "clip"])
@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=SEEDS)
def test_where_and_clip_broadcasting(which, shapes, seed):
    rng = np.random.default_rng(seed)
    s0, s1, s2 = shapes.input_shapes
    if which == "where":
        cond = rng.uniform(size=s0) < 0.5
        x, y = draw(rng, s1), draw(rng, s2)
        out, _ = check_grad(lambda a, b: np.where(cond, a, b), [x, y], rng)
        assert_value(out, np.where(cond, x, y))
        out, _ = check_grad(lambda a: fad.where(cond, a, y), [x], rng)
        assert_value(out, np.where(cond, x, y))
        out, _ = check_grad(lambda b: fad.where(cond, 0.5, b), [y], rng)
        assert_value(out, np.where(cond, 0.5, y))
    else:
        x = draw(rng, s0, offset=0.05)
        lo = draw(rng, s1, (-3.0, 0.0), 0.0)
        hi = draw(rng, s2, (0.0, 3.0), 0.0)
        out, _ = check_grad(lambda a: np.clip(a, lo, hi), [x], rng)
        assert_value(out, np.clip(x, lo, hi))
        out, _ = check_grad(lambda a, l, u: fad.clip(a, l, u), [x, lo, hi], rng)
        assert_value(out, np.clip(x, lo, hi))
        out, _ = check_grad(lambda a: a.clip(-1.0, 1.0), [x], rng)
        assert_value(out, np.clip(x, -1.0, 1.0))


@pytest.mark.parametrize("var_first", [True, False], ids=["var-first", "array-first"])
@pytest.mark.parametrize("name", ["maximum", "minimum", "arctan2", "hypot", "power", "where", "clip"])
def test_a_var_with_a_float_array_is_one_array_row(name, var_first):
    # fad.maximum(v, a) is an Array, as np.maximum(v, a) and v * a are, with
    # the reference's values and gradient (it was an object array of Vars)
    from fastad import reference as ref
    a = np.array([0.5, 1.5, 2.5])
    cond = np.array([True, False, True])

    def call(m, v):
        if name == "where":
            return m.where(cond, v, a) if var_first else m.where(cond, a, v)
        if name == "clip":
            return m.clip(a, v, 2.0) if var_first else m.clip(a, 1.0, v)
        f = getattr(m, name)
        return f(v, a) if var_first else f(a, v)

    results = []
    for m in (fad, ref):
        v = m.Var(1.25)
        out = call(m, v)
        assert type(out) is m.Array
        out.backward(seed=np.array([1.0, 2.0, 3.0]))
        results.append((out.value, v.grad))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-14)


def test_where_routes_the_adjoint_exactly():
    a = fad.Array(np.array([1.0, -2.0, 3.0]))
    b = fad.Array(np.array([10.0, 20.0, 30.0]))
    out = np.where(a > 0, a, 0.1 * b)  # condition from a comparison on an Array
    assert_value(out, [1.0, 2.0, 3.0])
    out.backward(seed=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 3.0])
    np.testing.assert_allclose(b.grad, [0.0, 0.2, 0.0], rtol=1e-15)


@pytest.mark.parametrize("engine", ["fastad", "reference"])
def test_clip_with_one_bound_and_numpy_2_names(engine):
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    x = np.array([-1.0, 0.3, 2.0])
    for call in (lambda a: np.clip(a, None, 0.5), lambda a: np.clip(a, min=0.0, max=1.0),
                 lambda a: m.clip(a, 0.0, None), lambda a: a.clip(max=0.5)):
        a = m.Array(x)
        out = call(a)
        np.testing.assert_array_equal(out.value, call(x))
        out.sum().backward()
        np.testing.assert_array_equal(a.grad, (out.value == x).astype(float))
    assert m.clip(m.Var(5.0), None, 1.0).value == 1.0
    with pytest.raises(ValueError, match="bound"):
        m.clip(m.Var(5.0), None, None)


def test_clip_and_maximum_ties_split():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    fad.maximum(a, 2.0).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 1.0])
    a = fad.Array(np.array([-1.0, 0.5, 1.0]))
    np.clip(a, -0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 0.0])  # at hi: a tie with hi


# ---------------------------------------------------------------------------
# 1b. linear algebra
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["v@v", "m@v", "v@m", "m@m", "batched", "batched@v", "v@batched"])
@FEW
@given(dims=st.tuples(*[st.integers(1, 4)] * 3),
       batch=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3), seed=SEEDS)
def test_matmul(form, dims, batch, seed):
    rng = np.random.default_rng(seed)
    n, k, m = dims
    bx, by = batch.input_shapes
    sx, sy = {"v@v": ((k,), (k,)), "m@v": ((n, k), (k,)), "v@m": ((k,), (k, m)),
              "m@m": ((n, k), (k, m)), "batched": (bx + (n, k), by + (k, m)),
              "batched@v": (bx + (n, k), (k,)), "v@batched": ((k,), by + (k, m))}[form]
    x, y = draw(rng, sx), draw(rng, sy)
    want = np.matmul(x, y)
    out, _ = check_grad(lambda a, b: a @ b, [x, y], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda a, b: np.matmul(a, b), [x, y], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda a: a @ y, [x], rng)  # constant right
    assert_value(out, want)
    out, _ = check_grad(lambda b: x @ b, [y], rng)  # plain ndarray on the left
    assert_value(out, want)
    if len(sx) <= 2 and len(sy) <= 2:
        out, _ = check_grad(lambda a, b: np.dot(a, b), [x, y], rng)
        assert_value(out, np.dot(x, y))
        out, _ = check_grad(lambda a, b: a.dot(b), [x, y], rng)
        assert_value(out, np.dot(x, y))


@SETTINGS
@given(dims=st.tuples(*[st.integers(1, 6)] * 3), seed=SEEDS)
def test_matmul_rule(dims, seed):
    rng = np.random.default_rng(seed)
    n, k, m = dims
    W, X = fad.Array(rng.standard_normal((n, k))), fad.Array(rng.standard_normal((k, m)))
    D = W @ X
    assert isinstance(D, fad.Array) and D.shape == (n, m)
    dD = rng.standard_normal((n, m))
    D.backward(seed=dD)
    np.testing.assert_allclose(W.grad, dD @ X.value.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(X.grad, W.value.T @ dD, rtol=1e-12, atol=1e-12)


def test_dot_of_vectors_is_a_scalar():
    a, b = fad.Array(np.array([1.0, 2.0, 3.0])), fad.Array(np.array([4.0, 5.0, 6.0]))
    d = np.dot(a, b)
    assert isinstance(d, fad.Var) and d.value == 32.0
    d.backward()
    np.testing.assert_array_equal(a.grad, [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(b.grad, [1.0, 2.0, 3.0])


def test_outer():
    rng = np.random.default_rng(4)
    x, y = draw(rng, (3,)), draw(rng, (4,))
    out, _ = check_grad(lambda a, b: np.outer(a, b), [x, y], rng)
    assert_value(out, np.outer(x, y))
    out, _ = check_grad(lambda a: np.outer(a, y), [x], rng)
    assert_value(out, np.outer(x, y))
    out, _ = check_grad(lambda b: np.outer(x, b), [y], rng)
    assert_value(out, np.outer(x, y))


EINSUMS = [
    ("ij,jk->ik", (2, 3), (3, 4)), ("i,i->", (3,), (3,)), ("ij->i", (2, 3), None),
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 2)), ("ij,ij->ij", (2, 3), (2, 3)),
    ("ij,jk", (2, 3), (3, 2)), ("i,j->ij", (3,), (2,)), ("ij->", (2, 3), None),
    ("ij->ji", (2, 3), None), ("ij,k->i", (2, 3), (4,)), ("bij,jk->bki", (2, 3, 4), (4, 5)),
    ("ij,ij->", (3, 2), (3, 2)), ("ij", (2, 3), None), ("ji", (2, 3), None),
]


@pytest.mark.parametrize("engine", ["fastad", "reference"])
@pytest.mark.parametrize("subs, sx, sy", [
    ("ij,jk->ik", (2, 1), (3, 4)), ("ij,jk->ik", (2, 3), (1, 4)), ("bij,bjk->bik", (1, 2, 3), (4, 3, 2)),
    ("ij,ij->i", (2, 1), (2, 5)), ("ij,kj->", (1, 1), (3, 2))])
def test_einsum_over_an_axis_of_size_one_that_broadcasts(engine, subs, sx, sy):
    # the value was right, the backward raised: the size-1 axis was not summed back
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=sx), rng.normal(size=sy)
    w = rng.normal(size=np.einsum(subs, x, y).shape)
    w = float(w) if w.ndim == 0 else w  # (a scalar output is a Var: nothing to sum)

    def f(a, b):
        out = np.einsum(subs, a, b) * w
        return out.sum() if isinstance(out, (np.ndarray, m.Array)) else out

    gx, gy = m.grad(f, argnums=(0, 1))(x, y)
    h = 1e-6
    for g, arg, shape in ((gx, 0, sx), (gy, 1, sy)):
        fd = np.zeros(shape)
        for idx in np.ndindex(shape):
            e = np.zeros(shape)
            e[idx] = h
            args_p, args_m = [x, y], [x, y]
            args_p[arg], args_m[arg] = (x, y)[arg] + e, (x, y)[arg] - e
            fd[idx] = (f(*args_p) - f(*args_m)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("spec,sx,sy", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(spec, sx, sy):
    rng = np.random.default_rng(5)
    x = draw(rng, sx)
    if sy is None:
        out, _ = check_grad(lambda a: np.einsum(spec, a), [x], rng)
        assert_value(out, np.einsum(spec, x))
        return
    y = draw(rng, sy)
    want = np.einsum(spec, x, y)
    out, _ = check_grad(lambda a, b: np.einsum(spec, a, b), [x, y], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda a: np.einsum(spec, a, y), [x], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda b: np.einsum(spec, x, b), [y], rng)
    assert_value(out, want)


def test_einsum_matches_matmul_rule():
    rng = np.random.default_rng(6)
    W, X = fad.Array(rng.standard_normal((3, 4))), fad.Array(rng.standard_normal((4, 2)))
    dD = rng.standard_normal((3, 2))
    np.einsum("ij,jk->ik", W, X).backward(seed=dD)
    np.testing.assert_allclose(W.grad, dD @ X.value.T, rtol=1e-12)
    np.testing.assert_allclose(X.grad, W.value.T @ dD, rtol=1e-12)


# ---------------------------------------------------------------------------
# 1c. reductions
# ---------------------------------------------------------------------------

@st.composite
def shape_and_axis(draw_, max_dims=3):
    shape = draw_(hnp.array_shapes(min_dims=1, max_dims=max_dims, max_side=4))
    nd = len(shape)
    axis = draw_(st.none() | st.integers(-nd, nd - 1) | hnp.valid_tuple_axes(nd, min_size=1))
    return shape, axis, draw_(st.booleans()), draw_(st.booleans())


REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SETTINGS
@given(case=shape_and_axis(), seed=SEEDS)
def test_reduction(name, case, seed):
    shape, axis, keepdims, as_function = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape) if name == "prod" else draw(rng, shape)
    np_fn = REDUCTIONS[name]
    if as_function:
        f = lambda a: np_fn(a, axis=axis, keepdims=keepdims)  # noqa: E731
    else:
        f = lambda a: getattr(a, name)(axis=axis, keepdims=keepdims)  # noqa: E731
    out, _ = check_grad(f, [x], rng)
    assert_value(out, np_fn(x, axis=axis, keepdims=keepdims), rtol=1e-13)


def test_reduction_gradients_exact():
    x = np.arange(6.0).reshape(2, 3) + 1.0
    a = fad.Array(x)
    a.sum(axis=1).backward(seed=np.array([1.0, 2.0]))
    np.testing.assert_array_equal(a.grad, [[1, 1, 1], [2, 2, 2]])
    a = fad.Array(x)
    a.mean(axis=0, keepdims=True).backward(seed=np.array([[3.0, 6.0, 9.0]]))
    np.testing.assert_allclose(a.grad, [[1.5, 3, 4.5], [1.5, 3, 4.5]], rtol=1e-15)
    a = fad.Array(x)
    a.mean().backward()
    np.testing.assert_allclose(a.grad, np.full((2, 3), 1 / 6), rtol=1e-15)
    a = fad.Array(x)
    a.prod(axis=(0, 1)).backward()
    np.testing.assert_allclose(a.grad, 720.0 / x, rtol=1e-15)


def test_max_min_ties_split_evenly():
    a = fad.Array(np.array([1.0, 3.0, 3.0]))
    m = a.max()
    assert m.value == 3.0
    m.backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 0.5])
    a = fad.Array(np.array([[1.0, 1.0, 2.0], [3.0, 0.0, 0.0]]))
    a.min(axis=1).sum().backward()
    np.testing.assert_array_equal(a.grad, [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    a = fad.Array(np.array([[2.0, 1.0], [2.0, 5.0], [2.0, 5.0]]))
    np.max(a, axis=0, keepdims=True).backward(seed=np.array([[3.0, 1.0]]))
    np.testing.assert_array_equal(a.grad, [[1.0, 0.0], [1.0, 0.5], [1.0, 0.5]])
    a = fad.Array(np.full(4, 7.0))
    a.min().backward()
    np.testing.assert_array_equal(a.grad, [0.25] * 4)


def test_prod_with_zeros():
    a = fad.Array(np.array([2.0, 0.0, 3.0]))
    p = a.prod()
    assert p.value == 0.0
    p.backward()
    np.testing.assert_array_equal(a.grad, [0.0, 6.0, 0.0])
    a = fad.Array(np.array([[0.0, 2.0, 3.0], [4.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    a.prod(axis=1).backward(seed=np.ones(3))
    np.testing.assert_array_equal(a.grad, [[6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [6.0, 3.0, 2.0]])
    a = fad.Array(np.array([[0.0, 2.0], [4.0, 5.0]]))
    np.prod(a, axis=0, keepdims=True).backward(seed=np.array([[1.0, 1.0]]))
    np.testing.assert_array_equal(a.grad, [[4.0, 5.0], [0.0, 2.0]])


@pytest.mark.parametrize("shape,axis", [((0, 3), 1), ((3, 0), 0), ((2, 0, 3), 2), ((2, 0, 3), (0, 1)), ((), None)])
def test_prod_gradient_of_empty_and_0d_arrays(shape, axis):
    a = fad.Array(np.full(shape, 2.0))
    p = np.prod(a, axis=axis)
    (p if type(p) is fad.Var else p.sum()).backward()
    r = fad.reference.Array(np.full(shape, 2.0))
    q = np.prod(r, axis=axis)
    (q if type(q) is fad.reference.Var else q.sum()).backward()
    assert a.grad.shape == shape and np.array_equal(a.grad, r.grad)


@pytest.mark.parametrize("fn", ["max", "min"])
def test_extremum_of_data_with_nans_goes_to_the_nans(fn):
    """NumPy's max of data holding a nan is nan: the nans share the adjoint
    (as the reference); no element matched the nan, and 0 / 0 made every
    entry nan."""
    x = np.array([[1.0, math.nan, 3.0, math.nan], [1.0, 2.0, 3.0, 3.0]])
    a, r = fad.Array(x), fad.reference.Array(x)
    getattr(a, fn)(axis=1).sum().backward()
    getattr(r, fn)(axis=1).sum().backward()
    want = [[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.5, 0.5] if fn == "max" else [1.0, 0.0, 0.0, 0.0]]
    assert a.grad.tolist() == want and r.grad.tolist() == want


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # NumPy's own, forward
@pytest.mark.parametrize("x,want", [
    ([1e200, 1e200, 1e-200], [1.0, 1.0, math.inf]),  # the product overflows; the others' do not
    ([math.inf, 2.0], [2.0, math.inf]),
    ([math.inf, 0.0], [0.0, math.inf]),
    ([math.nan, 2.0], [2.0, math.nan]),
])
def test_prod_gradient_is_the_product_of_the_others(x, want):
    """d prod / d x_j is the product of the other factors, also where the
    whole product is inf or nan (f / x_j gave inf / inf = nan, and inf for
    the small factor's neighbours): as the same product written as a chain
    of scalar multiplications, and as the reference."""
    a = fad.Array(np.array(x))
    a.prod().backward()
    np.testing.assert_array_equal(a.grad, want)
    vs = [fad.Var(v) for v in x]
    chain = vs[0]
    for v in vs[1:]:
        chain = chain * v
    chain.backward()
    np.testing.assert_array_equal([v.grad for v in vs], want)
    r = fad.reference.Array(np.array(x))
    r.prod().backward()
    np.testing.assert_array_equal(r.grad, want)


# ---------------------------------------------------------------------------
# 1d. shapes, indexing, joining
# ---------------------------------------------------------------------------

SHAPE_OPS = [
    ("reshape", (2, 3, 2), lambda a: a.reshape(3, 4), lambda x: x.reshape(3, 4)),
    ("reshape tuple", (2, 3, 2), lambda a: a.reshape((4, -1)), lambda x: x.reshape((4, -1))),
    ("np.reshape", (6,), lambda a: np.reshape(a, (2, 3)), lambda x: np.reshape(x, (2, 3))),
    ("ravel", (2, 3), lambda a: a.ravel(), lambda x: x.ravel()),
    ("np.ravel", (2, 3), lambda a: np.ravel(a), lambda x: np.ravel(x)),
    ("flatten", (2, 3), lambda a: a.flatten(), lambda x: x.flatten()),
    (".T", (2, 3), lambda a: a.T, lambda x: x.T),
    (".T 3-d", (2, 3, 4), lambda a: a.T, lambda x: x.T),
    ("transpose()", (2, 3, 4), lambda a: a.transpose(), lambda x: x.transpose()),
    ("transpose axes", (2, 3, 4), lambda a: a.transpose(1, 2, 0), lambda x: x.transpose(1, 2, 0)),
    ("transpose tuple", (2, 3, 4), lambda a: a.transpose((2, 0, 1)), lambda x: x.transpose((2, 0, 1))),
    ("np.transpose", (2, 3, 4), lambda a: np.transpose(a, (0, -1, 1)),
     lambda x: np.transpose(x, (0, -1, 1))),
    ("swapaxes", (2, 3, 4), lambda a: a.swapaxes(0, 2), lambda x: x.swapaxes(0, 2)),
    ("np.swapaxes neg", (2, 3, 4), lambda a: np.swapaxes(a, -1, 0), lambda x: np.swapaxes(x, -1, 0)),
    ("expand_dims", (2, 3), lambda a: np.expand_dims(a, 1), lambda x: np.expand_dims(x, 1)),
    ("expand_dims tuple", (2, 3), lambda a: np.expand_dims(a, (0, -1)),
     lambda x: np.expand_dims(x, (0, -1))),
    ("squeeze", (1, 3, 1), lambda a: a.squeeze(), lambda x: x.squeeze()),
    ("squeeze axis", (1, 3, 1), lambda a: np.squeeze(a, axis=2), lambda x: np.squeeze(x, axis=2)),
]


@pytest.mark.parametrize("name,shape,f,ref", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_ops(name, shape, f, ref):
    rng = np.random.default_rng(8)
    x = draw(rng, shape)
    out, _ = check_grad(f, [x], rng)
    assert_value(out, ref(x))
    # a shape op moves adjoints without arithmetic: the gradient is exact
    a = fad.Array(x)
    o = f(a)
    u = rng.standard_normal(o.shape)
    o.backward(seed=u)
    np.testing.assert_array_equal(a.grad.reshape(-1), _pullback_of_permutation(ref, x, u))


def _pullback_of_permutation(ref, x, u):
    ids = ref(np.arange(x.size, dtype=float).reshape(x.shape)).reshape(-1).astype(int)
    g = np.zeros(x.size)
    np.add.at(g, ids, u.reshape(-1))
    return g


INDEX_KEYS = [
    ((6,), 2), ((6,), -1), ((6,), slice(1, 4)), ((6,), slice(None, None, -1)),
    ((6,), slice(None, None, 2)), ((6,), [0, 0, 1]), ((6,), np.array([5, 0, 5, 5])),
    ((6,), np.array([[0, 1], [1, 2]])), ((6,), [-1, -1, 0]), ((6,), (None, slice(2, None))), ((6,), np.int64(3)), ((6,), None), ((4, 5), Ellipsis),
    ((4, 5), ()),
    ((4, 5), 1), ((4, 5), (1, 2)), ((4, 5), (-1, -2)), ((4, 5), (slice(None), 0)),
    ((4, 5), (Ellipsis, 1)), ((4, 5), (None, slice(1, 3))), ((4, 5), [0, 0, 3]),
    ((4, 5), ([0, 2, 0], [1, 1, 1])), ((4, 5), (slice(1, 3), [4, 4, 0])),
    ((4, 5), np.array([3, 3])), ((4, 5), (slice(None, None, -2), slice(1, None, 2))),
    ((3, 4, 2), (0, slice(None), 1)), ((3, 4, 2), (Ellipsis, [1, 1])),
    ((3, 4, 2), ([0, 0], [1, 1], slice(None))), ((3, 4, 2), (1, 2, 0)),
]


@pytest.mark.parametrize("shape,key", INDEX_KEYS, ids=[f"{len(s)}d-{i}" for i, (s, k) in enumerate(INDEX_KEYS)])
def test_indexing(shape, key):
    rng = np.random.default_rng(9)
    x = draw(rng, shape)
    out, (g,) = check_grad(lambda a: a[key], [x], rng)
    assert_value(out, x[key])
    # exact: the adjoint is scattered back with np.add.at semantics
    a = fad.Array(x)
    o = a[key]
    u = rng.standard_normal(np.shape(o.value))
    o.backward(seed=u if isinstance(o, fad.Array) else float(u))
    want = np.zeros(shape)
    np.add.at(want, key, u)
    np.testing.assert_array_equal(a.grad, want)
    if np.ndim(x[key]) == 0:
        assert isinstance(o, fad.Var)  # an element read is a scalar node


def test_repeated_indices_accumulate():
    a = fad.Array(np.arange(5.0))
    a[[0, 0, 1]].sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 1.0, 0.0, 0.0, 0.0])
    b = fad.Array(np.ones((3, 2)))
    (b[[2, 2, 2, 0]] * np.array([1.0, 10.0])).sum().backward()
    np.testing.assert_array_equal(b.grad, [[1, 10], [0, 0], [3, 30]])


@pytest.mark.parametrize("key", [3, -4, 2 ** 70, -2 ** 70])
def test_an_index_out_of_bounds_is_an_index_error(key):
    # (an int past any C index raised OverflowError on the element fast path)
    for a in (fad.Array(np.ones(3)), fad.Array(np.ones((3, 2)))):
        with pytest.raises(IndexError):
            a[key]


def test_boolean_mask_indexing():
    x = np.array([0.5, -1.0, 2.0, -3.0])
    a = fad.Array(x)
    out = a[a > 0]
    assert_value(out, [0.5, 2.0])
    (out * out).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0, 4.0, 0.0])


@pytest.mark.parametrize("engine", ["fastad", "reference"])
def test_reshape_and_ravel_in_fortran_order(engine):
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    x = np.arange(6.0).reshape(2, 3)
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    for f, want in ((lambda a: np.reshape(a, (3, 2), order="F"), np.reshape(x, (3, 2), order="F")),
                    (lambda a: a.reshape(3, -1, order="F"), x.reshape(3, -1, order="F")),
                    (lambda a: np.ravel(a, order="F").reshape(3, 2), np.ravel(x, order="F").reshape(3, 2)),
                    (lambda a: a.ravel(order="F").reshape(3, 2), x.ravel(order="F").reshape(3, 2))):
        a = m.Array(x)
        out = f(a)
        np.testing.assert_array_equal(out.value, want)
        (out * w).sum().backward()
        # the element of x at each place of the output gets that place's weight
        grad = np.zeros_like(x)
        np.put(grad, f(np.arange(6).reshape(2, 3)).reshape(-1), w.reshape(-1))
        np.testing.assert_array_equal(a.grad, grad)
    with pytest.raises(ValueError, match="order"):
        m.Array(x).reshape(6, order="K")


@pytest.mark.parametrize("engine", ["fastad", "reference"])
def test_an_index_or_mask_changed_after_recording_does_not_change_the_gradient(engine):
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    for make_key in (lambda: np.array([0, 1]), lambda: [0, 1]):
        a = m.Array(np.array([1.0, 2.0, 3.0, 4.0]))
        key = make_key()
        y = a[key]
        key[0], key[1] = 2, 3  # the caller reuses its buffer before the sweep
        (y * y).sum().backward()
        np.testing.assert_array_equal(a.grad, [2.0, 4.0, 0.0, 0.0])
    a = m.Array(np.array([1.0, 2.0, 3.0]))
    mask = np.array([True, False, False])
    y = np.where(mask, a * a, 0.0)
    mask[:] = [False, True, True]
    y.sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 0.0, 0.0])


@pytest.mark.parametrize("engine", ["fastad", "reference"])
def test_axes_out_of_range_raise_value_error(engine):
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    a = m.Array(np.ones((2, 3)))
    for call in (lambda: np.transpose(a, (3, 2)), lambda: a.transpose(0, 2), lambda: np.swapaxes(a, 0, 5),
                 lambda: a.swapaxes(-3, 0)):
        with pytest.raises(ValueError, match="out of bounds"):
            call()
    assert np.transpose(a, (-1, 0)).value.shape == (3, 2)


def test_pow_with_a_modulus_is_refused():
    with pytest.raises(TypeError):
        pow(fad.Array(np.ones(2)), 2, 3)
    with pytest.raises(TypeError):
        pow(fad.Var(2.0), 2, 3)


@pytest.mark.parametrize("shape, axis", [((0,), None), ((0, 3), 0), ((0, 3), 1), ((2, 0), 1), ((2, 0), 0)])
def test_logsumexp_of_empty_arrays(shape, axis):
    from fastad import reference as ref
    x = np.zeros(shape)
    with np.errstate(divide="ignore"):
        want = np.log(np.sum(np.exp(x), axis=axis))  # -inf where the sum is empty
    with np.errstate(divide="raise"):  # the -inf is the answer, not a warning
        for out in (fad.logsumexp(fad.Array(x), axis=axis), ref.logsumexp(ref.Array(x), axis=axis)):
            assert np.shape(out.value) == want.shape
            np.testing.assert_array_equal(out.value, want)
        np.testing.assert_array_equal(fad.logsumexp(x, axis=axis), want)
    f = lambda a: np.sum(fad.logsumexp(a, axis=axis))
    assert fad.grad(f)(x).shape == shape
    assert fad.hessian(f)(x).shape == shape + shape


def test_element_of_an_intermediate_array():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    b = a * a
    y = b[1] * b[2] + b[-1]
    assert isinstance(y, fad.Var) and y.value == 4.0 * 9.0 + 9.0
    y.backward()
    np.testing.assert_allclose(a.grad, [0.0, 2 * 2 * 9, 2 * 3 * 4 + 6], rtol=1e-15)


def test_iterating_yields_scalar_elements():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    parts = list(a)
    assert all(isinstance(p, fad.Var) for p in parts)
    (parts[0] * parts[2]).backward()
    np.testing.assert_array_equal(a.grad, [3.0, 0.0, 1.0])


CONCATS = [((2, 3), (4, 3), 0), ((2, 3), (2, 1), 1), ((2, 3), (2, 2), -1),
           ((2, 3), (5,), None), ((3,), (1,), 0), ((2, 1, 2), (2, 3, 2), 1)]


@pytest.mark.parametrize("sx,sy,axis", CONCATS)
def test_concatenate(sx, sy, axis):
    rng = np.random.default_rng(10)
    x, y, z = draw(rng, sx), draw(rng, sy), draw(rng, sx)
    want = np.concatenate([x, y, z], axis=axis)
    out, _ = check_grad(lambda a, b, c: np.concatenate([a, b, c], axis=axis), [x, y, z], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda a, c: fad.concatenate([a, y, c], axis=axis), [x, z], rng)  # a constant
    assert_value(out, want)
    out, _ = check_grad(lambda b: fad.concatenate((x, b, z), axis=axis), [y], rng)
    assert_value(out, want)


def test_concatenate_scalar_vars_and_arrays():
    v = fad.Var(2.0)
    a = fad.Array(np.array([1.0, 3.0]))
    c = fad.concatenate([a, fad.stack([v]), a * v])
    assert_value(c, [1.0, 3.0, 2.0, 2.0, 6.0])
    c.backward(seed=np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(a.grad, [1.0 + 4 * 2, 2.0 + 5 * 2])
    assert v.grad == 3.0 + 4 * 1.0 + 5 * 3.0
    v = fad.Var(2.0)
    a = fad.Array(np.array([1.0, 3.0]))
    c = np.concatenate([a, v, a])  # a scalar Var joins as one element
    assert_value(c, [1.0, 3.0, 2.0, 1.0, 3.0])
    c.backward(seed=np.arange(5.0))
    np.testing.assert_array_equal(a.grad, [3.0, 5.0])
    assert v.grad == 2.0


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_stack_arrays(axis):
    rng = np.random.default_rng(11)
    x, y, z = draw(rng, (2, 3)), draw(rng, (2, 3)), draw(rng, (2, 3))
    want = np.stack([x, y, z], axis=axis)
    out, _ = check_grad(lambda a, b, c: np.stack([a, b, c], axis=axis), [x, y, z], rng)
    assert_value(out, want)
    out, _ = check_grad(lambda a, c: fad.stack([a, y, c], axis=axis), [x, z], rng)
    assert_value(out, want)


def test_stack_of_scalar_vars():
    v1, v2 = fad.Var(1.5), fad.Var(-2.0)
    s = fad.stack([v1, v2])
    assert isinstance(s, fad.Array) and s.shape == (2,)
    assert_value(s, [1.5, -2.0])
    (s * s * np.array([1.0, 3.0])).sum().backward()
    assert v1.grad == 3.0 and v2.grad == -12.0
    rng = np.random.default_rng(12)
    out, _ = check_grad(lambda p, q: fad.stack([p, 2.0, p * q, fad.sin(q)]) * np.arange(4.0),
                        [0.7, -1.3], rng)
    assert_value(out, [0.0, 2.0, 2 * 0.7 * -1.3, 3 * math.sin(-1.3)])


# ---------------------------------------------------------------------------
# 1e. logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------

def _lse(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    r = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return r if keepdims else (np.squeeze(r, axis=axis) if axis is not None else r.reshape(()))


def test_logsumexp_softmax_do_not_overflow_at_1000():
    x = np.array([1000.0, 1000.0, 999.0])
    a = fad.Array(x)
    lse = fad.logsumexp(a)
    want = 1000.0 + math.log(2.0 + math.exp(-1.0))
    assert float(np.asarray(val(lse))) == pytest.approx(want, rel=1e-15)
    lse.backward()
    sm = np.array([1.0, 1.0, math.exp(-1.0)]) / (2.0 + math.exp(-1.0))
    np.testing.assert_allclose(a.grad, sm, rtol=1e-12)  # exp(x - lse): x - lse loses ~1000 eps
    s = fad.softmax(fad.Array(x))
    np.testing.assert_allclose(s.value, sm, rtol=1e-12)
    ls = fad.log_softmax(fad.Array(x))
    np.testing.assert_allclose(ls.value, np.log(sm), rtol=1e-12)
    big = np.array([[1000.0, -1000.0], [1000.0, 1000.0]])
    for fn in (fad.softmax, fad.log_softmax):
        b = fad.Array(big)
        out = fn(b, axis=1)
        assert np.all(np.isfinite(out.value))
        out.backward(seed=np.array([[1.0, 2.0], [3.0, -1.0]]))
        assert np.all(np.isfinite(b.grad))


@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
def test_softmax_family_gradients(name, axis):
    rng = np.random.default_rng(13)
    x = draw(rng, (3, 4))
    if name == "logsumexp":
        f = lambda a: fad.logsumexp(a, axis=axis)  # noqa: E731
        want = _lse(x, axis)
    else:
        if axis is None:  # the default: the last axis
            f = lambda a: getattr(fad, name)(a)  # noqa: E731
        else:
            f = lambda a: getattr(fad, name)(a, axis=axis)  # noqa: E731
        ls = x - _lse(x, -1 if axis is None else axis, keepdims=True)
        want = np.exp(ls) if name == "softmax" else ls
    out, (g,) = check_grad(f, [x], rng)
    assert_value(out, want, rtol=1e-13)
    # shift invariance: the same gradient 1000 higher (no overflow, no cancellation trouble)
    a = fad.Array(x + 1000.0)
    u = rng.standard_normal(np.shape(want))
    o = f(a)
    o.backward(seed=u if isinstance(o, fad.Array) else float(u))
    b = fad.Array(x)
    o = f(b)
    o.backward(seed=u if isinstance(o, fad.Array) else float(u))
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shift", [1e14, 1e15])  # (x + shift exact: x in multiples of its ulp)
def test_log_softmax_keeps_its_precision_at_any_scale(shift):
    """log_softmax(x + s) = log_softmax(x), to the ulp of the result, not of
    s: x - logsumexp(x) subtracted two numbers near s (logits of 1e14:
    softmax summing to 1.0026; of 1e308: log_softmax 0 for -log 2). The
    same in the reference, in a compiled replay and its scalar twin."""
    import fastad.reference as ref
    x = np.array([[0.0, 0.0, -1.0], [2.0, -3.0, 0.5]])
    want = x - _lse(x, 1, keepdims=True)
    seed = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    for m in (fad, ref):
        a = m.Array(x + shift)
        out = m.log_softmax(a, axis=1)
        np.testing.assert_allclose(out.value, want, rtol=0, atol=1e-15)
        assert m.log_softmax(m.Array(np.array([1e308, 1e308]))).value.tolist() == [-math.log(2.0)] * 2
        out.backward(seed=seed)
        np.testing.assert_allclose(a.grad, seed - np.exp(want) * seed.sum(axis=1, keepdims=True),
                                   rtol=1e-14, atol=1e-15)
    assert abs(fad.softmax(x[0] + shift).sum() - 1.0) < 1e-15
    f = lambda v: (fad.log_softmax(v, axis=1) * seed).sum()  # noqa: E731
    cf = fad.compile(f, x + shift)
    np.testing.assert_array_equal(cf.grad(x + shift), fad.grad(f)(x + shift))
    H, H0 = cf.hessian(x + shift), fad.hessian(f)(x)  # the twin: one Var per number
    np.testing.assert_allclose(np.reshape(H, (6, 6)), np.reshape(H0, (6, 6)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arg", [2.0, np.array(2.0)], ids=["float", "0-d"])
def test_the_softmax_family_of_one_number(arg):
    """logsumexp(v) is v, log_softmax(v) 0, softmax(v) 1 (axis=None): by
    grad, compile, and the scalar twin of hessian and forward mode, which
    raised TypeError (a Var where an object array was expected) before."""
    cases = [(lambda v: fad.logsumexp(v) * v, 4.0, 2.0),
             (lambda v: fad.log_softmax(v, axis=None) + v * v, 4.0, 2.0),
             (lambda v: fad.softmax(v, axis=None) * v * v, 4.0, 2.0)]
    for f, slope, curvature in cases:
        assert float(fad.grad(f)(arg)) == slope and float(fad.compile(f, arg).grad(arg)) == slope
        assert float(fad.hessian(f)(arg)) == curvature
        assert float(fad.jacobian(f, mode="fwd")(arg)) == slope


def test_logsumexp_keepdims():
    rng = np.random.default_rng(14)
    x = draw(rng, (2, 3, 2))
    out, _ = check_grad(lambda a: fad.logsumexp(a, axis=(0, 2), keepdims=True), [x], rng)
    assert_value(out, _lse(x, (0, 2), keepdims=True), rtol=1e-13)


# ---------------------------------------------------------------------------
# 3. mixed graphs: Vars and Arrays in one sweep
# ---------------------------------------------------------------------------

def test_sum_times_var():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    x = fad.Var(4.0)
    y = a.sum() * x
    assert isinstance(y, fad.Var) and y.value == 24.0
    y.backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0, 4.0])
    assert x.grad == 6.0


def test_element_times_var():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    y = fad.Var(5.0)
    z = a[1] * y + a[2]
    z.backward()
    np.testing.assert_array_equal(a.grad, [0.0, 5.0, 1.0])
    assert y.grad == 2.0


def test_vars_inside_array_expressions():
    rng = np.random.default_rng(15)
    x, y = 0.8, -1.1
    av = draw(rng, (2, 3))
    check_grad(lambda x_, y_, a: fad.tanh(x_ * a + y_) * (a - x_), [x, y, av], rng)
    xv, yv = fad.Var(x), fad.Var(y)
    a = fad.Array(av)
    (xv * a + yv).sum().backward()
    assert xv.grad == pytest.approx(av.sum(), rel=1e-14) and yv.grad == 6.0
    np.testing.assert_array_equal(a.grad, np.full((2, 3), x))


def test_numpy_float64_scalars():
    a = fad.Array(np.array([1.0, 2.0]))
    s = np.float64(3.0)
    out = s * a + a * s - a / s + s ** a
    assert isinstance(out, fad.Array)
    assert_value(out, 6.0 * a.value - a.value / 3.0 + 3.0 ** a.value)
    out.sum().backward()
    np.testing.assert_allclose(a.grad, 6.0 - 1 / 3.0 + np.log(3.0) * 3.0 ** a.value, rtol=1e-14)
    x = fad.Var(2.0)
    y = np.float64(3.0) * x * a[0]
    assert isinstance(y, fad.Var) and y.value == 6.0
    y.backward()
    assert x.grad == 3.0


def test_one_backward_fills_every_grad():
    rng = np.random.default_rng(16)
    W, b = fad.Array(rng.standard_normal((3, 2))), fad.Array(rng.standard_normal(3))
    x, s = fad.Var(0.5), fad.Var(1.5)
    h = np.tanh(W @ np.array([1.0, -1.0]) * x + b)
    loss = (h * h).sum() * s + h[0] * x + s
    loss.backward()
    for p in (W, b):
        assert p.grad.shape == p.shape and np.any(p.grad != 0)
    assert x.grad != 0.0 and s.grad != 0.0
    # against finite differences of the whole mixed graph
    check_grad(lambda W_, b_, x_, s_: (lambda h_: (h_ * h_).sum() * s_ + h_[0] * x_ + s_)(
        np.tanh(W_ @ np.array([1.0, -1.0]) * x_ + b_)), [W.value, b.value, 0.5, 1.5], rng)


def test_element_loop_matches_list_of_vars():
    rng = np.random.default_rng(17)
    xs = rng.standard_normal(9)
    a = fad.Array(xs)
    vs = [fad.Var(float(v)) for v in xs]
    with fad.Tape():  # two tapes: each backward() releases its own
        out_a = sum(a[i] * a[i + 1] for i in range(len(xs) - 1)) + fad.sin(a[0]) * a[-1]
    with fad.Tape():
        out_v = sum(vs[i] * vs[i + 1] for i in range(len(xs) - 1)) + fad.sin(vs[0]) * vs[-1]
    assert out_a.value == out_v.value
    out_a.backward()
    out_v.backward()
    np.testing.assert_array_equal(a.grad, [v.grad for v in vs])


def test_intermediate_grad_and_retain_graph():
    a = fad.Array(np.array([1.0, 2.0]))
    z = a * 3.0
    y = (z * z).sum()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(z.grad, [6.0, 12.0])  # an intermediate's adjoint
    np.testing.assert_array_equal(a.grad, [18.0, 36.0])
    y.backward()  # second sweep: leaf grads accumulate
    np.testing.assert_array_equal(a.grad, [36.0, 72.0])


def test_zero_dimensional_arrays():
    z = fad.Array(np.array(2.0))
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    out = (z * a).sum() + z * z
    assert float(val(out)) == 16.0
    out.backward()
    assert z.grad.shape == () and float(z.grad) == 6.0 + 4.0
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 2.0])


# ---------------------------------------------------------------------------
# 4. NumPy dispatch
# ---------------------------------------------------------------------------

def numpy_model(W, b, X):
    """Written for plain NumPy: nothing fastad-specific."""
    h = np.tanh(X @ W + b)
    p = np.exp(h) / np.exp(h).sum(axis=1, keepdims=True)
    return -np.log(p[:, 0] + 1e-3).mean() + (h ** 2).sum(axis=1).mean() + np.abs(W).mean()


def test_plain_numpy_function_runs_on_arrays():
    rng = np.random.default_rng(18)
    W, b, X = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((5, 3))
    want = numpy_model(W, b, X)
    out, _ = check_grad(lambda W_, b_: numpy_model(W_, b_, X), [W, b], rng)
    assert float(out) == pytest.approx(want, rel=1e-13)
    out, _ = check_grad(lambda X_: numpy_model(W, b, X_), [X], rng)
    assert float(out) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("call,match", [
    (lambda a: np.sum(a, out=np.zeros(())), "out= is not supported"),
    (lambda a: np.sum(a, where=np.array([True, False])), "does not support 'where'"),
    (lambda a: np.sum(a, dtype=np.float32), "float64, not float32"),
    (lambda a: np.max(a, initial=5.0), "does not support 'initial'"),
    (lambda a: np.mean(a, out=np.zeros(())), "out= is not supported"),
    (lambda a: np.prod(a, where=np.array([True, False])), "does not support 'where'"),
    (lambda a: np.clip(a, 0.0, 1.0, out=np.zeros(2)), "out= is not supported"),
    (lambda a: np.concatenate([a, a], out=np.zeros(4)), "out= is not supported"),
    (lambda a: np.stack([a, a], dtype=np.float32), "float64, not float32"),
    (lambda a: np.sum(a @ a, where=False), "does not support 'where'"),  # a Var: its own sum
    (lambda a: np.sum(a @ a, out=np.zeros(())), "out= is not supported"),
    (lambda a: np.sum(a @ a, dtype=np.int32), "float64, not int32"),
], ids=["sum-out", "sum-where", "sum-dtype", "max-initial", "mean-out", "prod-where", "clip-out",
        "concatenate-out", "stack-dtype", "var-sum-where", "var-sum-out", "var-sum-dtype"])
def test_numpy_keywords_a_recording_cannot_honour_are_refused(call, match):
    """out=, where=, initial= and a dtype other than float64 were dropped in
    silence (np.sum(a, out=o) left o as it was): now a TypeError."""
    with pytest.raises(TypeError, match=match):
        call(fad.Array(np.array([1.0, 2.0])))
    a = fad.Array(np.array([1.0, 2.0]))  # what stays accepted
    assert np.sum(a, dtype=np.float64).value == 3.0 and np.mean(a, keepdims=True).value.tolist() == [1.5]
    assert np.concatenate([a, a], casting="same_kind").value.tolist() == [1.0, 2.0, 1.0, 2.0]


@pytest.mark.parametrize("call,name", [
    (lambda a: np.sort(a), "sort"), (lambda a: np.cumsum(a), "cumsum"),
    (lambda a: np.linalg.inv(a), "inv"), (lambda a: np.exp2(a), "exp2"),
    (lambda a: np.floor(a), "floor"), (lambda a: np.add.reduce(a), "add"),
    (lambda a: np.argsort(a), "argsort"), (lambda a: np.linalg.norm(a), "norm"),
], ids=["sort", "cumsum", "linalg.inv", "exp2", "floor", "add.reduce", "argsort", "linalg.norm"])
def test_unimplemented_numpy_function_raises(call, name):
    a = fad.Array(np.array([[2.0, 1.0], [1.0, 3.0]]))
    with pytest.raises(TypeError, match=name):
        call(a)


def test_asarray_of_tracked_array_raises():
    a = fad.Array(np.array([1.0, 2.0]))
    for conv in (np.asarray, np.array, lambda v: np.asarray(v, dtype=float)):
        with pytest.raises(TypeError, match=r"\.value"):
            conv(a)
    with pytest.raises(TypeError, match=r"\.value"):
        np.asarray(a * 2.0)


def test_comparisons_return_bool_arrays():
    a = fad.Array(np.array([1.0, 2.0, 3.0]))
    b = fad.Array(np.array([3.0, 2.0, 1.0]))
    x = fad.Var(2.0)
    cases = [(a < b, [True, False, False]), (a <= b, [True, True, False]),
             (a > 2.0, [False, False, True]), (a >= x, [False, True, True]),
             (a == b, [False, True, False]), (a != np.array([1.0, 0.0, 3.0]), [False, True, False]),
             (np.greater(a, 1.5), [False, True, True]), (np.less(a * 1.0, b), [True, False, False]),
             (x < a, [False, False, True]), (2.0 > a, [True, False, False])]
    for got, want in cases:
        assert isinstance(got, np.ndarray) and got.dtype == bool
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("engine", ["fastad", "reference"])
def test_numpy_ufuncs_with_a_var_first(engine):
    from fastad import reference as ref
    m = fad if engine == "fastad" else ref
    # a Var in a 0-d object array keeps its derivative (it was read as a float)
    u, v = m.Var(2.0), m.Var(3.0)
    z = u * np.array(v, dtype=object)
    z.backward()
    assert (u.grad, v.grad) == (3.0, 2.0)
    # a Var first and an Array second: the Array's rules (was a TypeError)
    for ufunc, want, dv in ((np.maximum, [2.0, 3.0], 1.0), (np.add, [3.0, 5.0], 2.0),
                            (np.multiply, [2.0, 6.0], 4.0)):
        v, a = m.Var(2.0), m.Array(np.array([1.0, 3.0]))
        out = ufunc(v, a)
        np.testing.assert_array_equal(out.value, want)
        out.sum().backward()
        assert v.grad == dv


def test_the_hessian_of_a_function_of_a_0d_array():
    f = lambda a: (a * np.array([1.0, 2.0])).sum() * a  # 3 a^2
    x = np.array(1.5)
    assert fad.hessian(f)(x) == 6.0
    assert fad.hvp(f)(x, np.array(1.0)) == 6.0
    assert fad.jvp(f, (x,), (np.array(1.0),))[1] == 9.0


@pytest.mark.parametrize("engine", ["core", "reference"])
def test_fmax_and_fmin_are_refused_not_read_as_maximum(engine):
    """np.fmax skips a nan where maximum keeps it: both engines read it as
    maximum before, a wrong number for any nan ([nan, 1] against 0 gave
    [nan, 1], NumPy [0, 1])."""
    import fastad.reference as ref
    m = fad if engine == "core" else ref
    for v in (m.Array(np.array([np.nan, 1.0])), m.Var(float("nan"))):
        for fn in (np.fmax, np.fmin):
            with pytest.raises(TypeError):
                fn(v, 0.0)


def test_a_numpy_ufunc_of_a_var_and_a_list_reads_the_list_as_an_array():
    x = fad.Var(2.0)
    got = np.maximum(x, [0.0, 3.0])
    assert isinstance(got, fad.Array) and got.value.tolist() == [2.0, 3.0]
    got.sum().backward()
    assert x.grad == 1.0
    assert np.add(x, (1.0, 2.0)).value.tolist() == [3.0, 4.0]
    for bad in ("a", None, 1 + 2j):
        with pytest.raises(TypeError):
            np.add(x, bad)
    assert np.multiply(np.float64(2.0), x).value == 4.0 and np.maximum(x, np.bool_(True)).value == 2.0
    from fractions import Fraction
    assert np.multiply(x, Fraction(1, 2)).value == 1.0 == (x * Fraction(1, 2)).value  # any real number
    assert (fad.Array(np.ones(2)) * Fraction(1, 2)).value.tolist() == [0.5, 0.5]  # an Array too


# ---------------------------------------------------------------------------
# 5. functional API over arrays
# ---------------------------------------------------------------------------

def _fd_grad_check(f, args, grads, rng, h=H):
    """Check a gradient tree (list of ndarrays/floats for args) by projection."""
    vs = [rng.standard_normal(np.shape(x)) for x in args]
    fp = f(*[x + h * v for x, v in zip(args, vs)])
    fm = f(*[x - h * v for x, v in zip(args, vs)])
    fd = (fp - fm) / (2 * h)
    ad = sum(float(np.sum(g * v)) for g, v in zip(grads, vs))
    assert abs(ad - fd) <= RTOL * (1 + abs(fd))


def test_grad_of_ndarray_argument():
    rng = np.random.default_rng(19)
    x = rng.standard_normal((3, 2))
    f = lambda a: (np.sin(a) * a).sum() + a[0, 1] * a[2, 0]  # noqa: E731
    g = fad.grad(f)(x)
    assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == x.shape
    _fd_grad_check(lambda a: float(np.sum(np.sin(a) * a) + a[0, 1] * a[2, 0]), [x], [g], rng)
    v, g2 = fad.value_and_grad(f)(x)
    assert type(v) is float and v == pytest.approx(float(np.sum(np.sin(x) * x) + x[0, 1] * x[2, 0]))
    np.testing.assert_array_equal(g, g2)


def test_grad_of_parameter_dict_and_lists():
    rng = np.random.default_rng(20)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    X = rng.standard_normal((5, 3))

    def loss(p, X):
        return (np.tanh(X @ p["W"] + p["b"]) ** 2).mean()

    value, g = fad.value_and_grad(loss)(params, X)
    assert type(g) is dict and set(g) == {"W", "b"}
    for k in params:
        assert isinstance(g[k], np.ndarray) and g[k].dtype == np.float64 and g[k].shape == params[k].shape
    plain = lambda W, b: float(np.mean(np.tanh(X @ W + b) ** 2))  # noqa: E731
    assert value == pytest.approx(plain(params["W"], params["b"]), rel=1e-13)
    _fd_grad_check(plain, [params["W"], params["b"]], [g["W"], g["b"]], rng)
    # lists of arrays, and two argnums
    gl, gX = fad.grad(lambda ps, X: loss({"W": ps[0], "b": ps[1]}, X), argnums=(0, 1))(
        [params["W"], params["b"]], X)
    assert type(gl) is list
    np.testing.assert_allclose(gl[0], g["W"], rtol=1e-13)
    np.testing.assert_allclose(gl[1], g["b"], rtol=1e-13)
    assert gX.shape == X.shape and gX.dtype == np.float64
    _fd_grad_check(lambda X_: float(np.mean(np.tanh(X_ @ params["W"] + params["b"]) ** 2)),
                   [X], [gX], rng)


def test_integer_arrays_are_taken_as_float64():
    x = np.arange(4)
    g = fad.grad(lambda a: (a * a).sum())(x)
    assert g.dtype == np.float64 and g.shape == (4,)
    np.testing.assert_array_equal(g, 2.0 * x)
    a = fad.Array(np.array([1, 2], dtype=np.int32))
    assert a.value.dtype == np.float64
    g = fad.grad(lambda p: p["k"].sum() * 2.0)({"k": np.ones((2, 2), dtype=np.uint8)})
    assert g["k"].dtype == np.float64
    np.testing.assert_array_equal(g["k"], np.full((2, 2), 2.0))


@pytest.mark.parametrize("bad", [
    np.array([1.0, "a"], dtype=object), np.array(["a", "b"]), np.array([1 + 2j, 3.0]),
    np.array([fad.Var(1.0), fad.Var(2.0)], dtype=object), np.array([True, False]),
], ids=["object", "str", "complex", "object of Vars", "bool"])
def test_bad_array_arguments_raise_type_error(bad):
    with pytest.raises(TypeError):
        fad.grad(lambda a: a.sum())(bad)
    with pytest.raises(TypeError):
        fad.value_and_grad(lambda p: p["x"].sum())({"x": bad})


@pytest.mark.parametrize("f", [
    lambda a: np.tanh(a) * 2.0 + np.log(a) * a,
    lambda a: np.tanh(a) * a.sum() + np.log(a),  # an array times a scalar Var
], ids=["elementwise", "array-times-scalar"])
def test_vjp_with_ndarray_argument(f):
    rng = np.random.default_rng(21)
    x = rng.uniform(0.5, 1.5, 4)
    out, pullback = fad.vjp(f, x)
    np.testing.assert_allclose(np.asarray(out, float), f(x), rtol=1e-13)
    u = rng.standard_normal(4)
    (g,) = pullback(u)
    assert np.shape(g) == (4,)
    v = rng.standard_normal(4)
    fd = np.sum(u * (f(x + H * v) - f(x - H * v))) / (2 * H)
    assert float(np.sum(np.asarray(g) * v)) == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_functional_output_rules_with_arrays():
    # a one-element Array output is a scalar; a larger one points to jacobian
    g = fad.grad(lambda a: (a * a).sum(keepdims=True))(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(g, [2.0, 4.0])
    with pytest.raises(ValueError, match="jacobian"):
        fad.grad(lambda a: a * 2.0)(np.ones(3))
    # an argument the output does not depend on gets a zero array of its shape
    g = fad.grad(lambda a, b: (a * 2.0).sum(), argnums=1)(np.ones(3), np.ones((2, 2)))
    assert g.shape == (2, 2) and g.dtype == np.float64 and not g.any()
    v, g = fad.value_and_grad(lambda a: 5.0)(np.ones(3))
    assert v == 5.0 and g.shape == (3,) and not g.any()


def test_jacobian_of_array_function():
    x = np.array([0.3, -0.4, 1.1])
    J = fad.jacobian(lambda a: np.tanh(a) * 2.0 + a[::-1])(x)
    assert J.shape == (3, 3)
    np.testing.assert_allclose(J, np.diag(2.0 / np.cosh(x) ** 2) + np.eye(3)[::-1], rtol=1e-13)


def test_no_grad_records_nothing():
    a = fad.Array(np.array([1.0, 2.0]))
    with fad.no_grad():
        b = np.exp(a) * 2.0 + a.sum()
    assert b.is_leaf and b.tape is None
    np.testing.assert_allclose(b.value, 2.0 * np.exp([1.0, 2.0]) + 3.0, rtol=1e-15)



def test_a_copy_of_a_recorded_array_is_itself_and_of_a_leaf_a_new_leaf():
    """As for a Var (tests/test_core.py): a recorded array's copy is itself,
    so the derivative goes through; a leaf's copy has its own value and grad."""
    g = fad.grad(lambda a: (copy.copy(a * 1.0) * a).sum())(np.array([1.0, 2.0]))
    assert g.tolist() == [2.0, 4.0]
    a = fad.Array(np.array([1.0, 2.0]))
    a.grad = np.array([0.5, 0.25])
    c = copy.deepcopy(a)
    assert c is not a and c.is_leaf and c.value.tolist() == [1.0, 2.0] and c.grad.tolist() == [0.5, 0.25]
    assert not np.shares_memory(c.value, a.value) and not np.shares_memory(c.grad, a.grad)


# ---------------------------------------------------------------------------
# 6. errors
# ---------------------------------------------------------------------------

def test_shapes_that_do_not_broadcast_raise_value_error():
    a, b = fad.Array(np.ones(3)), fad.Array(np.ones(4))
    for op in (lambda: a + b, lambda: a * np.ones(4), lambda: np.ones((2, 4)) - a,
               lambda: fad.maximum(a, b), lambda: a @ b, lambda: fad.Array(np.ones((2, 3))) @ a.reshape(1, 3),
               lambda: np.where(np.ones(4, bool), a, 0.0), lambda: np.concatenate([a.reshape(3, 1), np.ones((2, 2))]),
               lambda: a.reshape(2, 2)):
        with pytest.raises(ValueError):
            op()


def test_math_functions_of_a_var_and_a_0d_array_are_one_scalar_row():
    v = fad.Var(1.0)
    y = fad.maximum(v, np.array(2.0)) * fad.clip(v, np.array(0.0), np.array(0.5)) + fad.hypot(np.array(3.0), v)
    assert type(y) is fad.Var
    y.backward()
    assert y.value == 2.0 * 0.5 + math.hypot(3.0, 1.0)
    assert v.grad == pytest.approx(1.0 / math.hypot(3.0, 1.0), rel=1e-15)  # the clip is flat at its bound


@pytest.mark.parametrize("flag", [np.bool_(True), np.array(True)], ids=["np.bool_", "0-d bool array"])
def test_a_numpy_bool_is_a_number_to_the_math_functions_as_to_numpy(flag):
    # fad.maximum(v, np.bool_) refused it, where v * np.bool_, np.maximum and the reference take 1.0
    from fastad import reference as ref
    for M in (fad, ref):
        v = M.Var(0.5)
        y = M.maximum(v, flag) + M.minimum(v, flag)
        y.backward()
        assert (y.value, v.grad) == (1.5, 1.0)


@pytest.mark.parametrize("call", [
    lambda: fad.maximum(fad.Var(1.0), None),  # was Var(1.0): None read as "no second operand"
    lambda: fad.maximum(1.0, None),  # was array(1.0)
    lambda: fad.maximum(1.0, np.array([None])),
    lambda: fad.hypot(None, 2.0),
    lambda: fad.maximum(fad.Var(1.0), "a"),  # was a RecursionError
    lambda: fad.maximum(fad.Var(1.0), np.array(["a"])),
    lambda: fad.arctan2(np.array(["a"]), fad.Var(1.0)),
    lambda: fad.sin(None),
    lambda: fad.sin(np.array([None, 1.0])),
], ids=["var-none", "float-none", "float-none-array", "none-float", "var-str", "var-str-array",
        "str-array-var", "unary-none", "unary-none-array"])
def test_math_functions_refuse_what_is_no_number(call):
    with pytest.raises(TypeError, match="takes real numbers"):
        call()


def test_bad_array_construction_raises_type_error():
    for bad in ("a", np.array(["a"]), np.array([1j]), 1 + 2j, np.array([None, 1.0]),
                [fad.Var(1.0)], None):
        with pytest.raises(TypeError):
            fad.Array(bad)
    a = fad.Array(np.ones(2))
    with pytest.raises(TypeError):
        a + np.array([1j, 2j])
    with pytest.raises(TypeError):
        a * "x"


def test_backward_of_multi_element_array_needs_seed():
    a = fad.Array(np.ones((2, 2)))
    with pytest.raises(ValueError, match="seed"):
        (a * 2.0).backward()
    one = (a * 2.0)[0:1, 0:1]  # a one-element array needs no seed
    one.backward()
    np.testing.assert_array_equal(a.grad, [[2.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("fn", ["sum", "mean", "max", "min", "prod"])
def test_reduction_axes_are_checked_as_numpy_does(fn):
    a = fad.Array(np.ones((2, 3)))
    for axis in (2, -3, 5, (0, 2)):
        with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else np.AxisError,
                           match="out of bounds for array of dimension 2"):
            getattr(a, fn)(axis=axis)
    with pytest.raises(ValueError, match="repeated axis"):
        getattr(a, fn)(axis=(0, -2))
    assert_value(getattr(a, fn)(axis=(0, -1)), getattr(np.ones((2, 3)), fn)(axis=(0, 1)))


def test_mixing_tapes_raises():
    a = fad.Array(np.ones(2))
    with fad.Tape():
        inner = a * 2.0
    outer = a * 3.0
    with pytest.raises(fad.FastADError):
        inner + outer
    with pytest.raises(fad.FastADError):
        np.stack([inner, outer])
    x = fad.Var(1.0)
    with fad.Tape():
        xv = x * 1.0
    with pytest.raises(fad.FastADError):
        outer * xv


def test_consumed_tape_raises():
    a = fad.Array(np.array([1.0, 2.0]))
    z = a * a
    y = z.sum()
    y.backward()
    with pytest.raises(fad.FastADError):
        y.backward()
    with pytest.raises(fad.FastADError):
        z + 1.0
    with pytest.raises(fad.FastADError):
        z[0] * 2.0
    with pytest.raises(fad.FastADError):
        z.backward(seed=np.ones(2))
    # the leaf itself records again on a fresh tape
    w = (a * 3.0).sum()
    w.backward()
    np.testing.assert_array_equal(a.grad, [2.0 + 3.0, 4.0 + 3.0])


def test_grad_setter_checks_shape_and_leaf():
    a = fad.Array(np.ones(3))
    a.grad = np.zeros(3)
    with pytest.raises(ValueError):
        a.grad = np.zeros(2)
    z = a * 2.0
    with pytest.raises(fad.FastADError):
        z.grad = np.zeros(3)


# ---------------------------------------------------------------------------
# 7. memory
# ---------------------------------------------------------------------------

def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_zeroing_grad_by_assignment():
    a = fad.Array(np.array([1.0, 2.0]))
    (a * a).sum().backward()
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad, [4.0, 8.0])  # accumulated
    a.grad = np.zeros(2)
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 4.0])
    a.grad = None  # zeroed without an array: reads as zeros, then takes the next sweep's gradient
    np.testing.assert_array_equal(a.grad, [0.0, 0.0])
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 4.0])


def test_adjoint_arrays_handed_over_without_copies_are_not_shared():
    # backward() gives each leaf its adjoint array and keeps a rule's fresh
    # result without copying it: no two rows or leaves may end up sharing one.
    W = fad.Array(np.arange(6.0).reshape(2, 3))
    x = fad.Array(np.array([1.0, -1.0, 2.0]))
    with fad.Tape():
        y = W @ x                     # matmul: fresh adjoints for W and x
        z = (y * y).sum() + (W * 2.0).sum() + (x @ x)
    z.backward(retain_graph=True)
    gW, gx, gy = W.grad, x.grad, y.grad
    want_W = 2 * np.outer(W.value @ x.value, x.value) + 2.0
    want_x = 2 * W.value.T @ (W.value @ x.value) + 2 * x.value
    np.testing.assert_allclose(gW, want_W)
    np.testing.assert_allclose(gx, want_x)
    gW[:] = 0.0                       # the user's array: changing it touches nothing else
    np.testing.assert_allclose(y.grad, gy)
    z.backward()                      # a second sweep accumulates into new arrays
    np.testing.assert_allclose(W.grad, want_W)  # 0 (set above) + want_W
    np.testing.assert_allclose(x.grad, 2 * want_x)
    assert W.grad is not gW and x.grad is not gx


def test_numpy_mlp_training_memory_is_flat():
    rng = np.random.default_rng(22)
    X = rng.standard_normal((32, 4))
    Y = np.sin(X.sum(axis=1, keepdims=True))
    shapes = {"W1": (4, 16), "b1": (16,), "W2": (16, 1), "b2": (1,)}
    params = {k: fad.Array(0.5 * rng.standard_normal(s)) for k, s in shapes.items()}
    losses, rss, tapes = [], {}, set()
    gc.collect()
    for step in range(1, 201):
        for k, p in params.items():
            p.grad = np.zeros(shapes[k])
        h = np.tanh(X @ params["W1"] + params["b1"])
        loss = ((h @ params["W2"] + params["b2"] - Y) ** 2).mean()
        loss.backward()
        losses.append(loss.value)
        params = {k: fad.Array(p.value - 0.1 * p.grad) for k, p in params.items()}
        if step in (50, 200):
            gc.collect()
            rss[step] = _rss()
        if step % 40 == 0:
            tapes.add(sum(type(o) is fad.Tape for o in gc.get_objects()))
    assert losses[-1] < 0.5 * losses[0]  # it trained: the loop did real work
    assert max(tapes) <= 2  # no step's tape (and its arrays) survives the step
    assert rss[200] - rss[50] < 8 << 20, f"RSS grew by {(rss[200] - rss[50]) >> 10} KiB"


# ---------------------------------------------------------------------------
# the reference engine
# ---------------------------------------------------------------------------

REFERENCE_EXPRS = {
    "tanh-matvec": lambda M, W, x, b, s: (M.tanh(W @ x + b) ** 2).sum() * s,
    "mean-max-fancy-index": lambda M, W, x, b, s: (W * W).mean(axis=1).max() + (x[[0, 0, 2]] * b).sum(),
    "transpose-prod-min": lambda M, W, x, b, s: M.exp(W.T @ b).prod() + M.sigmoid(x).min() * s,
    "log-abs-sum-axis": lambda M, W, x, b, s: (M.log(M.abs(W) + 1.0).sum(axis=0) * x).sum() / b[1],
    "softmax-family": lambda M, W, x, b, s: (M.logsumexp(W * 300.0, axis=1) @ b
                                             + M.softmax(W, axis=0)[1, 2] + M.log_softmax(x * s).sum()),
    "einsum-where": lambda M, W, x, b, s: np.einsum("ij,j->i", W, x) @ b
    + np.where(x > 0, x, 0.1 * x).sum() + np.einsum("ij,ik->jk", W, W).sum(),
    "stack-concatenate": lambda M, W, x, b, s: (M.concatenate([x, b * s]) ** 3).sum()
    + (M.stack([x[0], b[1] * s, s]) * np.array([1.0, 2.0, 3.0])).prod()
    + np.stack([W, W * W], axis=-1).sum(axis=(0, 2)).max(),
    "elements-clip-shapes": lambda M, W, x, b, s: sum(x[i] * x[i + 1] for i in range(3)) * s
    + np.clip(W, -0.5, 0.5).reshape(-1)[::2].sum() + np.maximum(W, 0.1).swapaxes(0, 1)[0].sum()
    + np.expand_dims(b, 0).squeeze().mean(),
    "batched-matmul-broadcast": lambda M, W, x, b, s: ((W[None] @ np.ones((2, 4, 3)))
                                                      / (1.0 + b[:, None] ** 2)).sum()
    + (np.outer(x, b) - b).min(axis=0, keepdims=True).sum(),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_EXPRS))
def test_reference_engine_arrays(name):
    """The pure-Python reference and the compiled core agree to 1e-12."""
    from fastad import reference as ref
    rng = np.random.default_rng(23)
    W0, x0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(3)
    results = []
    for M in (fad, ref):
        W, x, b, s = M.Array(W0), M.Array(x0), M.Array(b0), M.Var(1.3)
        out = REFERENCE_EXPRS[name](M, W, x, b, s)
        out.backward()
        results.append((float(np.asarray(out.value)), W.grad, x.grad, b.grad, s.grad))
    (v1, *g1), (v2, *g2) = results
    assert v1 == pytest.approx(v2, rel=1e-12)
    assert any(np.any(g != 0) for g in g1)
    for p, q in zip(g1, g2):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-12)


def test_debug_nans_names_array_ops_forward_and_reverse():
    fad.debug_nans(True)
    try:
        with np.errstate(invalid="ignore"):
            with pytest.raises(FloatingPointError, match="op 'log' made nan"):
                fad.log(fad.Array(np.array([-1.0, 2.0])))
            # (-2) ** 2 is fine forward; d/dy = f log(-2) is nan in the reverse sweep
            z = (fad.Array(np.array([-2.0, 3.0])) ** fad.Array(np.array([2.0, 1.0]))).sum()
            with pytest.raises(FloatingPointError, match="reverse sweep made nan at op 'power'"):
                z.backward()
            a = fad.Array(np.array([1.0, np.nan]))
            (fad.log(a) * 2.0).sum().backward()  # nan in, nan out: not an error
            b, data = fad.Array(np.array([1.0, 2.0])), np.array([np.nan, 3.0])
            np.concatenate([b, data])  # a constant's nan, joined in: not made here (was an error)
            np.stack([b, data])
            # nor in the reverse sweep, where b * data passes a nan back (it raised there)
            assert np.isnan(fad.grad(lambda u: (u * data).sum())(np.ones(2))[0])
    finally:
        fad.debug_nans(False)
    assert np.isnan(a.grad[1]) and a.grad[0] == 2.0


def test_truth_value_and_item_of_a_multi_element_array_are_errors():
    a = fad.Array(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a)
    with pytest.raises(ValueError, match="one-element array"):
        a.item()
    one = fad.Array(np.array([3.0]))
    assert bool(one) is True and one.item().value == 3.0


def test_rows_of_a_mixed_tape_agree_between_engines():
    # An array row's value and adjoint read nan in the float columns of both
    # engines; scalar rows agree.
    from fastad import reference as ref
    out = []
    for M in (fad, ref):
        with M.Tape() as t:
            a = M.Array(np.array([1.0, 2.0, 3.0]))
            s = (a * a).sum() * M.Var(2.0)
        s.backward(retain_graph=True)
        out.append(t.rows())
    (c, r) = out
    assert np.isnan(c["adj"]).tolist() == np.isnan(r["adj"]).tolist()
    assert np.isnan(c["val"]).tolist() == np.isnan(r["val"]).tolist()
    assert np.isnan(c["adj"]).any()
    np.testing.assert_array_equal(c["adj"][~np.isnan(c["adj"])], r["adj"][~np.isnan(r["adj"])])
    np.testing.assert_array_equal(c["op"], r["op"])

"""fastad.compiled: fad.compile (record once, replay in C) and the
transforms built on one recording (jacobian, jvp, vjp, hessian, hvp).

Replays run the same rules (fastad/_rules.pxd) as the tape's own sweep, so
values and gradients are compared with == against fad.grad, not with a
tolerance. Second derivatives are checked against analytic Hessians and,
op by op, against central differences of the gradient.
"""
import collections
import concurrent.futures
import copy
import math
import multiprocessing
import pickle
import sys

import numpy as np
import pytest

import fastad as fad
from fastad import _workloads, compiled
from fastad import ops as fops
from fastad.compiled import CompiledFunction


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def assert_same(got, want, path="result"):
    """Equal trees: same containers, same keys, floats as floats, arrays of
    the same shape, and every number equal (== ; nan matches nan)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{path}: {type(got).__name__}, expected ndarray"
        assert got.shape == want.shape, f"{path}: shape {got.shape}, expected {want.shape}"
        assert got.dtype == np.float64, f"{path}: dtype {got.dtype}"
        assert np.array_equal(got, want, equal_nan=True), f"{path}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{path}: keys {got!r} vs {want!r}"
        for k in want:
            assert_same(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want), f"{path}: {type(got).__name__}, expected {type(want).__name__}"
        assert len(got) == len(want), f"{path}: length {len(got)}, expected {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{k}]")
    else:
        assert type(got) is float, f"{path}: {type(got).__name__} {got!r}, expected a float"
        assert got == want or (math.isnan(got) and math.isnan(want)), f"{path}: {got!r} != {want!r}"


def assert_close(got, want, rtol=1e-13):
    """assert_same up to rounding: same structure, numbers within rtol."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            assert_close(got[k], want[k], rtol)
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_close(g, w, rtol)
    else:
        assert type(got) is type(want)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-15)
        assert np.shape(got) == np.shape(want)


def jitter(tree, rng, scale=0.5):
    """A new tree of the same structure near this one."""
    if isinstance(tree, np.ndarray):
        return tree + rng.uniform(-scale, scale, tree.shape)
    if isinstance(tree, dict):
        return {k: jitter(v, rng, scale) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*[jitter(v, rng, scale) for v in tree])
    if isinstance(tree, (list, tuple)):
        return type(tree)(jitter(v, rng, scale) for v in tree)
    return float(tree + rng.uniform(-scale, scale))


# ---------------------------------------------------------------------------
# 1. compile basics over argument structures
# ---------------------------------------------------------------------------

Point = collections.namedtuple("Point", "x y")


def f_floats(x, y):
    return x * y + fad.sin(x) - fad.exp(y / 3.0) * x


def f_list(xs):
    total = 0.0
    for i in range(len(xs) - 1):
        total = total + fad.tanh(xs[i]) * xs[i + 1] ** 3 + 2.0 / (1.5 + xs[i] * xs[i])
    return total


def f_tuple(t):
    a, b, c = t
    return fad.log1p(a * a) * b - fad.arctan2(c, 2.0 + b * b)


def f_dict(p):
    return p["w"] * p["b"] ** 3 + fad.tanh(p["w"]) - fad.hypot(p["b"], 1.0 + p["w"] * 0.0)


def f_vec(x):
    return np.sum(np.sin(x) * x) + x[0] * x[-1] - np.sum(x * x) / 7.0


def f_mat(M):
    total = 0.0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            total = total + fad.cos(M[i, j]) * (i + 1) - M[i, j] * M[-1 - i, j]
    return total


def f_nested(params, x):
    W, (b0, b1) = params["layer"]
    s = params["s"]
    h = np.tanh(W @ x)  # object arrays of Vars
    return s * (h[0] * b0 + h[1] * b1) + fad.sigmoid(s * b0) + x[0] * h[1]


def f_namedtuple(p):
    return p.x * fad.exp(p.y) - p.y ** 3


RNG0 = np.random.default_rng(0)

STRUCTURES = [
    ("floats", f_floats, (0.7, -1.3), 0),
    ("floats_arg1", f_floats, (0.7, -1.3), 1),
    ("floats_argneg", f_floats, (0.7, -1.3), -1),
    ("floats_both", f_floats, (0.7, -1.3), (0, 1)),
    ("floats_swapped", f_floats, (0.7, -1.3), (1, 0)),
    ("list", f_list, ([0.3, -0.2, 1.1, 0.5, -0.9],), 0),
    ("tuple", f_tuple, ((0.4, 1.2, -0.8),), 0),
    ("dict", f_dict, ({"w": 0.9, "b": -0.4},), 0),
    ("namedtuple", f_namedtuple, (Point(0.5, -0.25),), 0),
    ("vec", f_vec, (RNG0.normal(size=6),), 0),
    ("mat", f_mat, (RNG0.normal(size=(3, 4)),), 0),
    ("nested_params", f_nested,
     ({"layer": [RNG0.normal(size=(2, 3)), (0.3, -0.6)], "s": 1.4}, RNG0.normal(size=3)), 0),
    ("nested_both", f_nested,
     ({"layer": [RNG0.normal(size=(2, 3)), (0.3, -0.6)], "s": 1.4}, RNG0.normal(size=3)), (0, 1)),
    ("nested_x", f_nested,
     ({"layer": [RNG0.normal(size=(2, 3)), (0.3, -0.6)], "s": 1.4}, RNG0.normal(size=3)), 1),
]


@pytest.mark.parametrize("name,f,example,argnums", STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_compile_matches_grad_exactly(name, f, example, argnums):
    cf = fad.compile(f, *example, argnums=argnums)
    assert isinstance(cf, CompiledFunction)
    rng = np.random.default_rng(1)
    grad = fad.grad(f, argnums=argnums)
    vg = fad.value_and_grad(f, argnums=argnums)
    for point in [example] + [tuple(jitter(a, rng) for a in example) for _ in range(12)]:
        want_value, want_grad = vg(*point)
        value = cf(*point)
        assert type(value) is float
        if name.startswith("nested"):  # NumPy's matmul on floats sums in its own order
            assert value == pytest.approx(f(*point), rel=1e-14, abs=1e-14)
        else:  # f on plain numbers runs the same C arithmetic
            assert value == f(*point)
        if name.startswith("nested"):
            # fad.grad records W @ x as one array row (NumPy's matmul, its own
            # summation order); compile records it element by element
            assert_close(cf.grad(*point), grad(*point))
            v2, g2 = cf.value_and_grad(*point)
            assert v2 == pytest.approx(want_value, rel=1e-14, abs=1e-14)
            assert_close(g2, want_grad)
            continue
        assert value == want_value
        assert_same(cf.grad(*point), grad(*point))
        assert_same(cf.grad(*point), want_grad)
        v2, g2 = cf.value_and_grad(*point)
        assert type(v2) is float and v2 == want_value
        assert_same(g2, want_grad)
    assert len(cf.traces) == 1  # smooth: never retraced


def test_compile_docstring_example():
    cf = fad.compile(lambda x: x[0] * x[1] + fad.sin(x[0]), [2.0, 3.0])
    assert cf.grad([2.0, 3.0]) == [2.5838531634528574, 2.0]
    assert cf([1.0, 1.0]) == 1.8414709848078965


def test_numpy_code_fastad_lacks_raises_the_error_fad_grad_gives():
    """An ndarray argument records on Arrays first; a function that fails
    there is recorded again with one Var per number (x.tolist() works that
    way). Where that fails too, compile raises the Arrays' error, the one
    fad.grad raises, not the object array's."""
    f = lambda x: np.linalg.inv(x).sum()  # noqa: E731
    x = np.eye(2) + 1.0
    with pytest.raises(TypeError, match="does not implement numpy.inv") as by_grad:
        fad.grad(f)(x)
    with pytest.raises(TypeError) as by_compile:
        fad.compile(f, x)
    assert str(by_compile.value) == str(by_grad.value)
    listed = fad.compile(lambda x: sum(v * v for v in x.tolist()), np.array([1.0, 2.0]))
    assert listed.grad(np.array([3.0, 4.0])).tolist() == [6.0, 8.0]


def test_integer_inputs_are_taken_as_float():
    cf = fad.compile(lambda x: x[0] * x[1] ** 2, np.array([1, 2]))
    g = cf.grad(np.array([3, 4]))
    assert g.dtype == np.float64 and np.array_equal(g, [16.0, 24.0])
    assert cf.grad(np.array([3.0, 4.0])).tolist() == [16.0, 24.0]


def test_ndarray_arguments_on_the_packed_path():
    """ndarray arguments are packed in C (pack_numbers), beside numbers and
    flat lists: every kind of array the tree walk takes gives fad.grad's
    numbers, an array gradient comes back in the argument's shape, and a
    call's gradient is its own (not a view of the next call's)."""
    def f(s, x, M, xs):
        return s * (x * x).sum() + (M[0] * M[1]).sum() * xs[0] + fad.sin(xs[1])

    M = np.arange(6.0).reshape(2, 3)
    args = (1.5, np.array([0.5, -1.0, 2.0]), M, [0.3, 0.4])
    cf = fad.compile(f, *args, argnums=(0, 1, 2, 3))
    assert cf.traces[0].n_in == 1 + 3 + 6 + 2
    grad = fad.grad(f, argnums=(0, 1, 2, 3))
    for got_args in [args,
                     (2.0, np.array([1, 2, 3]), M.astype(np.int32), [1.0, 2]),  # integer dtypes
                     (0.5, np.arange(6.0)[::2], np.asfortranarray(M) - 1.0, [0.0, 0.0])]:  # strided, F order
        g = cf.grad(*got_args)
        want = grad(*got_args)
        assert g[0] == want[0] and g[3] == want[3]
        for k in (1, 2):
            assert g[k].shape == got_args[k].shape and g[k].dtype == np.float64
            assert np.array_equal(g[k], want[k])
        assert cf(*got_args) == f(*(np.asarray(a, float) if k in (1, 2) else a
                                    for k, a in enumerate(got_args)))
    g1 = cf.grad(*args)[1]
    first = g1.copy()
    cf.grad(2.0, np.ones(3), M, [0.1, 0.2])
    assert np.array_equal(g1, first)
    x = np.array([0.5, -1.0, 2.0])  # one contiguous float64 argument is read in place, never written
    lone = fad.compile(lambda x: (x * x).sum(), x)
    v, g = lone.value_and_grad(x)
    assert x.tolist() == [0.5, -1.0, 2.0] and not np.shares_memory(g, x) and g.tolist() == [1.0, -2.0, 4.0]
    for bad, match in [(np.array([True, False, True]), "dtype bool"),
                       (np.array([1j, 2j, 3j]), "dtype complex"),
                       ([0.5, -1.0, 2.0], r"array\(3,\)")]:  # (another shape records again)
        with pytest.raises(TypeError, match=match):
            cf.grad(1.5, bad, M, [0.3, 0.4])


def test_numpy_scalars_in_lists_are_numbers():
    """list(an_array) holds np.float64s (a float subclass): they are read as
    the floats they are, on the fast path, and gradients come back as
    Python floats, as for a list of floats."""
    cf = fad.compile(lambda x, s: x[0] * x[1] ** 2 * s, [1.0, 2.0], 1.0)
    x, s = list(np.array([3.0, 4.0])), np.float64(0.5)
    assert type(x[0]) is np.float64
    g = cf.grad(x, s)
    assert g == cf.grad([3.0, 4.0], 0.5) == [8.0, 12.0] and all(type(v) is float for v in g)
    assert cf.hessian(x, s).tolist() == [[0.0, 4.0], [4.0, 3.0]]


def test_output_structures_of_call():
    def f(x):
        return {"a": x[0] * x[1], "b": [fad.sin(x[0]), 2.0], "c": np.array([x[1], x[0] * 3.0])}
    cf = fad.compile(f, np.array([1.0, 2.0]))
    out = cf(np.array([0.5, -1.5]))
    assert list(out) == ["a", "b", "c"]
    assert out["a"] == -0.75
    assert out["b"] == [math.sin(0.5), 2.0]
    assert isinstance(out["c"], np.ndarray) and out["c"].tolist() == [-1.5, 1.5]


def test_constant_and_independent_outputs():
    cf = fad.compile(lambda x, y: 3.0 + 0.0 * y, 1.0, 2.0)
    assert cf(5.0, 7.0) == 3.0
    assert cf.grad(5.0, 7.0) == 0.0
    cf = fad.compile(lambda x: 4.5, 1.0)
    assert cf.value_and_grad(2.0) == (4.5, 0.0)
    cf = fad.compile(lambda x: x, 1.0)  # the input itself is the output
    assert cf.value_and_grad(2.5) == (2.5, 1.0)
    cf = fad.compile(lambda xs: xs[1], [1.0, 2.0, 3.0])  # unused inputs: zero
    assert cf.grad([4.0, 5.0, 6.0]) == [0.0, 1.0, 0.0]


def test_repr_names_function_and_rows():
    cf = fad.compile(f_floats, 1.0, 2.0)
    assert "f_floats" in repr(cf) and "rows" in repr(cf) and "1 trace" in repr(cf)


# ---------------------------------------------------------------------------
# 2. guards: branches, kinks, retracing
# ---------------------------------------------------------------------------

def f_if(x):
    if x[0] > x[1]:
        return x[0] * x[1] + fad.sin(x[0])
    elif x[0] * x[1] <= -1.0:
        return x[1] ** 3 - x[0]
    return fad.exp(x[0]) - x[1] * x[1]


def f_while(x):
    y = x
    while y < 10:
        y = y * 1.5
    return y * fad.sin(x)


def f_piecewise(x):
    a, b = x[0], x[1]
    return (fad.abs(a - b) + fad.relu(a) * b + fad.maximum(a, b * b) * 0.5
            - fad.minimum(a * b, 0.25) + fad.clip(a + b, -1.0, 1.0) * a
            + fad.where(a > 0.0, a ** 3, -a) + fad.sign(b) * a * a)


PIECEWISE = {
    "abs": lambda x: fad.abs(x[0] - 0.5) * x[1],
    "relu": lambda x: fad.relu(x[0] * x[1]) + x[1],
    "maximum": lambda x: fad.maximum(x[0], x[1]) * x[0],
    "minimum": lambda x: fad.minimum(x[0] * 2.0, x[1]) - x[1],
    "clip": lambda x: fad.clip(x[0], -0.5, 0.5) * x[1],
    "where": lambda x: fad.where(x[0] < x[1], x[0] * x[1], fad.sin(x[1])),
    "sign": lambda x: fad.sign(x[0]) * x[1] * x[0],
    "abs_operator": lambda x: abs(x[0]) * abs(x[1]),
    "if": f_if,
    "all": f_piecewise,
}

# points on every piece, ties and kinks included
GUARD_POINTS = [np.array(p, float) for p in [
    (0.7, 0.2), (-0.7, 0.2), (0.2, 0.7), (-0.3, -1.2), (2.0, -3.0), (0.5, 0.5), (0.0, 0.0),
    (0.0, 1.0), (1.0, 0.0), (-1.0, -1.0), (0.25, 0.25), (0.5, 1.0), (1.5, 2.0), (-2.0, 0.8),
    (3.0, 3.0), (0.125, 0.25),
]]


@pytest.mark.parametrize("name", list(PIECEWISE))
def test_guarded_functions_match_grad_on_every_branch(name):
    f = PIECEWISE[name]
    cf = fad.compile(f, np.array([0.7, 0.2]))
    grad = fad.value_and_grad(f)
    rng = np.random.default_rng(2)
    points = GUARD_POINTS + [rng.uniform(-2, 2, 2) for _ in range(30)]
    for x in points:
        want_value, want_grad = grad(x)
        assert cf(x) == want_value
        assert_same(cf.grad(x), want_grad, f"grad at {x}")
        v, g = cf.value_and_grad(x)
        assert v == want_value
        assert_same(g, want_grad)
    assert 1 <= len(cf.traces) <= 8


@pytest.mark.parametrize("ufunc", ["maximum", "minimum", "clip"])
def test_numpy_kinks_on_arrays_follow_fad_conventions(ufunc):
    """compile hands f an Array for an ndarray argument (an ArrayTrace
    replays its map rows) and its scalarized twin, for forward mode and
    second order, an object array of Vars. np.maximum / np.minimum / np.clip
    on either must behave as fad.maximum (what fad.grad uses): the same
    gradient away from ties, the 0.5 / 0.5 split on a tie, and nan
    propagation."""
    fn = {"maximum": lambda x: np.maximum(x, 0.25), "minimum": lambda x: np.minimum(x, 0.25),
          "clip": lambda x: np.clip(x, 0.25, 1.0)}[ufunc]

    def f(x):
        return np.sum(fn(x) * x)
    x0 = np.array([0.7, 0.1])
    for cf in (fad.compile(f, x0), CompiledFunction(f, (x0,), scalarize=True)):
        rng = np.random.default_rng(21)
        for _ in range(10):  # away from the kink
            x = rng.uniform(-1, 2, 2)
            assert np.array_equal(cf.grad(x), fad.grad(f)(x)), x
        tie = np.array([0.25, 0.7])
        assert np.array_equal(cf.grad(tie), fad.grad(f)(tie))
        assert cf.grad(tie)[0] == 0.25 * 0.5 + 0.25
        v, g = cf.value_and_grad(np.array([math.nan, 0.5]))
        assert math.isnan(v) and math.isnan(g[0])


@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum], ids=["maximum", "minimum"])
@pytest.mark.parametrize("build", [
    lambda w: np.dot(np.eye(2), w), lambda w: np.concatenate([w, [0.5]]), lambda w: np.stack([w, 2.0 * w]),
    lambda w: np.where(w > 9.0, 0.0, w), lambda w: np.einsum("ij,j->i", np.eye(2), w),
    lambda w: fad.maximum(w, -1.0), lambda w: fad.abs(w),
], ids=["dot", "concatenate", "stack", "where", "einsum", "fad.maximum", "fad.abs"])
def test_a_tie_after_a_numpy_function_splits_in_forward_mode_as_in_reverse(ufunc, build):
    # the twin's NumPy functions (and fastad's) made plain object arrays, where
    # np.maximum ran NumPy's object loop: the whole tangent to one side of a tie
    x = np.array([0.5, 0.0])
    f = lambda w: ufunc(build(w), 0.5)  # noqa: E731
    np.testing.assert_array_equal(fad.jacobian(f, mode="fwd")(x), fad.jacobian(f, mode="rev")(x))


@pytest.mark.parametrize("name", ["abs", "relu", "maximum", "minimum", "clip", "where", "sign", "if"])
def test_piecewise_functions_retrace(name):
    """Each of these has its example on one piece; another piece retraces."""
    f = PIECEWISE[name]
    cf = fad.compile(f, np.array([0.7, 0.2]))
    assert len(cf.traces) == 1
    seen = set()
    for x in GUARD_POINTS:
        cf.grad(x)
        seen.add(len(cf.traces))
    assert max(seen) >= 2, "no input took another branch: the guard was not recorded"


def test_while_loop_matches_grad_and_cache_is_bounded():
    cf = fad.compile(f_while, 2.0)
    assert cf.cache_size == 8
    grad = fad.value_and_grad(f_while)
    # iteration counts 0 .. ~25: many more branches than the cache holds
    xs = [float(x) for x in np.geomspace(0.003, 40.0, 60)]
    lengths = []
    for x in xs:
        v, g = cf.value_and_grad(x)
        assert (v, g) == grad(x), x
        lengths.append(len(cf.traces))
    assert lengths[0] >= 1
    assert max(lengths) == 8 and lengths[-1] == 8
    assert lengths == sorted(lengths)  # grows, then stays at the bound
    # revisiting a cached branch moves it to the front and records nothing
    cf2 = fad.compile(f_while, 2.0)
    cf2.grad(20.0)  # another trip count: a second trace
    assert len(cf2.traces) == 2
    first = cf2.traces[0]
    for x in [2.1, 19.0, 2.2, 21.0, 2.0]:
        assert cf2.grad(x) == fad.grad(f_while)(x)
    assert len(cf2.traces) == 2
    assert cf2.traces[1] is first  # most recently used (x = 2.0's) is in front
    assert cf2.traces[0] is not first


def test_retrace_keeps_most_recent_traces():
    cf = CompiledFunction(f_while, (2.0,), cache_size=3)
    for x in [1.0, 0.5, 0.25, 0.1, 0.05]:  # five trip counts
        cf.grad(x)
    assert len(cf.traces) == 3
    # the oldest (x = 2.0) was evicted: it is recorded again
    cf.grad(2.0)
    assert len(cf.traces) == 3


def test_raise_on_branch_change_names_the_op():
    cf = fad.compile(lambda x: fad.abs(x) * 3.0, 1.0, on_branch_change="raise")
    assert cf.grad(2.0) == 3.0
    with pytest.raises(fad.BranchChanged, match=r"'abs'"):
        cf.grad(-2.0)
    with pytest.raises(fad.BranchChanged, match=r"row \d+"):
        cf(-2.0)
    assert len(cf.traces) == 1
    with pytest.raises(fad.FastADError):  # API.md: fastad's own errors are FastADErrors
        cf.grad(-2.0)

    cf = fad.compile(f_if, np.array([0.7, 0.2]), on_branch_change="raise")
    with pytest.raises(fad.BranchChanged, match=r"'gt'"):
        cf.grad(np.array([0.2, 0.7]))
    cf = fad.compile(f_while, 2.0, on_branch_change="raise")
    with pytest.raises(fad.BranchChanged, match=r"'lt'"):
        cf.value_and_grad(20.0)
    assert cf.grad(2.5) == fad.grad(f_while)(2.5)  # same trip count: fine
    for name, op in [("relu", "relu"), ("maximum", "maximum"), ("minimum", "minimum"),
                     ("sign", "sign"), ("where", "lt")]:
        cf = fad.compile(PIECEWISE[name], np.array([0.7, 0.2]), on_branch_change="raise")
        with pytest.raises(fad.BranchChanged, match=f"'{op}'"):
            for x in GUARD_POINTS:
                cf.grad(x)
    assert issubclass(fad.BranchChanged, Exception)


@pytest.mark.parametrize("name,f,rec,other", [
    ("abs", fad.abs, -1.0, 2.0),
    ("sign", lambda x: fad.sign(x) * x, -1.0, 2.0),
    ("maximum", lambda x: fad.maximum(x, 1.0), 0.5, 2.0),
    ("minimum", lambda x: fad.minimum(x, 1.0), 0.5, 2.0),
    ("maximum_vars", lambda x: fad.maximum(x[0], x[1]), [1.0, 2.0], [3.0, 2.0]),
], ids=["abs", "sign", "maximum", "minimum", "maximum_vars"])
def test_branch_change_from_the_lower_piece(name, f, rec, other):
    """Recorded below the kink (abs at x < 0, maximum when the second
    argument wins), a replay above it is another branch too: "raise"
    raises and "retrace" records a second trace."""
    cf = fad.compile(f, rec, on_branch_change="raise")
    with pytest.raises(fad.BranchChanged, match=name.split("_")[0]):
        cf.grad(other)
    cf = fad.compile(f, rec)
    assert_same(cf.grad(other), fad.grad(f)(other))
    assert len(cf.traces) == 2


@pytest.mark.parametrize("name,f,rec,others", [
    ("math.floor", lambda x: math.floor(x) * x, 1.5, [2.5, -0.5, 1.7]),
    ("int", lambda x: int(x) ** 2 + x, 1.5, [2.5, -1.5]),
    ("float as a constant", lambda x: x * float(x), 2.0, [3.0, -1.0]),
    ("math.isnan", lambda x: x * 0.0 if math.isnan(x) else 2.0 * x, math.nan, [1.0, math.inf]),
    # fad.grad refuses np.floor on an Array; compile records one Var per
    # number then, and NumPy's object loop calls float() on each
    ("np.floor of Vars", lambda a: (np.floor(a) * a).sum(), np.array([1.5, -1.5]),
     [np.array([2.5, 0.5]), np.array([1.2, -1.7])]),
    ("no_grad", lambda x: x * _no_grad(lambda: x * x), 2.0, [3.0, -1.0]),
    ("no_grad comparison", lambda x: x * _no_grad(lambda: 1.0 if x > 1.0 else -1.0), 2.0, [0.5, 3.0]),
    ("no_grad of an Array", lambda a: ((a - _no_grad(lambda: a.mean())) ** 2).sum(), np.array([1.0, 2.0, 4.0]),
     [np.array([3.0, 10.0, -5.0]), np.array([1.0, 2.0, 4.5])]),
    ("no_grad element", lambda a: a[1] * _no_grad(lambda: a[0] * 2.0), np.array([1.0, 2.0]),
     [np.array([3.0, 2.0]), np.array([1.0, 5.0])]),
    # -0.0 == 0.0: the guard on a zero also holds its sign (inf for -inf before)
    ("no_grad at a zero", lambda x: x + _no_grad(lambda: 1.0 / x), 0.0, [-0.0, 2.0]),
    ("float at a zero", lambda x: x * math.copysign(1.0, float(x)), 0.0, [-0.0]),
    ("no_grad at zeros of an Array", lambda a: (a * _no_grad(lambda: np.arctan2(a, -1.0))).sum(),
     np.zeros(2), [np.array([-0.0, 0.0]), np.array([1.0, 0.0])]),
], ids=["math.floor", "int", "float", "math.isnan", "np.floor", "no_grad", "no_grad-compare",
        "no_grad-array", "no_grad-elem", "no_grad-zero", "float-zero",
        "no_grad-array-zeros"])
def test_numbers_taken_out_of_the_tape_are_pinned(name, f, rec, others):
    """float(x) or int(x) hands Python a plain number, which the recording
    then holds as a constant: a replay at another x would reuse it (a wrong
    value and gradient). The conversion records a guard on x's value, so
    such a replay re-records, or raises with on_branch_change="raise". So
    does an op under no_grad (its value is a new leaf: the replay had
    reused 12 for x * (x * x) at 3, where fad.grad gives 27)."""
    def want(x):
        if name == "np.floor of Vars":  # floor's derivative is 0: the gradient is floor(a)
            return float((np.floor(x) * x).sum()), np.floor(x)
        return fad.value_and_grad(f)(x)

    cf = fad.compile(f, rec)
    for x in others:
        v, g = cf.value_and_grad(x)
        assert v == want(x)[0]
        assert_same(g, want(x)[1])
    assert len(cf.traces) > 1
    again = fad.compile(f, rec, on_branch_change="raise")
    with pytest.raises(fad.BranchChanged):
        again.grad(others[0])
    assert_same(again.grad(rec), want(rec)[1])  # at the recorded value no guard fails


def _no_grad(fn):
    with fad.no_grad():
        return fn()


@pytest.mark.parametrize("f,same,x", [
    (lambda x: copy.copy(x) * x, lambda x: x * x, 2.0),
    (lambda a: (copy.deepcopy(a) * a).sum(), lambda a: (a * a).sum(), np.array([1.0, 2.0])),
    (lambda a: a[0] * copy.copy(a[1]) + a[1], lambda a: a[0] * a[1] + a[1], np.array([1.0, 2.0])),
    (lambda p: copy.deepcopy(p)["w"] * p["w"], lambda p: p["w"] * p["w"], {"w": 3.0}),
], ids=["var", "array", "element", "dict"])
def test_a_copy_of_the_argument_is_the_argument(f, same, x):
    """A copy of a leaf is a new leaf (a snapshot), so copy.copy(x) of a
    compiled function's argument froze it (6 for 9 at 3), and x[1] gave
    another gradient compiled (a leaf there) than under fad.grad (a
    recorded element). A function's argument copies as itself: every
    transform differentiates f as the same function without the copy."""
    at = [x, {"w": -1.5}] if isinstance(x, dict) else [x, x * 1.5 + 0.25]
    cf = fad.compile(f, x)
    for y in at:
        assert_same(fad.grad(f)(y), fad.grad(same)(y))
        assert_same(cf.value_and_grad(y), fad.value_and_grad(same)(y))
        if isinstance(y, np.ndarray):
            np.testing.assert_array_equal(fad.hessian(f)(y), fad.hessian(same)(y))


def test_pins_go_on_the_recording_only():
    """Only the arguments and the values recorded from them are pinned:
    a loop under no_grad added two rows an op (a guard on each leaf it had
    made), a swept Array's element read under no_grad raised, and a value of
    a `with fad.Tape()` block inside f had its guard on that tape, where no
    replay looks (12 for 24): now refused."""
    def loop(x):
        with fad.no_grad():
            c = x
            for _ in range(1000):
                c = c * 1.0001
        return x * c
    cf = fad.compile(loop, 1.0)
    assert len(cf.traces[0].op) < 10 and cf(2.0) == loop(fad.Var(2.0)).value
    swept = fad.Array(np.ones(3)) * 2.0
    swept.sum().backward()
    assert fad.compile(lambda x: x * _no_grad(lambda: swept[1]), 3.0)(3.0) == 6.0

    def inner_tape(x):
        with fad.Tape():
            y = x * 2.0
            c = _no_grad(lambda: y * 3.0)
        return x * c
    assert fad.grad(inner_tape)(2.0) == 12.0
    with pytest.raises(fad.FastADError, match="another tape"):
        fad.compile(inner_tape, 1.0)
    cf = fad.compile(lambda x: x * sum(float(x) for _ in range(100)), 2.0)
    assert len(cf.traces[0].op) == 3  # INPUT, mul, one guard: a value is pinned once


@pytest.mark.parametrize("f,x,want", [
    # a compile inside f: pins of f's values and arguments go on f's recording
    (lambda x: (lambda y: x * fad.compile(lambda z: z * float(y), 1.0)(1.0))(x * x), 3.0, 27.0),
    (lambda x: x * fad.jacobian(lambda z: z * float(x))(np.ones(1))[0, 0], 3.0, 9.0),
    (lambda x: x * fad.hessian(lambda z: (z * z).sum() * float(x))(np.ones(1))[0, 0], 3.0, 18.0),
    (lambda x: x * fad.grad(lambda w: w * w * float(x))(1.0), 3.0, 18.0),
    (lambda x: fad.explain(lambda z: z * float(x), 2.0) and x * x, 3.0, 9.0),
    (lambda x: x * _in_a_tape_block(x), 3.0, 12.0),  # a Tape block that reads x, a number from elsewhere
], ids=["compile", "jacobian", "hessian", "grad", "explain", "tape-block"])
def test_pins_inside_transforms_inside_f(f, x, want):
    """Pins were kept for the innermost recording only: the outer one
    replayed stale numbers (12 for 27), or a value of another tape raised
    where it did not read the argument."""
    cf = fad.compile(f, 2.0)
    assert cf(x) == want and cf.grad(x) == fad.grad(f)(x)


def _in_a_tape_block(x):
    with fad.Tape():
        x * 3.0
        return float(fad.Var(2.0) * 2.0)


def test_a_swept_value_compared_in_a_recording_still_guards_the_live_side():
    """A swept graph's value compares as a number, but against a live
    value of the recording the guard is still recorded: a replay where the
    comparison flips re-records (it took the stale branch: 10 for 15)."""
    best = fad.Var(1.0) * 1.0
    best.backward()
    for f in (lambda x: x * 2.0 if x < best else x * 3.0, lambda x: x * 2.0 if best > x else x * 3.0):
        cf = fad.compile(f, 0.5)
        assert cf(5.0) == 15.0 and cf.grad(5.0) == 3.0 and cf(0.25) == 0.5
    bA = fad.Array(np.ones(2)) * 1.0
    bA.sum().backward()
    cg = fad.compile(lambda x: fad.where(x < bA, x * 2.0, x * 3.0).sum(), np.array([0.5, 0.5]))
    assert cg(np.array([5.0, 5.0])) == 30.0 and cg(np.array([0.5, 5.0])) == 16.0


def test_debug_nans_holds_in_compiled_replays():
    """The replays ran in C past debug_nans: cf(-1) of a log gave nan, and
    so did cf.grad of sqrt(x * x) at 0, where fad.grad raises. They raise
    now, naming the op (found by recording f again at those inputs), also
    for grad_batch and array recordings; a nan in is no error. With
    debug_nans off, replays do not check (they run as before)."""
    cf = fad.compile(lambda x: fad.log(x), 1.0)
    cg = fad.compile(lambda x: fad.sqrt(x * x), 1.0)
    ca = fad.compile(lambda a: np.log(a).sum(), np.array([1.0, 2.0]))
    assert math.isnan(cf(-1.0)) and math.isnan(cg.grad(0.0))
    with fad.debug_nans(), np.errstate(invalid="ignore"):  # (NumPy's warning, for the array replay)
        for call in (lambda: cf(-1.0), lambda: cf.grad(-1.0), lambda: cf.value_and_grad(-1.0),
                     lambda: cf.grad_batch(np.array([1.0, -1.0])), lambda: ca(np.array([-1.0, 2.0]))):
            with pytest.raises(fad.NanError, match="'log'"):
                call()
        with pytest.raises(fad.NanError, match="reverse sweep made nan at op 'mul'"):
            cg.grad(0.0)
        assert math.isnan(cf(math.nan))
        # a nan that comes in is no error: a constant, a tangent (the check
        # raised here; and a replay of a scalar output looked at its reverse sweep)
        assert math.isnan(fad.compile(lambda x: x + math.nan, 1.0)(1.0))
        assert np.isnan(fad.compile(lambda a: (a * np.array([1.0, np.nan])).sum(), np.ones(2)).grad(np.ones(2))[1])
        assert math.isnan(fad.vjp(lambda x: x * 2.0, 1.0)[1](math.nan)[0])
        assert math.isnan(fad.jvp(lambda x: x * 2.0, (1.0,), (math.nan,))[1])
        assert math.isnan(fad.compile(lambda x: fad.sqrt(x * x), 1.0)(0.0) * math.nan)
        assert math.isnan(pickle.loads(pickle.dumps(cf))(-1.0))  # no f (a lambda): no op to name
    assert compiled.CompiledFunction._run is compiled._plain_run
    assert math.isnan(cf(-1.0))
    switch = fad.debug_nans(True)
    fad.debug_nans(False)
    for _ in range(2):  # one object, two blocks: each turns it on (the second did not)
        with switch:
            with switch:  # nested, it went back to on, not to what the outer block found
                pass
            with pytest.raises(fad.NanError):
                cf(-1.0)
        assert math.isnan(cf(-1.0))


def test_a_static_argument_pickle_from_before_recordings_loads():
    # its compiled functions were an OrderedDict (and a lock, left out)
    cf = fad.compile(_static_sq, np.ones(3), 2)
    state = cf.__getstate__()
    state["compiled"] = collections.OrderedDict(state["compiled"].by_key)
    old = object.__new__(type(cf))
    old.__setstate__(state)
    assert old(np.arange(3.0), 2) == cf(np.arange(3.0), 2) == 1.0 and old(np.ones(3), 3) == 3.0


def _static_sq(x, k):
    return (x[:k] * x[:k]).sum()


def test_float_outside_compile_records_nothing():
    """Only compile's recordings pin: float(v) elsewhere adds no row (a loop
    of float(loss) grew the thread's tape by a row a call, and a full
    Tape(max_rows) made float raise)."""
    x = fad.Var(2.0)
    assert float(x) == 2.0 and int(x) == 2
    y = x * x
    for _ in range(1000):
        float(y)
    assert len(y.tape) == 2
    with fad.Tape(max_rows=3) as t:
        y = x * x + 1.0
        assert float(y) == 5.0 and int(y) == 5 and len(t) == 3
    y.backward()
    assert float(y) == 5.0 and x.grad == 4.0  # after the sweep too


def _scalar_or_array(a):
    """Element reads only on one branch (a scalar Trace), NumPy array work on
    the other (an ArrayTrace): one compiled function caches both kinds."""
    return (a * a).sum() + a[1] if a[0] > 0 else a[0] * a[1]


def test_a_cache_of_both_trace_kinds():
    """Retracing between a branch that records arrays and one that records
    scalars: every method gives what the uncompiled transforms give, in
    whatever order the branches come, and forward mode and second order
    (which array traces lack) go through the scalarized twin."""
    up, down = np.array([2.0, 1.0, 1.5]), np.array([-2.0, 1.0, 1.5])
    v = np.array([1.0, -1.0, 0.5])
    for first in (up, down):
        for order in ([up, down, up], [down, up, down]):
            cf = fad.compile(_scalar_or_array, first)
            for x in order:
                assert_same(cf.grad(x), fad.grad(_scalar_or_array)(x))
                assert_same(cf.hessian(x), fad.hessian(_scalar_or_array)(x))
                assert_same(cf.hvp(x, v), fad.hvp(_scalar_or_array)(x, v))
                assert_same(cf.jacobian(x, mode="fwd"), fad.jacobian(_scalar_or_array, mode="fwd")(x))
                assert cf.jvp((x,), v) == fad.jvp(_scalar_or_array, (x,), (v,))
            assert {type(t).__name__ for t in cf.traces} == {"Trace", "ArrayTrace"}
    # a dict argument (not packed in C: the tree walk's parts) after an array trace
    f = lambda p: _scalar_or_array(p["a"])  # noqa: E731
    cf = fad.compile(f, {"a": up})
    assert_same(cf.grad({"a": down}), fad.grad(f)({"a": down}))
    # a hessian whose call records the array branch
    cf = fad.compile(_scalar_or_array, down)
    assert_same(cf.hessian(up), fad.hessian(_scalar_or_array)(up))


def test_nan_inputs_propagate():
    cf = fad.compile(lambda x: x[0] * fad.sin(x[1]) + fad.exp(x[0]), [1.0, 2.0])
    v, g = cf.value_and_grad([math.nan, 2.0])
    assert math.isnan(v) and math.isnan(g[0])
    cf = fad.compile(f_piecewise, np.array([0.7, 0.2]))
    for x in [np.array([math.nan, 0.3]), np.array([0.3, math.nan])]:
        v, g = cf.value_and_grad(x)
        assert math.isnan(v)
        want = fad.value_and_grad(f_piecewise)(x)
        assert math.isnan(want[0])
        assert np.array_equal(g, want[1], equal_nan=True)
    assert cf.grad(np.array([0.7, 0.2])) .tolist() == fad.grad(f_piecewise)(np.array([0.7, 0.2])).tolist()
    cfw = fad.compile(f_while, 2.0)
    assert math.isnan(cfw(math.nan))  # nan < 10 is false: the loop ends


# ---------------------------------------------------------------------------
# 3. errors
# ---------------------------------------------------------------------------

def test_wrong_argument_count_and_structure():
    cf = fad.compile(f_list, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"\[float, float, float\]"):
        cf.grad([1.0, 2.0])
    with pytest.raises(TypeError, match=r"\[float, float, float\]"):
        cf([1.0, 2.0, 3.0], 4.0)
    with pytest.raises(TypeError, match=r"\[float, float, float\]"):
        cf()
    with pytest.raises(TypeError):
        cf.grad((1.0, 2.0, 3.0))  # a tuple is not a list
    cf = fad.compile(f_list, [1.0] * 1000)  # a long argument is described in a few characters
    with pytest.raises(TypeError, match=r"^this compiled function takes arguments shaped like "
                                        r"\(\[1000 x float\]\), got \(array\(1000,\)\)$"):
        cf.grad(np.ones(1000))
    cf = fad.compile(f_dict, {"w": 1.0, "b": 2.0})
    with pytest.raises(TypeError, match=r"'w': float, 'b': float"):
        cf.grad({"w": 1.0, "c": 2.0})
    with pytest.raises(TypeError, match=r"'w': float, 'b': float"):
        cf.value_and_grad({"w": 1.0})
    # keys in another order: refused, as a Jacobian's or Hessian's flat axes
    # follow the order recorded, where fad.jacobian's follow the call's
    with pytest.raises(TypeError, match=r"'w': float, 'b': float.*'b': float, 'w': float"):
        cf.hessian({"b": -0.4, "w": 0.9})
    cf = fad.compile(f_vec, np.ones(6))  # (an array of another shape records again: below)
    with pytest.raises(TypeError, match=r"array\(6,\)"):
        cf.grad([1.0] * 6)
    with pytest.raises(TypeError, match=r"array\(6,\)"):
        cf.grad((np.ones(6),))
    cf = fad.compile(f_floats, 1.0, 2.0)
    with pytest.raises(TypeError, match=r"float, float"):
        cf(1.0)
    with pytest.raises(TypeError):
        cf(np.array(["a", "b"]), 2.0)


# Arguments of the recorded structure at other shapes record again, as
# jax.jit traces again; a list's length stays structure (_tree.shapeless).

def _mse(w, X, y):
    return (((X @ w) - y) ** 2).mean()


_DATA = np.random.default_rng(0).random((10, 4))
_W, _XS, _YS = _DATA[0, :3], _DATA[:, :3], _DATA[:, 3]


def test_a_smaller_last_minibatch_records_again():
    cf = fad.compile(_mse, _W, _XS[:5], _YS[:5])
    np.testing.assert_array_equal(cf.grad(_W, _XS[:6], _YS[:6]), fad.grad(_mse)(_W, _XS[:6], _YS[:6]))


def test_the_recording_of_each_shape_is_kept():
    calls = []
    cf = fad.compile(lambda w, X, y: calls.append(1) or _mse(w, X, y), _W, _XS[:5], _YS[:5])
    for _ in range(2):
        cf.grad(_W, _XS[5:10], _YS[5:10])
        cf.grad(_W, _XS[:6], _YS[:6])
    assert len(calls) == 2  # the example, then 6 rows once


def test_recordings_of_other_shapes_are_bounded():
    cf = fad.compile(lambda x: (x * x).sum(), np.ones(1))
    for n in range(2, 20):
        cf.grad(np.ones(n))
    assert len(cf.shapes) == cf.cache_size == 8


_METHODS = {  # (a compiled function's call at args, the same without compile)
    "call": (lambda cf, a: cf(*a), lambda a: _mse(*a)),
    "value_and_grad": (lambda cf, a: np.hstack(cf.value_and_grad(*a)),
                       lambda a: np.hstack(fad.value_and_grad(_mse)(*a))),
    "jacobian": (lambda cf, a: cf.jacobian(*a), lambda a: fad.jacobian(_mse)(*a)),
    "hessian": (lambda cf, a: cf.hessian(*a), lambda a: fad.hessian(_mse)(*a)),
    "hvp": (lambda cf, a: cf.hvp(*a, np.ones(3)), lambda a: fad.hessian(_mse)(*a) @ np.ones(3)),
    "jvp": (lambda cf, a: cf.jvp(a, np.ones(3)), lambda a: fad.jvp(lambda w: _mse(w, *a[1:]), (a[0],),
                                                                  (np.ones(3),))),
    "vjp": (lambda cf, a: cf.vjp(a, 2.0)[1], lambda a: 2.0 * fad.grad(_mse)(*a)),
}


@pytest.mark.parametrize("method", list(_METHODS))
def test_every_method_works_at_another_shape(method):
    """At the recorded shapes first: forward mode and second order record
    an array function again on first use (its twin), at those shapes."""
    compiled, direct = _METHODS[method]
    cf = fad.compile(_mse, _W, _XS[:5], _YS[:5])
    compiled(cf, (_W, _XS[:5], _YS[:5]))
    at_6 = (_W, _XS[:6], _YS[:6])
    np.testing.assert_allclose(compiled(cf, at_6), direct(at_6), rtol=1e-12)


def test_a_cotangent_shaped_like_the_output_at_another_shape():
    # vjp checked the cotangent against the recorded output's shape before
    # it looked at the arguments: (4,) against (3,) was refused
    cf = fad.compile(lambda x: x * 2.0, np.ones(3))
    y, g = cf.vjp((np.ones(4),), np.arange(4.0))
    assert y.tolist() == [2.0] * 4 and g.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_second_order_at_another_shape_first_leaves_the_recorded_shapes_theirs():
    """The twin of an array recording (forward mode, second order) was
    recorded at the first call's arguments, whatever their shapes: after a
    hessian at 6 rows, one at the recorded 5 was refused."""
    cf = fad.compile(_mse, _W, _XS[:5], _YS[:5])
    cf.hessian(_W, _XS[:6], _YS[:6])
    np.testing.assert_allclose(cf.hessian(_W, _XS[:5], _YS[:5]), fad.hessian(_mse)(_W, _XS[:5], _YS[:5]),
                               rtol=1e-12)


def test_grad_batch_at_another_shape():
    cf = fad.compile(lambda x: np.sum(np.sin(x) * x), np.ones(3))
    X = np.random.default_rng(1).random((4, 5))
    np.testing.assert_array_equal(cf.grad_batch(X), np.stack([cf.grad(x) for x in X]))


def test_a_0d_array_stands_for_a_float_and_the_other_way_round():
    assert (fad.compile(lambda x: x * x, 2.0).grad(np.array(3.0)),
            fad.compile(lambda x: x * x, np.array(2.0)).grad(3.0)) == (6.0, 6.0)


def test_a_list_of_another_length_is_still_a_structure_error():
    cf = fad.compile(f_list, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match=r"shaped like \(\[float, float, float\]\), got \(\[4 x float\]\)"):
        cf.grad([1.0, 2.0, 3.0, 4.0])


def test_raise_mode_takes_another_shape_as_no_branch_change():
    cf = fad.compile(lambda x: fad.relu(x).sum(), np.ones(3), on_branch_change="raise")
    assert cf.grad(np.ones(4)).tolist() == [1.0] * 4


def test_raise_mode_still_raises_for_a_branch_change_at_another_shape():
    cf = fad.compile(lambda x: fad.relu(x).sum(), np.ones(3), on_branch_change="raise")
    cf.grad(np.ones(4))
    with pytest.raises(fad.BranchChanged):
        cf.grad(-np.ones(4))


def test_the_recordings_of_other_shapes_travel_in_a_pickle():
    cf = fad.compile(lambda x: (x * x).sum(), np.ones(3))  # (a lambda: no recording after loading)
    cf.grad(np.ones(4))
    assert pickle.loads(pickle.dumps(cf)).grad(np.ones(4)).tolist() == [2.0] * 4


def test_a_new_shape_after_pickling_a_lambda_says_why_it_cannot_record():
    cf = pickle.loads(pickle.dumps(fad.compile(lambda x: (x * x).sum(), np.ones(3))))
    with pytest.raises(TypeError, match=r"array\(5,\)\) need a recording of their own.*did not survive pickling"):
        cf.grad(np.ones(5))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11's")
def test_an_error_of_f_at_another_shape_names_the_shapes():
    cf = fad.compile(_mse, _W, _XS[:5], _YS[:5])
    with pytest.raises(ValueError) as caught:
        cf.grad(_W, _XS[:6, :2], _YS[:6])  # two columns against three weights: matmul refuses
    assert "shaped like (array(3,), array(6, 2), array(6,))" in "".join(caught.value.__notes__)


def test_static_arguments_beside_another_shape():
    cf = fad.compile(lambda x, k: (x ** k).sum(), np.ones(3), 2)
    assert cf.grad(np.full(4, 3.0), 2).tolist() == [6.0] * 4


def test_vector_output_grad_names_jacobian():
    cf = fad.compile(lambda x: [x[0] * x[1], x[0]], [1.0, 2.0])
    for method in (cf.grad, cf.value_and_grad, cf.hessian):
        with pytest.raises(ValueError, match="jacobian"):
            method([1.0, 2.0])
    with pytest.raises(ValueError, match="jacobian"):
        cf.hvp([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="jacobian"):
        cf.grad_batch(np.ones((3, 2)))
    assert cf([2.0, 3.0]) == [6.0, 2.0]  # the value still works


def test_bad_options():
    with pytest.raises(ValueError, match="on_branch_change"):
        fad.compile(f_floats, 1.0, 2.0, on_branch_change="ignore")
    for bad in (2, -3, (0, 2), (), "0", (0.0,)):
        with pytest.raises(ValueError, match="argnums"):
            fad.compile(f_floats, 1.0, 2.0, argnums=bad)
    cf = fad.compile(f_floats, 1.0, 2.0)
    with pytest.raises(ValueError, match="mode"):
        cf.jacobian(1.0, 2.0, mode="sideways")
    cf2 = fad.compile(f_floats, 1.0, 2.0, argnums=(0, 1))
    with pytest.raises(ValueError, match="single argnum"):
        cf2.hvp(1.0, 2.0, 1.0)


def test_hessian_of_several_argnums_is_nested_blocks():
    """H[i][j] = d2f / d arg_i d arg_j, shaped arg_i.shape + arg_j.shape
    (JAX's nesting), in the order argnums names them; the analytic second
    derivatives of f below."""
    def f(x, y, z):
        return x ** 2 * y + fad.sin(y) * z[0] * z[1] + x * z[1]

    x, y, z = 1.5, 0.7, np.array([2.0, 3.0])
    H = fad.hessian(f, argnums=(0, 2))(x, y, z)
    assert len(H) == 2 and all(len(row) == 2 for row in H)
    assert H[0][0].shape == () and H[0][1].shape == H[1][0].shape == (2,) and H[1][1].shape == (2, 2)
    np.testing.assert_allclose(H[0][0], 2 * y, rtol=1e-15)
    assert H[0][1].tolist() == H[1][0].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(H[1][1], [[0.0, math.sin(y)], [math.sin(y), 0.0]], rtol=1e-15)
    swapped = fad.hessian(f, argnums=(2, 0))(x, y, z)
    assert np.array_equal(swapped[0][0], H[1][1]) and np.array_equal(swapped[0][1], H[1][0])
    (Hyy,), = fad.hessian(f, argnums=(1,))(x, y, z)
    np.testing.assert_allclose(Hyy, -math.sin(y) * z[0] * z[1], rtol=1e-14)
    assert np.array_equal(fad.hessian(f, argnums=2)(x, y, z), H[1][1])
    cf = fad.compile(f, x, y, z, argnums=(0, 1, 2))
    full = cf.hessian(x, y, z)
    assert np.array_equal(full[2][2], H[1][1]) and full[0][1] == 2 * x


def test_grad_batch_errors():
    cf = fad.compile(f_vec, np.ones(6))  # (rows of an array of another shape record again)
    square = fad.compile(lambda A: A[0, 0] * A[1, 1], np.ones((2, 2)))
    assert square.grad_batch(np.ones((3, 2, 2))).shape == (3, 2, 2)
    assert square.grad_batch(np.ones((3, 4))).shape == (3, 4)  # flat rows
    assert square.grad_batch(np.ones((0, 3, 3))).shape == (0, 3, 3)  # no rows at another shape: no recording
    with pytest.raises(ValueError, match=r"shape \(B, 2, 2\) or \(B, 4\) \(B rows"):
        square.grad_batch(np.ones(4)[0])
    nested = fad.compile(lambda A: A[0][0] * A[1][1], [[1.0, 2.0], [3.0, 4.0]])  # as np.shape reads it
    assert nested.grad_batch(np.full((3, 2, 2), 2.0)).tolist() == [[[2.0, 0.0], [0.0, 2.0]]] * 3
    one = fad.compile(lambda v: v[0] ** 2, [2.0])
    assert one.grad_batch(np.array([1.0, 3.0])).tolist() == [2.0, 6.0]  # one number: (B,) too
    with pytest.raises(ValueError, match=r"shape \(B, 1\) or \(B,\) \(B rows"):
        one.grad_batch(np.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        cf.grad_batch(np.ones(6)[0])  # 0-d
    with pytest.raises(ValueError, match="threads"):
        cf.grad_batch(np.ones((4, 6)), threads=0)
    with pytest.raises(ValueError, match="threads"):
        cf.grad_batch(np.ones((4, 6)), threads=-2)
    for bad in (1.5, "2", True):  # 1.5 ran on 1 thread, silently
        with pytest.raises(TypeError, match="threads must be an int"):
            cf.grad_batch(np.ones((4, 6)), threads=bad)
    assert cf.grad_batch(np.ones((4, 6)), threads=np.int64(2)).shape == (4, 6)
    with pytest.raises(TypeError, match="dtype"):
        cf.grad_batch(np.array([["a"] * 6]))
    two = fad.compile(f_floats, 1.0, 2.0)
    with pytest.raises(ValueError, match="one argument"):
        two.grad_batch(np.ones((3, 2)))


def test_cotangents_shaped_like_the_output():
    """vjp's cotangent has the output's structure, or any array-like of its
    Jacobian-row shape (a tuple for a list, a list for an ndarray); the
    count alone is not enough."""
    out, pullback = fad.vjp(lambda x, y: [x * y, x + y], 2.0, 3.0)
    assert pullback([1.0, 1.0]) == pullback(np.array([1.0, 1.0])) == pullback((1.0, 1.0)) == (4.0, 3.0)
    _, along = fad.vjp(lambda x: x * 2.0, np.ones(3))
    assert along([1.0, 0.0, 2.0])[0].tolist() == [2.0, 0.0, 4.0]
    for bad in [(1.0, [2.0]), np.ones((2, 1)), [1.0], 1.0]:
        with pytest.raises(TypeError, match=r"cotangent must be shaped like the output, \[float, float\]"):
            pullback(bad)
    _, pullback = fad.vjp(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(TypeError, match=r"array\(3,\), got array\(3, 1\)"):
        pullback(np.ones((3, 1)))


@pytest.mark.parametrize("out", [lambda y: [y], lambda y: (y,), lambda y: {"y": y}], ids=["list", "tuple", "dict"])
def test_a_compiled_gradient_refuses_a_container_of_one_number_as_fad_grad_does(out):
    f = lambda x: out(x * x)  # noqa: E731
    with pytest.raises(ValueError, match="scalar output"):
        fad.grad(f)(2.0)
    cf = fad.compile(f, 2.0)
    for call in (cf.grad, cf.value_and_grad, cf.hessian, lambda x: cf.hvp(x, 1.0)):
        with pytest.raises(ValueError, match="scalar output"):
            call(2.0)
    one = fad.compile(lambda x: np.array([x * x]), 2.0)  # an array of one element is a number to both
    assert one.grad(2.0) == fad.grad(lambda x: np.array([x * x]))(2.0) == 4.0


def test_transforms_name_themselves_and_empty_inputs():
    for transform in (fad.hessian, fad.grad):
        with pytest.raises(ValueError, match=f"^{transform.__name__} needs a function with a scalar output"):
            transform(lambda x: [x, x])(1.0)
    with pytest.raises(ValueError, match="^hvp needs a function with a scalar output"):
        fad.hvp(lambda x: [x, x])(1.0, 1.0)
    for mode in ("auto", "fwd", "rev"):  # no input numbers: an empty Jacobian, not a reshape error
        J = fad.jacobian(lambda x: [1.0, 2.0], mode=mode)(np.zeros(0))
        assert J.shape == (2, 0)
    # second order and forward mode with no input numbers: empty results, not a reshape error
    assert fad.hessian(lambda x: np.sum(x * x))(np.zeros(0)).shape == (0, 0)
    assert np.shape(fad.hessian(lambda x: 1.0)([])) == (0, 0)
    assert np.shape(fad.hvp(lambda x: 1.0)([], [])) == (0,)
    assert fad.jvp(lambda x: 1.0, ([],), ([],)) == (1.0, 0.0)
    assert fad.compile(lambda x: 1.0, []).hessian([]).shape == (0, 0)


def test_tangent_and_direction_structure_errors():
    cf = fad.compile(f_vec, np.ones(6))
    with pytest.raises(TypeError, match="direction"):
        cf.hvp(np.ones(6), np.ones(5))
    with pytest.raises(TypeError, match="tangent"):
        cf.jvp((np.ones(6),), np.ones(3))
    mul = lambda x, y: x * y  # noqa: E731
    for tangents in [(1.0,), (1.0, 1.0, 9.0), ()]:  # one tangent per primal, not zip's shorter
        with pytest.raises(TypeError, match="one tangent per primal"):
            fad.jvp(mul, (2.0, 3.0), tangents)
    both = fad.compile(mul, 2.0, 3.0, argnums=(0, 1))
    with pytest.raises(TypeError, match="one tangent per differentiated argument"):
        both.jvp((2.0, 3.0), (1.0,))
    assert fad.jvp(mul, (2.0, 3.0), (1.0, 1.0)) == (6.0, 5.0)


# ---------------------------------------------------------------------------
# 4. pickling
# ---------------------------------------------------------------------------

def _module_level_piecewise(x):
    return fad.abs(x[0] - x[1]) * x[0] + fad.sin(x[1])


def _worker_grads(cf, points):
    return [cf.grad(p) for p in points], len(cf.traces)


def test_pickle_module_level_function_keeps_retracing():
    cf = fad.compile(_module_level_piecewise, np.array([1.0, 0.5]))
    cf2 = pickle.loads(pickle.dumps(cf))
    assert cf2.f is _module_level_piecewise
    pts = [np.array([1.2, 0.1]), np.array([0.1, 1.2]), np.array([-0.5, 0.3])]
    for p in pts:
        assert_same(cf2.grad(p), cf.grad(p))
        assert_same(cf2.grad(p), fad.grad(_module_level_piecewise)(p))
        assert cf2(p) == cf(p)
    assert len(cf2.traces) == 2  # retraced after unpickling
    cf3 = pickle.loads(pickle.dumps(cf2))  # several traces travel
    assert len(cf3.traces) == 2
    for p in pts:
        assert_same(cf3.grad(p), cf.grad(p))
    assert len(cf3.traces) == 2


def test_pickle_lambda_drops_f_but_replays():
    f = lambda x: fad.abs(x[0]) * x[1] + x[0] * fad.exp(x[1])  # noqa: E731
    cf = fad.compile(f, [1.0, 2.0])
    with pytest.raises(Exception):
        pickle.dumps(f)
    cf2 = pickle.loads(pickle.dumps(cf))
    assert cf2.f is None and cf.f is f  # the original is untouched
    rng = np.random.default_rng(3)
    for _ in range(10):
        p = [float(rng.uniform(0.1, 2)), float(rng.uniform(-2, 2))]
        assert_same(cf2.grad(p), cf.grad(p))
        assert_same(cf2.value_and_grad(p), fad.value_and_grad(f)(p))
        assert_same(cf2.hessian(p), cf.hessian(p))
    with pytest.raises(fad.BranchChanged, match="pickl"):
        cf2.grad([-1.0, 2.0])
    assert "abs" in str(pytest.raises(fad.BranchChanged, cf2, [-1.0, 2.0]).value)
    assert cf.grad([-1.0, 2.0]) == fad.grad(f)([-1.0, 2.0])  # the original retraces


def test_compiled_function_through_process_pool():
    cf = fad.compile(_module_level_piecewise, np.array([1.0, 0.5]))
    rng = np.random.default_rng(4)
    chunks = [[rng.uniform(-2, 2, 2) for _ in range(5)] for _ in range(4)]
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        results = list(pool.map(_worker_grads, [cf] * len(chunks), chunks))
    for chunk, (grads, _) in zip(chunks, results):
        for p, g in zip(chunk, grads):
            assert_same(g, cf.grad(p))
            assert_same(g, fad.grad(_module_level_piecewise)(p))
    # at least one worker saw another branch and retraced there
    assert max(n for _, n in results) >= 2


# ---------------------------------------------------------------------------
# 5. forward mode and Jacobians
# ---------------------------------------------------------------------------

def map_5_to_3(x):
    return [x[0] * x[1] + fad.sin(x[2]),
            fad.exp(x[3] * 0.5) * x[4] - x[0] / (2.0 + x[1] * x[1]),
            fad.tanh(x[1] * x[4]) - fad.log1p(x[2] * x[2]) * x[3]]


def map_5_to_3_np(x):
    return np.array([x[0] * x[1] + np.sin(x[2]),
                     np.exp(x[3] * 0.5) * x[4] - x[0] / (2.0 + x[1] * x[1]),
                     np.tanh(x[1] * x[4]) - np.log1p(x[2] * x[2]) * x[3]])


def central_jacobian(f, x, h=1e-6):
    x = np.asarray(x, float)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        cols.append((np.asarray(f(x + e), float) - np.asarray(f(x - e), float)) / (2 * h))
    return np.stack(cols, axis=-1).reshape(np.shape(f(x)) + x.shape)


N100 = 100
A100 = np.random.default_rng(5).normal(size=(N100, N100)) / math.sqrt(N100)


def tanh_layer_loops(x):
    """x -> tanh(A @ x), Python loops over a list of Vars."""
    out = []
    for i in range(N100):
        s = 0.0
        row = A100[i]
        for j in range(N100):
            s = s + float(row[j]) * x[j]
        out.append(fad.tanh(s))
    return out


def tanh_layer_objects(x):
    """x -> tanh(A @ x) on an object ndarray of Vars."""
    return np.tanh(A100 @ x)


def test_jacobian_5_to_3_all_modes_agree_with_differences():
    rng = np.random.default_rng(6)
    for _ in range(3):
        x = rng.uniform(-1, 1, 5)
        Jfd = central_jacobian(map_5_to_3_np, x)
        Js = {m: fad.jacobian(map_5_to_3, mode=m)(x) for m in ("fwd", "rev", "auto")}
        for m, J in Js.items():
            assert J.shape == (3, 5), m
            np.testing.assert_allclose(J, Jfd, rtol=1e-7, atol=1e-8, err_msg=m)
        np.testing.assert_allclose(Js["fwd"], Js["rev"], rtol=1e-14, atol=1e-15)
        assert np.array_equal(Js["auto"], Js["rev"])  # 3 outputs < 5 inputs: reverse
        # jvp and vjp against the Jacobian
        v = rng.normal(size=5)
        out, jv = fad.jvp(map_5_to_3, (x,), (v,))
        assert out == [float(y) for y in map_5_to_3_np(x)]
        assert isinstance(jv, list) and len(jv) == 3
        np.testing.assert_allclose(jv, Js["rev"] @ v, rtol=1e-13, atol=1e-14)
        u = rng.normal(size=3)
        out2, pullback = fad.vjp(map_5_to_3, x)
        assert out2 == out
        (uj,) = pullback(u)
        assert isinstance(uj, np.ndarray) and uj.shape == (5,)
        np.testing.assert_allclose(uj, u @ Js["rev"], rtol=1e-13, atol=1e-14)
        for k in range(3):  # a basis cotangent picks one row of J exactly
            assert np.array_equal(pullback(np.eye(3)[k])[0], Js["rev"][k])


@pytest.mark.parametrize("layer", [tanh_layer_loops, tanh_layer_objects], ids=["loops", "objects"])
def test_jacobian_100_to_100(layer):
    x = np.random.default_rng(7).uniform(-1, 1, N100)
    cf = fad.compile(layer, x)
    Jr = cf.jacobian(x, mode="rev")
    Jf = cf.jacobian(x, mode="fwd")
    Ja = cf.jacobian(x)
    assert Jr.shape == Jf.shape == (N100, N100)
    h = 1 - np.tanh(A100 @ x) ** 2
    J_exact = h[:, None] * A100
    np.testing.assert_allclose(Jr, J_exact, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Jf, J_exact, rtol=1e-12, atol=1e-14)
    assert np.array_equal(Ja, Jr)  # a tie (100 = 100) goes to reverse
    Jfd = central_jacobian(lambda z: np.tanh(A100 @ z), x)
    np.testing.assert_allclose(Jr, Jfd, rtol=1e-6, atol=1e-8)
    v = np.random.default_rng(8).normal(size=N100)
    _, jv = cf.jvp((x,), v)
    np.testing.assert_allclose(jv, J_exact @ v, rtol=1e-11, atol=1e-12)
    _, (vj,) = (lambda r: (r[0], (r[1],)))(cf.vjp((x,), v))
    np.testing.assert_allclose(vj, v @ J_exact, rtol=1e-11, atol=1e-12)


def test_modes_where_a_zero_meets_an_infinity():
    """What the README says of sqrt(x*x) at 0, where no derivative exists:
    reverse mode multiplies the adjoint inf by x*x's partial 0 (nan), forward
    mode stops at the zero tangent before sqrt's inf (0). Off that point,
    and on a path that is all zero tangent / zero adjoint, they agree."""
    f = lambda x: fad.sqrt(x * x)  # noqa: E731
    assert math.isnan(fad.grad(f)(0.0)) and math.isnan(fad.jacobian(f, mode="rev")(0.0))
    assert fad.jacobian(f, mode="fwd")(0.0) == 0.0
    assert fad.jacobian(f, mode="fwd")(-2.0) == fad.jacobian(f, mode="rev")(-2.0) == -1.0
    g = lambda x: [x[0] + fad.sqrt(x[1])]  # noqa: E731 (sqrt'(0) = inf, on x[1]'s path only)
    assert fad.jacobian(g, mode="fwd")(np.array([1.0, 0.0])).tolist() == [[1.0, math.inf]]
    assert fad.jacobian(g, mode="rev")(np.array([1.0, 0.0])).tolist() == [[1.0, math.inf]]


def test_jacobian_shapes_and_argnums():
    M = np.arange(6.0).reshape(2, 3) / 10

    def f(M, s):
        return np.array([[M[0, 0] * s, M[1, 2]], [np.sin(M[0, 1]) * s * s, M.sum() * 1.0]])
    J = fad.jacobian(f)(M, 2.0)
    assert J.shape == (2, 2, 2, 3)
    Jfd = central_jacobian(lambda m: f(m, 2.0).astype(float), M)
    np.testing.assert_allclose(J, Jfd, rtol=1e-7, atol=1e-9)
    Jfwd = fad.jacobian(f, mode="fwd")(M, 2.0)
    np.testing.assert_allclose(Jfwd, J, rtol=1e-14, atol=1e-15)
    Js = fad.jacobian(f, argnums=1)(M, 2.0)
    assert Js.shape == (2, 2)
    np.testing.assert_allclose(Js, [[M[0, 0], 0.0], [2 * 2.0 * np.sin(M[0, 1]), 0.0]], rtol=1e-15)
    JM, Js2 = fad.jacobian(f, argnums=(0, 1))(M, 2.0)
    assert np.array_equal(JM, J) and np.array_equal(Js2, Js)
    # a list output: (len,) + in.shape
    J3 = fad.jacobian(lambda x: [x[0, 0] * x[1, 1], x[0, 1]])(np.ones((2, 2)))
    assert J3.shape == (2, 2, 2)
    # multi-argument jvp
    out, t = fad.jvp(lambda x, y: x * fad.sin(y), (2.0, 0.5), (1.0, -1.0))
    assert out == 2.0 * math.sin(0.5)
    assert t == pytest.approx(math.sin(0.5) - 2.0 * math.cos(0.5), rel=1e-15)
    out, pullback = fad.vjp(lambda x, y: [x * y, x + y], 2.0, 3.0)
    assert out == [6.0, 5.0] and pullback([1.0, 1.0]) == (4.0, 3.0)


@pytest.mark.parametrize("name,f,example,argnums", [s for s in STRUCTURES if s[0] in ("vec", "mat", "floats", "list")],
                         ids=["floats", "list", "vec", "mat"])
def test_jacobian_of_scalar_function_is_grad(name, f, example, argnums):
    rng = np.random.default_rng(9)
    point = tuple(jitter(a, rng) for a in example)
    g = fad.grad(f, argnums=argnums)(*point)
    J = fad.jacobian(f, argnums=argnums, mode="rev")(*point)
    Jf = fad.jacobian(f, argnums=argnums, mode="fwd")(*point)
    Ja = fad.jacobian(f, argnums=argnums)(*point)
    g_arr = np.asarray(g, float)
    assert np.shape(J) == g_arr.shape
    assert np.array_equal(J, g_arr)
    assert np.array_equal(Ja, g_arr)
    np.testing.assert_allclose(Jf, g_arr, rtol=1e-13, atol=1e-14)


def test_forward_and_reverse_agree_behind_an_inactive_kink():
    """relu(sqrt(x) - 1) is flat at 0: reverse mode gives 0 (an adjoint of
    0 passes nothing on); forward mode must not give 0 * inf = nan."""
    f = lambda x: [fad.relu(fad.sqrt(x[0]) - 1.0), x[1] * 2.0]  # noqa: E731
    x = np.array([0.0, 1.0])
    Jr = fad.jacobian(f, mode="rev")(x)
    assert Jr.tolist() == [[0.0, 0.0], [0.0, 2.0]]
    assert fad.jacobian(f, mode="fwd")(x).tolist() == Jr.tolist()


def test_jacobian_of_constant_output_is_zero():
    J = fad.jacobian(lambda x: [x[0] * 0.0 + 1.0, 2.0], mode="rev")(np.ones(3))
    assert J.shape == (2, 3) and not J.any()
    J = fad.jacobian(lambda x: [3.0, x[1] * 2.0], mode="fwd")(np.ones(3))
    assert J.tolist() == [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]


# ---------------------------------------------------------------------------
# 6. second order
# ---------------------------------------------------------------------------

def rosenbrock(x):  # the benchmarks' scalar Rosenbrock (W4)
    return _workloads.rosenbrock(x, fad)


def test_hessian_rosenbrock(rosenbrock_hessian):
    rng = np.random.default_rng(10)
    cf = fad.compile(rosenbrock, np.zeros(5))
    for x in [np.ones(5), np.zeros(5)] + [rng.uniform(-2, 2, 5) for _ in range(5)]:
        H = fad.hessian(rosenbrock)(x)
        assert H.shape == (5, 5)
        want = rosenbrock_hessian(x)
        np.testing.assert_allclose(H, want, rtol=1e-13, atol=1e-10)
        assert np.array_equal(cf.hessian(x), H)
        assert np.array_equal(H, H.T)
        v = rng.normal(size=5)
        np.testing.assert_allclose(fad.hvp(rosenbrock)(x, v), want @ v, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(cf.hvp(x, v), want @ v, rtol=1e-12, atol=1e-9)
    assert len(cf.traces) == 1
    assert np.array_equal(fad.hessian(rosenbrock)(np.ones(5)), rosenbrock_hessian(np.ones(5)))


QA = np.random.default_rng(11).normal(size=(6, 6))  # not symmetric


def quad(x):
    return 0.5 * (x @ (QA @ x))


def test_hessian_quadratic_form():
    rng = np.random.default_rng(11)
    want = (QA + QA.T) / 2
    cf = fad.compile(quad, np.zeros(6))
    for _ in range(3):
        x = rng.normal(size=6)
        H = fad.hessian(quad)(x)
        np.testing.assert_allclose(H, want, rtol=1e-13, atol=1e-14)
        assert np.array_equal(cf.hessian(x), H)
        v = rng.normal(size=6)
        np.testing.assert_allclose(fad.hvp(quad)(x, v), want @ v, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(cf.grad(x), want @ x, rtol=1e-12, atol=1e-13)


def test_quadratic_form_grad_through_array_path():
    """fad.grad records x @ (A @ x) as array rows: the vector-vector matmul
    (a 0-d result) must differentiate like compile's element loop."""
    x = np.random.default_rng(22).normal(size=6)
    np.testing.assert_allclose(fad.grad(quad)(x), (QA + QA.T) / 2 @ x, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fad.grad(lambda x: x @ x)(x), 2 * x, rtol=1e-15)


def test_hessian_log_sum_exp():
    rng = np.random.default_rng(12)

    def lse(x):
        return fad.log(np.sum(np.exp(x)))
    for _ in range(3):
        x = rng.normal(size=5) * 2
        p = np.exp(x) / np.exp(x).sum()
        want = np.diag(p) - np.outer(p, p)
        H = fad.hessian(lse)(x)
        np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-14)
        assert np.allclose(H.sum(axis=1), 0.0, atol=1e-14)  # shift invariance
        v = rng.normal(size=5)
        np.testing.assert_allclose(fad.hvp(lse)(x, v), want @ v, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("form", ["explicit", "sigmoid"])
def test_hessian_sigmoid_neuron(form):
    rng = np.random.default_rng(13)
    xin = rng.normal(size=4)
    b = 0.3

    def neuron(w):
        z = np.sum(w * xin) + b
        return 1.0 / (1.0 + fad.exp(-z)) if form == "explicit" else fad.sigmoid(z)
    cf = fad.compile(neuron, np.zeros(4))
    for _ in range(4):
        w = rng.normal(size=4)
        z = float(w @ xin + b)
        s = 1.0 / (1.0 + math.exp(-z))
        want = s * (1 - s) * (1 - 2 * s) * np.outer(xin, xin)
        H = fad.hessian(neuron)(w)
        np.testing.assert_allclose(H, want, rtol=1e-10, atol=1e-15)
        assert np.array_equal(cf.hessian(w), H)
        np.testing.assert_allclose(fad.grad(neuron)(w), s * (1 - s) * xin, rtol=1e-13)
        v = rng.normal(size=4)
        np.testing.assert_allclose(cf.hvp(w, v), want @ v, rtol=1e-10, atol=1e-15)


def test_hessian_structures_and_hvp_structure():
    M = np.array([[0.5, -0.3, 1.2], [0.7, 0.1, -0.8]])

    def f(M):
        return np.sum(M * M * M) + M[0, 0] * M[1, 2]
    H = fad.hessian(f)(M)
    assert H.shape == (2, 3, 2, 3)
    want = np.zeros((6, 6))
    want[np.arange(6), np.arange(6)] = 6 * M.ravel()
    want[0, 5] = want[5, 0] = 1.0
    np.testing.assert_allclose(H.reshape(6, 6), want, rtol=1e-15)
    hv = fad.hvp(f)(M, np.ones((2, 3)))
    assert hv.shape == (2, 3)
    np.testing.assert_allclose(hv.ravel(), want.sum(axis=1), rtol=1e-15)
    # a scalar argument: a 0-d Hessian; a list argument: a list product
    assert fad.hessian(lambda x: x ** 3)(2.0).shape == ()
    assert float(fad.hessian(lambda x: x ** 3)(2.0)) == 12.0
    hv = fad.hvp(lambda x: x[0] * x[0] * x[1])([1.0, 2.0], [1.0, 0.0])
    assert hv == [4.0, 2.0]
    # hessian with respect to one of two arguments
    H1 = fad.hessian(lambda x, y: x * x * y * y, argnums=1)(3.0, 2.0)
    assert float(H1) == 18.0


def test_hessian_of_powers_at_negative_base():
    """x ** 3 records power with a constant exponent; at x < 0 the Hessian
    is 6x. (op_second's d/dy partials, log x = nan, must not leak in
    through the constant exponent's zero tangent.)"""
    assert float(fad.hessian(lambda x: x ** 3)(-1.2)) == pytest.approx(-7.2, rel=1e-14)
    assert float(fad.hessian(lambda x: fad.power(x, 4.0))(-0.5)) == pytest.approx(3.0, rel=1e-14)
    x = np.random.default_rng(20).normal(size=5)
    H = fad.hessian(lambda x: np.sum(x ** 3))(x)
    np.testing.assert_allclose(H, np.diag(6 * x), rtol=1e-14, atol=0)
    np.testing.assert_allclose(fad.hvp(lambda x: np.sum(x ** 3))(x, np.ones(5)), 6 * x, rtol=1e-14)


def _op_function(spec):
    """The op as a function of one or two numbers (Vars or floats)."""
    special = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
               "div": lambda x, y: x / y, "neg": lambda x: -x, "power": fad.power}
    return special.get(spec.name) or getattr(fad, spec.name)


SMOOTH_OPS = [s for s in fops.OPS if s.arity >= 1 and s.kind == "smooth"]


@pytest.mark.parametrize("spec", SMOOTH_OPS, ids=[s.name for s in SMOOTH_OPS])
def test_every_smooth_op_second_derivative(spec):
    """Hessian of every smooth op, by forward-over-reverse (op_second),
    against central differences of the gradient. Each form is checked bare
    (seed 1: only op_second matters) and under an outer map (a non-zero
    adjoint tangent flows into the op too)."""
    op = _op_function(spec)
    lo, hi = spec.domain
    rng = np.random.default_rng(100 + spec.code)
    if spec.arity == 1:
        forms = {"x": (1, lambda x: op(x[0]))}
    else:
        c = float(rng.uniform(lo, hi))
        forms = {"x,y": (2, lambda x: op(x[0], x[1])), "y,x": (2, lambda x: op(x[1], x[0])),
                 "x,c": (1, lambda x: op(x[0], c)), "c,x": (1, lambda x: op(c, x[0]))}
    for form, (n, g) in forms.items():
        for outer_name, outer in [("bare", lambda u, x: u),
                                  ("outer", lambda u, x: fad.sin(u) * x[0] + u * u * 0.25)]:
            def f(x, g=g, outer=outer):
                return outer(g(x), x)
            for _ in range(3):
                x = rng.uniform(lo, hi, n)
                cf = fad.compile(f, x)
                assert spec.code in cf.traces[0].op, f"{form}: op {spec.name} not recorded"
                H = np.stack([fad.hvp(f)(x, e) for e in np.eye(n)], axis=1)
                assert np.array_equal(cf.hessian(x), H)
                grad = fad.grad(f)
                h = 1e-5
                Hfd = np.stack([(grad(x + h * e) - grad(x - h * e)) / (2 * h) for e in np.eye(n)], axis=1)
                scale = max(1.0, np.abs(Hfd).max())
                np.testing.assert_allclose(H, Hfd, rtol=1e-5, atol=1e-6 * scale,
                                           err_msg=f"{spec.name} {form} {outer_name} at {x}")
                np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-12 * scale)


def test_hvp_is_exact_on_a_quadratic_through_every_binary_smooth_op_order():
    # x*y, x/c, c*x: exact second derivatives of simple polynomials
    f = lambda x: x[0] * x[1] * 3.0 + x[0] / 4.0 - 2.0 * x[1] * x[1] + 5.0 - x[0]  # noqa: E731
    H = fad.hessian(f)(np.array([0.3, 0.7]))
    assert H.tolist() == [[0.0, 3.0], [3.0, -4.0]]


# ---------------------------------------------------------------------------
# 7. grad_batch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2, None])
def test_grad_batch_equals_sequential(threads):
    rng = np.random.default_rng(14)
    cf = fad.compile(f_vec, np.ones(6))
    X = rng.normal(size=(37, 6))
    G = cf.grad_batch(X, threads=threads)
    assert G.shape == X.shape and G.dtype == np.float64
    want = np.stack([cf.grad(x) for x in X])
    assert np.array_equal(G, want)
    assert np.array_equal(G, np.stack([fad.grad(f_vec)(x) for x in X]))


@pytest.mark.parametrize("threads", [1, 2, None])
def test_grad_batch_rows_on_other_branches(threads):
    rng = np.random.default_rng(15)
    cf = fad.compile(f_piecewise, np.array([0.7, 0.2]))
    X = np.concatenate([rng.uniform(-2, 2, (40, 2)), np.array(GUARD_POINTS)])
    G = cf.grad_batch(X, threads=threads)
    assert G.shape == X.shape
    for x, g in zip(X, G):
        assert np.array_equal(g, fad.grad(f_piecewise)(x)), x
    assert np.array_equal(G, np.stack([cf.grad(x) for x in X]))
    assert len(cf.traces) > 1


def test_grad_batch_raise_mode():
    cf = fad.compile(f_piecewise, np.array([0.7, 0.2]), on_branch_change="raise")
    X = np.array([[0.7, 0.2], [0.71, 0.21]])
    assert np.array_equal(cf.grad_batch(X), np.stack([fad.grad(f_piecewise)(x) for x in X]))
    with pytest.raises(fad.BranchChanged):
        cf.grad_batch(np.array([[0.7, 0.2], [-0.7, 0.2]]), threads=2)


@pytest.mark.parametrize("threads", [1, 2, None])
def test_grad_batch_matrix_argument(threads):
    rng = np.random.default_rng(16)
    cf = fad.compile(f_mat, np.ones((2, 3)))
    X = rng.normal(size=(11, 2, 3))
    G = cf.grad_batch(X, threads=threads)
    assert G.shape == (11, 2, 3)
    want = np.stack([cf.grad(x) for x in X])
    assert np.array_equal(G, want)
    assert np.array_equal(want[3], fad.grad(f_mat)(X[3]))
    G2 = cf.grad_batch(X.reshape(11, 6), threads=threads)  # rows as flat vectors
    assert G2.shape == (11, 6)
    assert np.array_equal(G2, want.reshape(11, 6))


def test_grad_batch_starts_no_more_threads_than_cores():
    """threads beyond the core count (or the rows) are not started: the
    shared pool holds at most a worker per core beside the caller, however
    many threads calls ask for."""
    import os
    import threading
    cf = fad.compile(f_list, [0.1, 0.2, 0.3])
    X = np.random.default_rng(19).normal(size=(300, 3))
    want = np.array([cf.grad(list(x)) for x in X])
    for threads in (64, 5000, 2):
        assert np.array_equal(cf.grad_batch(X, threads=threads), want)
    workers = [t for t in threading.enumerate() if t.name.startswith("fastad")]
    assert len(workers) <= max(1, (os.cpu_count() or 1) - 1)


def test_grad_batch_scalar_and_list_arguments():
    cf = fad.compile(f_while, 2.0)
    xs = np.array([0.5, 2.0, 3.0, 20.0, 0.01])
    G = cf.grad_batch(xs, threads=2)
    assert G.shape == (5,)
    assert G.tolist() == [fad.grad(f_while)(float(x)) for x in xs]
    cf = fad.compile(f_list, [0.1, 0.2, 0.3])
    X = np.random.default_rng(17).normal(size=(9, 3))
    G = cf.grad_batch(X)
    assert np.array_equal(G, np.array([cf.grad(list(x)) for x in X]))
    # integer batches are taken as float
    Gi = fad.compile(lambda x: x[0] * x[1], np.ones(2)).grad_batch(np.array([[2, 3], [4, 5]]))
    assert Gi.tolist() == [[3.0, 2.0], [5.0, 4.0]]


@pytest.mark.parametrize("threads", [1, 2, None])
def test_grad_batch_one_row(threads):
    cf = fad.compile(f_vec, np.ones(6))
    x = np.random.default_rng(18).normal(size=(1, 6))
    G = cf.grad_batch(x, threads=threads)
    assert G.shape == (1, 6)
    assert np.array_equal(G[0], cf.grad(x[0]))


@pytest.mark.parametrize("threads", [1, 2, None])
def test_grad_batch_empty(threads):
    cf = fad.compile(f_vec, np.ones(6))
    G = cf.grad_batch(np.zeros((0, 6)), threads=threads)
    assert G.shape == (0, 6) and G.dtype == np.float64
    cf = fad.compile(f_mat, np.ones((2, 3)))
    assert cf.grad_batch(np.zeros((0, 2, 3)), threads=threads).shape == (0, 2, 3)


def test_grad_batch_does_not_modify_input():
    cf = fad.compile(f_vec, np.ones(6))
    X = np.random.default_rng(19).normal(size=(8, 6))
    X0 = X.copy()
    Xf = np.asfortranarray(X)
    G = cf.grad_batch(Xf, threads=2)  # a non-contiguous layout works too
    assert np.array_equal(X, X0)
    assert np.array_equal(G, cf.grad_batch(X0, threads=1))


def test_dead_rows_are_not_replayed_but_guards_are():
    def f(x):
        unused = fad.sin(x[0]) * x[3] + fad.abs(x[3])  # nothing reads it: dropped, kink and all
        if x[0] < x[1]:                                 # a guard: kept, and still checked
            return x[0] * x[2]
        return x[1] * x[1]

    cf = fad.compile(f, [1.0, 2.0, 3.0, 4.0])
    ops = [fad.ops.OPS[k].name for k in cf.traces[0].op]
    assert "sin" not in ops and "abs" not in ops and "lt" in ops
    assert len(ops) == 5  # three inputs, the guard, the product
    assert cf.traces[0].in_rows[3] == -1  # x[3] reaches nothing: its gradient is 0
    for x in ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, -4.0], [3.0, 2.0, 1.0, 4.0]):
        assert cf.grad(x) == fad.grad(f)(x)
        assert cf(x) == f(x)
    assert len(cf.traces) == 2  # the other branch of the guard was recorded


def test_a_closed_over_var_is_a_constant_at_its_recorded_value():
    # as the README says (and as jax.jit bakes closed-over arrays in)
    w = fad.Var(2.0)
    cf = fad.compile(lambda x: x * w, 3.0)
    w.value = 5.0
    assert cf(3.0) == 6.0 and cf.grad(3.0) == 2.0
    cw = fad.compile(lambda x, w: x * w, 3.0, 2.0)  # passed as an argument, it varies
    assert cw(3.0, 5.0) == 15.0 and cw.grad(3.0, 5.0) == 5.0


class _Holder:
    pass


@pytest.mark.parametrize("make", [
    lambda y, B: (lambda z: z * y, 3.0),
    lambda y, B: (lambda a: (B * a).sum(), np.ones(3)),
    lambda y, B: (lambda z, held=_Holder(): setattr(held, "y", y) or z * held.y, 3.0),
], ids=["var", "array", "attribute"])
def test_a_closed_over_recorded_value_gets_an_error_that_says_so(make):
    """A Var recorded outside f (y = x * x, on the thread's tape) is no leaf
    to be a constant of the recording: z * y goes on y's tape. The error
    said f used its argument on another tape as well, which it had not."""
    f, example = make(fad.Var(2.0) * 2.0, fad.Array(np.ones(3)) * 2.0)
    with pytest.raises(fad.FastADError, match=r"^the function combines its argument with a value recorded "
                                              r"on another tape.*\.value"):
        fad.compile(f, example)


# f of a closed-over Array C (3,), M (2, 3), N (3, 2), in both operand orders.
# Forward mode and second order record f with one Var per number (the
# twin), where C * x stacked x's Vars into an Array row ("builds fastad
# Arrays") and x * C raised "fastad does not implement numpy.lambda20".
CLOSED_OVER_ARRAY = {
    "C*x": lambda C, M, N: lambda x: np.sum((C * x) ** 2),
    "x*C": lambda C, M, N: lambda x: np.sum((x * C) ** 2),
    "C-x": lambda C, M, N: lambda x: np.sum(np.tanh(C - x)),
    "x/C": lambda C, M, N: lambda x: np.sum(np.sin(x / C)),
    "maximum(C,x)": lambda C, M, N: lambda x: np.sum(np.maximum(C, x) * x),  # a tie at x[0]
    "maximum(x,C)": lambda C, M, N: lambda x: np.sum(np.maximum(x, C) * x),
    "fad.minimum(C,x)": lambda C, M, N: lambda x: np.sum(fad.minimum(C, x) * x),
    "hypot(C,x)": lambda C, M, N: lambda x: np.sum(np.hypot(C, x)),
    "C<x": lambda C, M, N: lambda x: np.sum(np.where(C < x, x, 0.0) ** 2),
    "M@x": lambda C, M, N: lambda x: np.sum(np.tanh(M @ x)),
    "x@N": lambda C, M, N: lambda x: np.sum(np.tanh(x @ N)),
    "dot(M,x)": lambda C, M, N: lambda x: np.sum(np.tanh(np.dot(M, x))),
    "dot(x,C)": lambda C, M, N: lambda x: np.tanh(np.dot(x, C)),
    "einsum(M,x)": lambda C, M, N: lambda x: np.sum(np.tanh(np.einsum("ij,j->i", M, x))),
    "outer(C,x)": lambda C, M, N: lambda x: np.sum(np.tanh(np.outer(C, x))),
    "concatenate(C,x)": lambda C, M, N: lambda x: np.sum(np.tanh(np.concatenate([C, x])) * np.arange(6.0)),
    "stack(x,C)": lambda C, M, N: lambda x: np.sum(np.tanh(np.stack([x, C])) ** 2),
    "fad.stack(C,x)": lambda C, M, N: lambda x: np.sum(np.tanh(fad.stack([C, x])) ** 2),
    "where(m,C,x)": lambda C, M, N: lambda x: np.sum(np.where(x > 0.0, C, x) * x),
    "C*object-array": lambda C, M, N: lambda x: np.sum(C * np.array([x[0], x[1] * x[2], 1.0])),
}
_TWIN_TRANSFORMS = {
    "hessian": lambda f, x: fad.hessian(f)(x),
    "jvp": lambda f, x: np.array(fad.jvp(f, (x,), (np.array([1.0, 2.0, -1.0]),))),
    "jacobian-fwd": lambda f, x: fad.jacobian(f, mode="fwd")(x),
}


@pytest.mark.parametrize("transform", _TWIN_TRANSFORMS)
@pytest.mark.parametrize("name", CLOSED_OVER_ARRAY)
def test_a_closed_over_array_is_its_value_in_forward_mode_and_second_order(name, transform):
    # as the README says of a fad.Array f closes over: a constant, exactly its .value
    values = (np.array([1.5, -2.0, 0.5]), np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]),
              np.array([[0.5, 1.0], [-1.0, 0.2], [2.0, 0.7]]))
    f = CLOSED_OVER_ARRAY[name](*(fad.Array(v) for v in values))
    same = CLOSED_OVER_ARRAY[name](*values)
    x = np.array([1.5, 0.3, -1.1])
    np.testing.assert_array_equal(_TWIN_TRANSFORMS[transform](f, x), _TWIN_TRANSFORMS[transform](same, x))


def test_forward_mode_and_second_order_leave_a_closed_over_arrays_grad_alone():
    C = fad.Array(np.array([1.5, -2.0, 0.5]))
    C.grad = np.array([7.0, 8.0, 9.0])
    f = lambda x: np.sum((C * x) ** 2) + np.sum(x @ C)  # noqa: E731
    x = np.array([1.5, 0.3, -1.1])
    for transform in _TWIN_TRANSFORMS.values():
        transform(f, x)
    np.testing.assert_array_equal(C.grad, [7.0, 8.0, 9.0])


@pytest.mark.parametrize("inner", [lambda y: np.sum(y * np.array([y[0], y[1]])),
                                   lambda y: np.sum(np.array([y[0], y[1]]) @ y)], ids=["times", "matmul"])
def test_a_grad_nested_in_a_hessian_still_differentiates_its_own_array_argument(inner):
    # its Array argument meets an object array of Vars while the twin records
    # (which reads an Array there element by element): d/dy sum(y * y) = 2y
    f = lambda x: np.sum(x * x * fad.grad(inner)(x.value))  # noqa: E731 (x.value: a constant)
    x = np.array([0.3, 0.5])
    np.testing.assert_allclose(fad.hessian(f)(x), np.diag(4.0 * x), rtol=1e-15)


def test_tangents_and_directions_take_any_array_like_of_the_arguments_shape():
    # as vjp's cotangent does; a list argument refused an ndarray direction, a tuple a list
    f = lambda x: x[0] ** 2 * x[1]  # noqa: E731
    assert fad.hvp(f)([1.0, 2.0], np.array([1.0, 0.0])) == [4.0, 2.0]
    assert fad.jvp(f, ([1.0, 2.0],), (np.array([1.0, 0.0]),)) == (2.0, 4.0)
    assert fad.jvp(f, ((1.0, 2.0),), ([1.0, 0.0],)) == (2.0, 4.0)
    g = lambda m: m[0][0] * m[1][1]  # noqa: E731
    assert fad.jvp(g, ([[1.0, 2.0], [3.0, 4.0]],), (np.array([[1.0, 0.0], [0.0, 1.0]]),))[1] == 5.0
    with pytest.raises(TypeError, match="tangent must be shaped like"):
        fad.jvp(f, ([1.0, 2.0],), (np.ones(3),))
    with pytest.raises(TypeError, match="direction must be shaped like"):
        fad.hvp(f)([1.0, 2.0], [[1.0, 0.0]])


def test_threads_sharing_one_compiled_function_across_branches(run_interleaved):
    """Replays release the GIL; meanwhile other threads retrace and reorder
    the cache of traces. Each call walks the list it read (the cache is
    rebound, never changed in place): no IndexError, the right numbers."""
    import threading
    f = lambda x: sum(v * v if v > 0 else -v for v in x)  # noqa: E731 (2**4 branches)
    points = [[a, b, c, d] for a in (1.0, -1.0) for b in (2.0, -2.0) for c in (0.5, -0.5) for d in (3.0, -3.0)]
    want = [fad.grad(f)(p) for p in points]
    cf = fad.compile(f, points[0])
    errors, wrong = [], []

    def work(t):
        for i in range(600):
            k = (5 * i + t) % len(points)
            try:
                if cf.grad(points[k]) != want[k]:
                    wrong.append(k)
            except Exception as e:  # noqa: BLE001 (any is a failure)
                errors.append(repr(e))

    run_interleaved([threading.Thread(target=work, args=(t,)) for t in range(8)])
    assert not errors and not wrong, (errors[:3], wrong[:3])
    assert 1 <= len(cf.traces) <= cf.cache_size


def test_elements_of_a_closed_over_array_are_constants_of_the_trace():
    """C[1] * x with C a fad.Array from outside f: a constant. Every
    transform refused it ("this recording has array ops") before; a scalar
    trace now holds the element, and forward mode and second order work."""
    C = fad.Array(np.array([1.5, -2.0, 3.0]))
    square = lambda x: C[1] * x * x + C[2]  # noqa: E731
    squares = lambda x: C[1] * (x[0] * x[0] + x[1] * x[1]) + C[2]  # noqa: E731
    for f, arg, x in ((square, 2.0, 3.0), (squares, [2.0, -1.0], [3.0, 0.5]),
                      (squares, np.array([2.0, -1.0]), np.array([3.0, 0.5]))):
        cf = fad.compile(f, arg)
        assert type(cf.traces[0]).__name__ == "Trace"
        assert cf(x) == fad.value_and_grad(f)(x)[0]
        np.testing.assert_array_equal(cf.grad(x), fad.grad(f)(x))
        n = np.size(x)
        np.testing.assert_array_equal(np.reshape(cf.hessian(x), (n, n)), -4.0 * np.eye(n))
        np.testing.assert_array_equal(np.ravel(fad.jacobian(f, mode="fwd")(x)), np.ravel(fad.grad(f)(x)))

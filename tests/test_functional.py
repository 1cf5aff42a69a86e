"""fastad.functional: grad and value_and_grad over argument trees."""
import collections
import math

import numpy as np
import pytest

import fastad as fad
from fastad import reference as ref


def f_xy(x, y):
    return x * y + fad.sin(x)


# ---------------------------------------------------------------------------
# argnums
# ---------------------------------------------------------------------------

def test_argnums_int_and_tuple():
    assert fad.grad(f_xy)(2.0, 3.0) == 2.5838531634528574
    assert fad.grad(f_xy, argnums=1)(2.0, 3.0) == 2.0
    assert fad.grad(f_xy, argnums=(0, 1))(2.0, 3.0) == (2.5838531634528574, 2.0)
    assert fad.grad(f_xy, argnums=(1, 0))(2.0, 3.0) == (2.0, 2.5838531634528574)
    assert fad.grad(f_xy, argnums=(1,))(2.0, 3.0) == (2.0,)


def test_negative_argnums():
    assert fad.grad(f_xy, argnums=-1)(2.0, 3.0) == 2.0
    assert fad.grad(f_xy, argnums=(-2, -1))(2.0, 3.0) == (2.5838531634528574, 2.0)


def test_an_argnum_named_twice_gets_its_gradient_twice():
    """As the reference (and compile) do: both entries are the full
    gradient, on the fast path (numbers, flat lists) and the tree path."""
    f = lambda x, y: x * y ** 3  # noqa: E731
    want = ref.grad(f, argnums=(1, 1))(2.0, 3.0)
    assert want == (54.0, 54.0)
    assert fad.grad(f, argnums=(1, 1))(2.0, 3.0) == want
    assert fad.grad(f, argnums=(1, -1))(2.0, 3.0) == want
    assert fad.value_and_grad(f, argnums=(0, 1, 0))(2.0, 3.0) == (54.0, (27.0, 54.0, 27.0))
    assert fad.grad(lambda v: v[0] * v[1], argnums=(0, 0))([2.0, 3.0]) == ([3.0, 2.0], [3.0, 2.0])
    g = fad.grad(lambda s, a: s * (a * a).sum(), argnums=(1, 1))(2.0, np.array([3.0, 1.0]))
    assert [x.tolist() for x in g] == [[12.0, 4.0], [12.0, 4.0]]
    cf = fad.compile(f, 2.0, 3.0, argnums=(1, 1))
    assert cf.grad(2.0, 3.0) == want


def test_numpy_integer_argnums_and_no_bools(engine):
    """Both engines: NumPy integers and ranges are argnums, bools are not,
    and -1 with 1 name one argument."""
    g = lambda x, y: x * engine.sin(y)  # noqa: E731
    d0, d1 = math.sin(3.0), 2.0 * math.cos(3.0)
    assert engine.grad(g, argnums=np.int64(1))(2.0, 3.0) == d1
    assert engine.grad(g, argnums=(np.int32(0), 1))(2.0, 3.0) == (d0, d1)
    assert engine.grad(g, argnums=range(2))(2.0, 3.0) == (d0, d1)
    assert engine.grad(g, argnums=(1, -1))(2.0, 3.0) == (d1, d1)
    for bad in (True, (False,), np.bool_(True), 1.0, None, "1"):
        with pytest.raises(ValueError, match="argnums"):
            engine.grad(g, argnums=bad)


def test_argnums_out_of_range():
    with pytest.raises(ValueError):
        fad.grad(f_xy, argnums=2)(2.0, 3.0)
    with pytest.raises(ValueError):
        fad.grad(f_xy, argnums=-3)(2.0, 3.0)
    with pytest.raises(ValueError):
        fad.grad(f_xy, argnums=(0, 5))(2.0, 3.0)
    with pytest.raises(ValueError):
        fad.grad(f_xy, argnums=())
    with pytest.raises(ValueError):
        fad.grad(f_xy, argnums="0")


def test_value_and_grad():
    value, g = fad.value_and_grad(f_xy, argnums=(0, 1))(2.0, 3.0)
    assert value == 6.909297426825682 and type(value) is float
    assert g == (2.5838531634528574, 2.0)
    assert fad.value_and_grad(lambda x: x * x)(3.0) == (9.0, 6.0)


def test_matches_reference_grad():
    def f(M):
        return lambda x, y, z: M.exp(x * y) / (1 + z * z) - M.tanh(x - z)
    args = (0.3, -0.7, 1.2)
    got = fad.value_and_grad(f(fad), argnums=(0, 1, 2))(*args)
    want = ref.value_and_grad(f(ref), argnums=(0, 1, 2))(*args)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    assert got[1] == pytest.approx(want[1], rel=1e-12)


# ---------------------------------------------------------------------------
# argument structures
# ---------------------------------------------------------------------------

def test_int_arguments_give_float_gradients():
    g = fad.grad(lambda x, y: x * y, argnums=(0, 1))(2, 3)
    assert g == (3.0, 2.0) and all(type(v) is float for v in g)
    g = fad.grad(lambda x: x * x)(np.int64(3))
    assert g == 6.0 and type(g) is float
    v, g = fad.value_and_grad(lambda x: x * x)(3)
    assert (v, g) == (9.0, 6.0) and type(v) is float and type(g) is float


def test_list_and_tuple_arguments():
    g = fad.grad(lambda p: p[0] * p[1] + p[2])([2.0, 3.0, 4.0])
    assert g == [3.0, 2.0, 1.0] and type(g) is list
    g = fad.grad(lambda p: p[0] * p[1] + p[2])((2.0, 3, 4.0))
    assert g == (3.0, 2.0, 1.0) and type(g) is tuple
    assert all(type(v) is float for v in g)
    assert fad.grad(lambda p: 1.0)([]) == []


def test_dict_and_nested_arguments():
    params = {"w": [1.0, 2.0], "b": 0.5, "deep": ({"k": 3.0},)}

    def f(p):
        return (p["w"][0] * p["w"][1] + p["b"] ** 2) * p["deep"][0]["k"]
    g = fad.grad(f)(params)
    assert g == {"w": [6.0, 3.0], "b": 3.0, "deep": ({"k": 2.25},)}
    assert params["w"] == [1.0, 2.0]  # the argument is not modified


def test_a_dict_of_arrays_and_numbers_gives_what_the_tree_walk_gives():
    """grad makes the leaves of an ndarray, or of a dict of numbers and
    ndarrays (a model's parameters), without the tree walk: the same
    gradient, in the same structure and types, as a nested argument (which
    takes the walk) and as the reference."""
    from fastad import reference as ref
    params = {"W": np.arange(6.0).reshape(2, 3), "b": 0.5, "n": np.array([1, 2, 3]), "z": np.array(2.0),
              "unused": np.ones(2)}

    def f(p):
        return ((p["W"] * p["n"]).sum() * p["b"] + p["z"] * p["b"] ** 2)

    fast = fad.grad(f)(params)
    walked = fad.grad(lambda q: f(q[0]))((params,))[0]
    oracle = ref.grad(f)(params)
    assert list(fast) == list(walked) == list(params)
    for k in params:
        assert type(fast[k]) is type(walked[k]) is type(oracle[k])
        np.testing.assert_array_equal(fast[k], walked[k])
        np.testing.assert_allclose(fast[k], oracle[k], rtol=1e-15)
    assert fast["b"] == 34.0 + 2 * 2.0 * 0.5  # sum(W * n) + 2 z b
    assert fast["n"].dtype == np.float64 and fast["unused"].tolist() == [0.0, 0.0]
    again = fad.grad(f)(params)
    assert again["W"] is not fast["W"]  # each call's gradient arrays are its own
    with pytest.raises(TypeError, match="dtype bool"):
        fad.grad(lambda p: p["m"].sum())({"m": np.array([True])})
    g = fad.grad(lambda a: (a * a).sum())(np.array([1, 2]))
    assert g.dtype == np.float64 and g.tolist() == [2.0, 4.0]


@pytest.mark.parametrize("make", [
    lambda: np.arange(6.0).reshape(2, 3),                      # read in place
    lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),   # not C-contiguous: copied
    lambda: np.arange(12.0).reshape(2, 6)[:, ::2],             # strided: copied
    lambda: np.arange(6).reshape(2, 3),                        # int: copied as float64
], ids=["float64", "fortran", "strided", "int"])
def test_an_array_argument_is_read_not_changed_and_read_only_to_f(make):
    W = make()
    before, writable = W.copy(), W.flags.writeable
    seen = []

    def f(p):
        seen.append(p["W"])
        with pytest.raises(ValueError, match="read-only"):
            p["W"].value[0, 0] = 99.0  # the leaf's value is not f's to change
        return (p["W"] * p["W"]).sum() * p["s"]

    g = fad.grad(f)({"W": W, "s": 2.0})
    np.testing.assert_array_equal(g["W"], 4.0 * before)
    assert g["s"] == float((before * before).sum())
    np.testing.assert_array_equal(W, before)
    assert W.flags.writeable == writable
    assert not np.shares_memory(g["W"], W)  # the gradient is an array of its own
    W2 = make()  # the tree walk (a nested argument) reads it the same way
    g2 = fad.grad(lambda q: f(q[0]))([{"W": W2, "s": 2.0}])[0]
    np.testing.assert_array_equal(g2["W"], g["W"])


def test_a_big_endian_array_argument_is_read_as_its_numbers():
    # '>f8' is float64 to NumPy but not to the C loops: read in place, its
    # bytes gave 6e-319 for a gradient of 2
    xb = np.array([1.0, 2.0], dtype=">f8")
    np.testing.assert_array_equal(fad.grad(lambda v: np.sum(v * v))(xb), [2.0, 4.0])
    np.testing.assert_allclose(fad.grad(lambda v: np.sum(np.sin(v)))(xb), np.cos([1.0, 2.0]), rtol=1e-15)
    np.testing.assert_array_equal(fad.grad(lambda d: np.sum(d["a"] * d["a"]))({"a": xb})["a"], [2.0, 4.0])
    np.testing.assert_array_equal(fad.compile(lambda v: np.sum(v * v), xb).grad(xb), [2.0, 4.0])


def test_namedtuple_argument():
    Point = collections.namedtuple("Point", "x y")
    g = fad.grad(lambda p: p.x * p.y ** 2)(Point(2.0, 3.0))
    assert g == Point(9.0, 12.0) and type(g) is Point


def test_ndarray_arguments():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = fad.grad(lambda x: (x * x).sum())(a)
    assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == (2, 2)
    np.testing.assert_array_equal(g, 2 * a)
    g = fad.grad(lambda x: x[1, 0] * 5.0)(a)
    np.testing.assert_array_equal(g, [[0.0, 0.0], [5.0, 0.0]])
    g = fad.grad(lambda x: x[0] * x[2])(np.array([1, 2, 3]))  # ints: taken as float64
    assert g.dtype == np.float64 and g.tolist() == [3.0, 0.0, 1.0]
    g = fad.grad(lambda x: x.sum())(np.zeros((0,)))
    assert g.shape == (0,) and g.dtype == np.float64
    g = fad.grad(lambda x: x.reshape(()).item() * 3.0)(np.array(2.0))
    assert g.shape == () and float(g) == 3.0


def test_ndarray_argument_with_numpy_functions():
    # An ndarray argument arrives as an object array of Vars; NumPy code
    # written for float arrays must still differentiate.
    a = np.array([0.5, 1.0, 2.0])
    g = fad.grad(lambda x: np.sum(np.sin(x)))(a)
    np.testing.assert_allclose(g, np.cos(a), rtol=1e-15)


def test_ndarray_argument_scaled_by_its_own_element():
    a = np.array([1.0, 2.0, 3.0])
    g = fad.grad(lambda x: np.sum(x * x[0]))(a)  # x * Var: object array times a Var
    np.testing.assert_array_equal(g, [a.sum() + a[0], a[0], a[0]])


def test_mixed_tree_of_arrays_and_floats():
    g = fad.grad(lambda p: (p["a"] * p["s"]).sum())({"a": np.array([1.0, 2.0]), "s": 3.0})
    np.testing.assert_array_equal(g["a"], [3.0, 3.0])
    assert g["s"] == 3.0 and type(g["s"]) is float


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda x: [x, x],
    lambda x: (x, 2.0 * x),
    lambda x: np.array([x, x]),
    lambda x: np.array([1.0, 2.0]),
], ids=["list", "tuple", "object-array", "float-array"])
def test_non_scalar_output_points_to_jacobian(make):
    with pytest.raises(ValueError, match="jacobian"):
        fad.grad(make)(1.0)
    with pytest.raises(ValueError, match="jacobian"):
        fad.value_and_grad(make)(1.0)


def test_size_one_array_output_is_a_scalar():
    assert fad.grad(lambda x: np.array([x * x]))(3.0) == 6.0
    assert fad.grad(lambda x: np.array([[x * 2.0]]))(3.0) == 2.0


def test_output_independent_of_input():
    assert fad.grad(lambda x, y: y * 2.0)(1.0, 5.0) == 0.0
    assert fad.grad(lambda x: x * 0.0)(1.0) == 0.0
    assert fad.grad(lambda p: p[0])([1.0, 2.0]) == [1.0, 0.0]


def test_plain_float_output_gives_zeros():
    assert fad.value_and_grad(lambda x: 3.0)(2.0) == (3.0, 0.0)
    assert fad.grad(lambda x: 3)([2.0, 1.0]) == [0.0, 0.0]
    g = fad.grad(lambda x: 7.0)(np.ones((2, 3)))
    assert g.shape == (2, 3) and not g.any()
    assert fad.grad(lambda x: x.value * 2.0)(1.0) == 0.0  # reading .value leaves the graph


def test_identity_output():
    assert fad.value_and_grad(lambda x: x)(4.0) == (4.0, 1.0)
    assert fad.grad(lambda x, y: x, argnums=(0, 1))(4.0, 5.0) == (1.0, 0.0)


@pytest.mark.parametrize("bad", ["a", 1 + 2j, True, np.bool_(True), None, object(),
                                 np.array([1.0, 2.0], dtype=object), np.array([True]),
                                 np.array(["a"]), np.array([1 + 1j]), [1.0, "a"], {"k": 2j},
                                 [1.0, True]],
                         ids=["str", "complex", "bool", "np-bool", "None", "object",
                              "object-array", "bool-array", "str-array", "complex-array",
                              "list-with-str", "dict-with-complex", "list-with-bool"])
def test_bad_argument_types(bad):
    with pytest.raises(TypeError):
        fad.grad(lambda x: 1.0)(bad)


def test_masked_arrays_are_refused():
    """A masked array lost its mask (its masked numbers entered the sum): a
    TypeError wherever one reaches fastad, not a different result."""
    m = np.ma.array([1.0, 2.0], mask=[False, True])
    sq = lambda x: (x * x).sum()  # noqa: E731
    cf = fad.compile(sq, np.ones(2))
    for call in (lambda: fad.grad(sq)(m), lambda: fad.grad(lambda d: sq(d["a"]))({"a": m}),
                 lambda: fad.hessian(sq)(m), lambda: fad.compile(sq, m), lambda: cf.grad(m),
                 lambda: cf.grad_batch(np.ma.array([[1.0, 2.0]], mask=[[False, True]])),
                 lambda: fad.Array(m), lambda: fad.log(m), lambda: fad.Array(np.ones(2)) * m,
                 lambda: np.dot(fad.Array(np.ones(2)), m)):
        with pytest.raises(TypeError, match="masked array"):
            call()


def test_var_argument_is_refused():
    with pytest.raises(TypeError):
        fad.grad(lambda x: x * x)(fad.Var(2.0))


def test_kwargs_pass_through():
    def f(x, scale=1.0, shift=0.0):
        return scale * x * x + shift
    assert fad.grad(f)(3.0, scale=2.0) == 12.0
    assert fad.value_and_grad(f)(3.0, scale=2.0, shift=1.0) == (19.0, 12.0)
    assert fad.grad(lambda p, k: p["a"] * k)({"a": 2.0}, k=4.0) == {"a": 4.0}


def test_closures():
    def make(a, b):
        return lambda x: a * x * x + b * fad.sin(x)
    g = fad.grad(make(2.0, 3.0))
    assert g(1.0) == 4.0 + 3.0 * math.cos(1.0)
    assert g(0.0) == 3.0
    # a grad-made function is itself a plain function of floats
    dsq = fad.grad(lambda x: x * x * x)
    assert [dsq(v) for v in (1.0, 2.0, 3.0)] == [3.0, 12.0, 27.0]
    assert fad.grad(lambda x: x * dsq(2.0))(5.0) == 12.0


def test_closure_over_a_leaf_var():
    w = fad.Var(3.0)
    assert fad.grad(lambda x: w * x)(2.0) == 3.0
    assert fad.grad(lambda p: w * p[0] * p[1])([2.0, 5.0]) == [15.0, 6.0]


def test_python_control_flow():
    def f(x):
        acc = x
        for _ in range(3):
            acc = acc * x if acc > 0 else acc - x
        return acc
    assert fad.grad(f)(2.0) == 4 * 2.0 ** 3  # x**4 on this branch
    # at -2 the branches give ((x - x) - x) * x: derivative -2x = 4
    assert fad.grad(f)(-2.0) == 4.0
    assert fad.grad(f)(-2.0) == ref.grad(f)(-2.0)  # the same f runs on reference Vars


def test_grad_calls_do_not_disturb_an_outer_tape():
    x = fad.Var(2.0)
    with fad.Tape() as t:
        y = x * x
        assert fad.grad(lambda v: v * v * v)(2.0) == 12.0
        z = y + 1.0
    assert len(t) == 3 and z.tape is t
    z.backward()
    assert x.grad == 4.0


def test_functools_wraps():
    def loss(x):
        """the loss"""
        return x * x
    assert fad.grad(loss).__name__ == "loss" and fad.grad(loss).__doc__ == "the loss"


def test_grad_of_grad_is_a_clear_error_pointing_to_hessian():
    with pytest.raises(TypeError, match="grad of grad.*fad.hessian"):
        fad.grad(fad.grad(lambda x: x * x * x))(2.0)
    assert fad.hessian(lambda x: x[0] * x[0] * x[0])([2.0]).tolist() == [[12.0]]


def test_a_leaf_passed_to_grad_is_told_to_pass_its_value():
    """A leaf Var or Array is no grad of grad: the error says to pass .value."""
    for arg in ([fad.Var(1.0)], fad.Array(np.ones(2))):
        with pytest.raises(TypeError, match=r"grad takes numbers and arrays and makes its own leaves \(pass its \.value\)"):
            fad.grad(lambda v: 1.0)(arg)


@pytest.mark.parametrize("call", [
    lambda: fad.grad(lambda x: fad.grad(lambda y: y * x)(1.0))(3.0),
    lambda: fad.grad(lambda x: fad.value_and_grad(lambda y: y * x)(2.0)[0])(3.0),
    lambda: fad.grad(lambda x: fad.grad(lambda y: y * x[0])(1.0))([3.0, 1.0]),
    lambda: fad.grad(lambda d: fad.grad(lambda y: y * d["a"])(1.0))({"a": 3.0}),
    lambda: fad.grad(lambda x: fad.grad(lambda y: (y * x).sum())(np.ones(2)).sum())(np.ones(2)),
    lambda: fad.hessian(lambda x: fad.grad(lambda y: y * y * x)(2.0))(3.0),
    lambda: fad.compile(lambda x: fad.grad(lambda y: y * x)(1.0), 3.0),
    lambda: fad.grad(lambda x: fad.grad(lambda y: y * fad.sin(x))(1.0))(3.0),
    lambda: fad.grad(lambda x: (lambda s: fad.grad(lambda y: y * s)(1.0))(fad.sin(x)))(3.0),
    lambda: fad.grad(lambda d: fad.grad(lambda y: (y * d["a"]).sum())(np.ones(2)).sum())({"a": np.ones(2)}),
], ids=["grad", "value_and_grad", "list", "dict", "array", "hessian", "compile", "sin-inside",
        "made-outside", "dict-of-arrays"])
def test_grad_of_grad_through_a_closure_raises(call):
    # the inner gradient is a number, cut from the outer argument: the outer
    # derivative came out 0 with no error
    with pytest.raises(fad.FastADError, match="enclosing grad"):
        call()


def test_a_grad_inside_a_grad_of_its_own_numbers_is_fine():
    assert fad.grad(lambda x: x * fad.grad(lambda y: y * y)(2.0))(3.0) == 4.0
    assert fad.grad(lambda x: x * fad.grad(lambda y: y * y)(x.value))(3.0) == 6.0
    with fad.Tape():  # a user's tape around both: not an enclosing grad
        assert fad.grad(lambda y: y * y)(3.0) == 6.0
    w = fad.Var(2.0) * 1.0  # a value recorded outside, on no grad's tape: a constant to f
    assert fad.grad(lambda y: y * w)(1.0) == 2.0


def test_jacobian_and_hessian_pass_other_arguments_through_as_grad_does():
    # an index, a flag, a name: grad hands them to f untouched; so do these now
    # (they became Vars: "list indices must be integers", "the arguments[1] is a str")
    f = lambda x, i: x[i] * x[0]  # noqa: E731
    x = [1.0, 2.0, 3.0]
    assert fad.grad(f)(x, 2) == [3.0, 0.0, 1.0]
    np.testing.assert_array_equal(fad.hessian(f)(x, 2), [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(fad.jacobian(f)(x, 2), [3.0, 0.0, 1.0])
    assert fad.hessian(lambda x, mode: x * x if mode == "sq" else x)(3.0, "sq") == 2.0
    g = lambda s, x, y: s * x * y * y  # noqa: E731
    H = fad.hessian(g, argnums=(1, 2))(2.0, 3.0, 5.0)  # s is no argnum: passed through
    assert H[0][1] == 2.0 * 2 * 5.0 and H[1][1] == 2.0 * 2 * 3.0
    assert fad.jacobian(g, argnums=2)(2.0, 3.0, 5.0) == 2.0 * 3.0 * 2 * 5.0


def test_arguments_that_hold_themselves_or_nest_too_deeply_raise_value_error():
    cyclic = [1.0]
    cyclic.append(cyclic)
    deep = 1.0
    for _ in range(5000):
        deep = [deep]
    for arg in (cyclic, deep):  # were a RecursionError
        with pytest.raises(ValueError, match="nested too deeply, or holds itself"):
            fad.grad(lambda x: 1.0)(arg)


@pytest.mark.parametrize("arg", [[1.0, 2.0], {"a": 1.0, "b": 2.0}, {"a": np.ones(2), "b": 2.0}],
                         ids=["list", "dict", "dict-of-arrays"])
def test_f_changing_its_argument_does_not_change_the_leaves_read_back(arg):
    """grad reads back the leaves it made, not the list or dict f got: f may
    append to it, rebind or pop an entry (an append of an object used to
    crash the interpreter: the fast path read it back as a leaf)."""
    first = "a" if isinstance(arg, dict) else 0

    def grow(p):
        if isinstance(p, dict):
            p["new"] = object()
        else:
            p.append(object())
        return p[first] * 3.0 if not isinstance(p[first], fad.Array) else (p[first] * 3.0).sum()

    def rebind(p):
        p[first] = p[first] * 2.0  # the argument's entry is still the leaf grad made
        return p[first] * p[first] if not isinstance(p[first], fad.Array) else (p[first] * p[first]).sum()

    def pop(p):
        v = p.pop(first)
        return v * 1.0 if not isinstance(v, fad.Array) else v.sum()

    for f in (grow, rebind, pop):
        got = fad.grad(f)(arg)
        want = fad.grad(lambda q: f(q[0]))([arg])[0]  # the tree walk reads its own leaf list
        assert type(got) is type(arg) and list(got if isinstance(got, dict) else range(len(got))) == \
            list(arg if isinstance(arg, dict) else range(len(arg)))
        for k in (arg if isinstance(arg, dict) else range(len(arg))):
            np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(fad.grad(rebind)(arg)[first], 8.0 * np.asarray(arg[first]))  # d (2a)^2 / da


@pytest.mark.parametrize("call", [
    lambda: fad.grad(lambda w: fad.grad(lambda v: w)(1.0))(3.0),
    lambda: fad.value_and_grad(lambda x: fad.value_and_grad(lambda y: x)(1.0)[0])(2.0),
    lambda: fad.grad(lambda p: fad.grad(lambda v: p["w"])(1.0))({"w": 3.0}),
], ids=["grad", "value_and_grad", "dict"])
def test_an_inner_grad_returning_an_enclosing_grads_leaf_raises(call):
    # as x * 1.0 in its place does: the inner sweep added 1 to the outer
    # leaf's gradient (1.0), then, that fixed, the outer derivative came out 0
    with pytest.raises(fad.FastADError, match="enclosing grad"):
        call()


def test_a_function_returning_its_own_leaf_has_gradient_one():
    assert fad.grad(lambda v: v)(2.0) == 1.0
    assert fad.grad(lambda v, u: v, argnums=(0, 1))(2.0, 1.0) == (1.0, 0.0)
    assert fad.grad(lambda p: p["a"])({"a": 2.0, "b": 1.0}) == {"a": 1.0, "b": 0.0}
    assert fad.grad(lambda x: x * fad.grad(lambda y: y)(2.0))(3.0) == 1.0  # an inner grad of its own leaf


@pytest.mark.parametrize("arg", [np.ones(2), {"a": np.ones(2)}, [1.0, 2.0], 1.0])
def test_value_and_grad_names_itself_in_the_scalar_output_error(arg):
    for transform in (fad.value_and_grad, fad.grad):
        with pytest.raises(ValueError, match=f"^{transform.__name__} needs a function with a scalar output"):
            transform(lambda p: [1.0, 2.0])(arg)
    cf = fad.compile(lambda p: [1.0, 2.0], arg)
    with pytest.raises(ValueError, match="^value_and_grad needs"):
        cf.value_and_grad(arg)


# ---------------------------------------------------------------------------
# an argument that f also uses on another tape
# ---------------------------------------------------------------------------

def _on_a_tape_of_its_own(v):
    with fad.Tape():
        v * 2.0


def _in_explain(v):
    fad.explain(lambda t: (t * v).sum() if isinstance(v, fad.Array) else t * v, 1.0)


def _in_a_thread(v):
    import threading
    th = threading.Thread(target=lambda: v * 2.0)  # the thread's own implicit tape
    th.start()
    th.join()


def _leaves_of(arg):
    """The numbers and arrays of an argument tree, where f can reach them."""
    if isinstance(arg, dict):
        return [x for v in arg.values() for x in _leaves_of(v)]
    if isinstance(arg, (list, tuple)):
        return [x for v in arg for x in _leaves_of(v)]
    return [arg]


def _loss(arg, detour, back):
    leaves = _leaves_of(arg)
    total = sum((leaf * leaf).sum() if isinstance(leaf, fad.Array) else leaf * leaf for leaf in leaves)
    for leaf in leaves:
        detour(leaf)
    if back:  # used on grad's tape again after the detour
        total = total + sum(leaf.sum() if isinstance(leaf, fad.Array) else 3.0 * leaf for leaf in leaves)
    return total


@pytest.mark.parametrize("back", [True, False], ids=["back", "not-back"])
@pytest.mark.parametrize("detour", [_on_a_tape_of_its_own, _in_explain, _in_a_thread])
@pytest.mark.parametrize("arg", [2.0, [2.0, -1.0], {"a": 2.0, "b": np.array([1.0, -3.0])},
                                 np.array([0.5, 2.0]), ([2.0], {"c": 1.5})],
                         ids=["number", "list", "dict", "ndarray", "tree"])
def test_an_argument_used_on_another_tape_too_keeps_its_whole_gradient(arg, detour, back):
    """f's argument used on another tape inside f comes back to grad's with
    a second INPUT row (or none at all): the gradient still adds up every
    use, the one f without the detour gives. Before, grad read only the
    leaf's last row: 1.0 for x * x + x at 2.0 instead of 5.0, or 0.0."""
    got = fad.grad(lambda a: _loss(a, detour, back))(arg)
    want = fad.grad(lambda a: _loss(a, lambda leaf: None, back))(arg)
    for g, w in zip(_leaves_of(got), _leaves_of(want)):
        np.testing.assert_array_equal(g, w)
    assert any(np.any(np.asarray(w) != 0) for w in _leaves_of(want))


def test_compile_refuses_an_argument_used_on_another_tape_in_between():
    with pytest.raises(fad.FastADError, match="another tape"):
        fad.compile(lambda x: _loss(x, _on_a_tape_of_its_own, True), [2.0, 1.0])
    with pytest.raises(fad.FastADError, match="another tape"):
        fad.compile(lambda x: _loss([x], _on_a_tape_of_its_own, True), np.array([2.0, 1.0]))
    cf = fad.compile(lambda x: _loss(x, _on_a_tape_of_its_own, False), [2.0, 1.0])  # one row each: fine
    assert cf.grad([3.0, -1.0]) == [6.0, -2.0]


@pytest.mark.parametrize("transform", [lambda f: fad.grad(f)(2.0), lambda f: fad.compile(f, 2.0)],
                         ids=["grad", "compile"])
def test_backward_inside_a_recorded_function_says_what_happened(transform):
    # it named "this `with fad.Tape()` block", which the user did not write
    with pytest.raises(fad.FastADError, match="called backward"):
        transform(lambda x: ((x * x).backward(), x * 3.0)[1])


def test_a_replay_refuses_an_argument_joined_to_a_value_recorded_before_the_call():
    """v * x with v recorded on an open tape: x joins v's tape, and compile
    read the output as a constant (gradient 0; fad.grad sweeps v's tape: 6)."""
    with fad.Tape():
        v = fad.Var(2.0) * 3.0
        B = fad.Array(np.ones(3)) * 2.0
        assert fad.grad(lambda x: v * x)(2.0) == 6.0
        for f in (lambda x: v * x, lambda x: B[1] * x):
            with pytest.raises(fad.FastADError, match="another tape"):
                fad.compile(f, 1.0)
            with pytest.raises(fad.FastADError, match="another tape"):
                fad.jacobian(f)(1.0)
        assert fad.compile(lambda x: v + 1.0, 1.0).grad(2.0) == 0.0  # v alone: a constant of f


@pytest.mark.parametrize("transform", [
    lambda y: fad.jacobian(lambda z: z * y)(3.0),
    lambda y: fad.vjp(lambda z: z * y, 3.0),
    lambda y: fad.jvp(lambda z: z * y, (3.0,), (1.0,)),
    lambda y: fad.hessian(lambda z: z * y * z)(3.0),
], ids=["jacobian", "vjp", "jvp", "hessian"])
def test_a_replay_says_it_cannot_read_a_recorded_value_it_closes_over(transform):
    """y = x * x recorded on the thread's tape, then read by f: the errors
    said f used its argument on another tape, which it had not."""
    x = fad.Var(2.0)
    with pytest.raises(fad.FastADError, match=r"^the function combines its argument with a value recorded on another tape"):
        transform(x * x)

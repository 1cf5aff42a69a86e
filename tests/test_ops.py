"""The op table (fastad/ops.py) against the compiled core, op by op.

One parametrized family walks every differentiable op in ops.OPS (ids are
the op names), so a new op added to the table is tested without editing
this file beyond naming its NumPy twin in NP_FN:

(a) the core's value, on a Var and on plain floats, equals NumPy's;
(b) the core's gradient equals central finite differences, for every
    argument and every way of passing the arguments (Var / constant);
(c) the core's gradient equals the pure-Python reference's.

Then the conventions pinned at the kinks, IEEE results at domain errors,
and NumPy's dispatch to fastad (np.sin(v), np.float64(2) * v, ...).
"""
import math
import operator
import random

import numpy as np
import pytest

import fastad as fad
import fastad._core as core
from fastad import ops
from fastad import reference as ref

DIFFERENTIABLE = [s for s in ops.SCALAR_OPS if s.arity >= 1 and s.kind != "guard"]
over_ops = pytest.mark.parametrize("spec", DIFFERENTIABLE, ids=lambda s: s.name)

_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
              "div": operator.truediv, "neg": operator.neg}


def core_fn(name):
    """How a user calls op `name` on the core: an operator, or fad.<name>."""
    return _OPERATORS.get(name) or getattr(fad, name)


def ref_fn(name):
    return _OPERATORS.get(name) or getattr(ref, name)


# NumPy's (or math's) twin of each op: the independent oracle for values and
# finite differences.
NP_FN = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "neg": np.negative, "power": np.power,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "erf": math.erf,
    "abs": np.abs,
}


def np_fn(name):
    return NP_FN.get(name) or getattr(np, name)


def test_every_differentiable_op_has_an_oracle():
    for spec in DIFFERENTIABLE:
        assert callable(np_fn(spec.name)), spec.name
        assert callable(core_fn(spec.name)), spec.name
        assert callable(ref_fn(spec.name)), spec.name


def modes(spec):
    """The ways of passing the arguments: 'v' a Var, 'c' a plain constant."""
    if spec.arity == 1:
        return [("v",)]
    return [("v", "v"), ("v", "c"), ("c", "v")]


def points(spec, n=5):
    lo, hi = spec.domain
    return [tuple(random.uniform(lo, hi) for _ in range(spec.arity)) for _ in range(n)]


def grads(module_fn, var_cls, args, mode):
    """Gradient of fn(*args) w.r.t. every argument passed as a Var (None for
    constants), and the output's value."""
    inputs = [var_cls(a) if m == "v" else a for a, m in zip(args, mode)]
    out = module_fn(*inputs)
    out.backward()
    return [v.grad if m == "v" else None for v, m in zip(inputs, mode)], out.value


def central_difference(fn, args, k):
    h = 1e-6 * max(1.0, abs(args[k]))
    up, down = list(args), list(args)
    up[k] += h
    down[k] -= h
    return (float(fn(*up)) - float(fn(*down))) / (2 * h)


def same(a, b, rel=1e-12):
    """a equals b to `rel` relative (zero only equals zero; nan equals nan)."""
    if a != a or b != b:
        return a != a and b != b
    return a == pytest.approx(b, rel=rel, abs=1e-300)


# ---------------------------------------------------------------------------
# The family: value, finite differences, reference
# ---------------------------------------------------------------------------

@over_ops
def test_value_matches_numpy(spec):
    fn, oracle = core_fn(spec.name), np_fn(spec.name)
    for args in points(spec):
        expected = float(oracle(*args))
        on_floats = fn(*args)
        assert type(on_floats) is float, f"{spec.name} on floats returned {type(on_floats)}"
        assert same(on_floats, expected), (spec.name, args, on_floats, expected)
        if getattr(fad, spec.name, None) is fn:  # fad.<name>, not an operator: NumPy's scalars are numbers too
            on_zero_d = fn(*[np.array(a) for a in args])
            assert type(on_zero_d) is float and same(on_zero_d, expected), (spec.name, args, on_zero_d)
        for mode in modes(spec):
            inputs = [fad.Var(a) if m == "v" else a for a, m in zip(args, mode)]
            out = fn(*inputs)
            assert isinstance(out, fad.Var) and out.tape is not None, (spec.name, mode)
            assert type(out.value) is float
            assert same(out.value, expected), (spec.name, args, mode, out.value, expected)


@over_ops
def test_grad_matches_finite_differences(spec):
    fn, oracle = core_fn(spec.name), np_fn(spec.name)
    for args in points(spec):
        for mode in modes(spec):
            got, _ = grads(fn, fad.Var, args, mode)
            for k, g in enumerate(got):
                if g is None:
                    continue
                fd = central_difference(oracle, args, k)
                assert abs(g - fd) <= 1e-6 * max(1.0, abs(fd)), (spec.name, args, mode, k, g, fd)


@over_ops
def test_grad_matches_reference(spec):
    fn, rfn = core_fn(spec.name), ref_fn(spec.name)
    for args in points(spec):
        for mode in modes(spec):
            got, value = grads(fn, fad.Var, args, mode)
            want, ref_value = grads(rfn, ref.Var, args, mode)
            assert same(value, ref_value), (spec.name, args, mode, value, ref_value)
            for k, (g, r) in enumerate(zip(got, want)):
                assert (g is None) == (r is None)
                if g is not None:
                    assert same(g, r), (spec.name, args, mode, k, g, r)


@over_ops
def test_partials_rule_matches_reference_table(spec):
    # The core's rule table (op_partials_py) against the reference's
    # DERIVATIVES, at the same points: the formulas are written twice.
    for args in points(spec):
        x, y = (args[0], 0.0) if spec.arity == 1 else args
        f = ref.FORWARD[spec.name](*args)
        dx, dy = core.op_partials_py(spec.code, x, y)
        assert same(core.op_value_py(spec.code, x, y), f)
        if spec.arity == 1:
            assert same(dx, ref.DERIVATIVES[spec.name](x, None, f)), (spec.name, x)
            assert dy == 0.0
        else:
            rdx, rdy = ref.DERIVATIVES[spec.name](x, y, f)
            assert same(dx, rdx) and same(dy, rdy), (spec.name, x, y, (dx, dy), (rdx, rdy))


# ---------------------------------------------------------------------------
# The core's table is the op table
# ---------------------------------------------------------------------------

def test_core_table_matches_ops():
    assert core.OP_CODES == {s.name: s.code for s in ops.OPS}
    assert core.N_OP_CODES == len(ops.OPS)
    assert [s.code for s in ops.OPS] == list(range(len(ops.OPS)))  # dense, in order
    for spec in ops.SCALAR_OPS:
        x, y = 0.7, -1.3
        dx, dy = core.op_partials_py(spec.code, x, y)
        if spec.arity == 0 or spec.kind == "guard":
            assert (dx, dy) == (0.0, 0.0), spec.name
            if spec.kind == "guard":
                compare = {"lt": operator.lt, "le": operator.le, "gt": operator.gt,
                           "ge": operator.ge, "eq": operator.eq, "ne": operator.ne}[spec.name]
                for a, b in ((x, y), (y, x), (x, x)):
                    assert core.op_value_py(spec.code, a, b) == float(compare(a, b)), spec.name
        elif spec.arity == 1:
            # A unary op ignores y: neither its value nor its partial reads it.
            assert dy == 0.0, spec.name
            assert core.op_partials_py(spec.code, x, 5.0) == (dx, 0.0), spec.name
            assert core.op_value_py(spec.code, x, y) == core.op_value_py(spec.code, x, 5.0)
        else:
            # A binary op's value and partials read y.
            assert core.op_value_py(spec.code, x, y) != core.op_value_py(spec.code, x, 2.5), spec.name
            if spec.kind == "kink":  # maximum / minimum: all of it to one side
                assert sorted((dx, dy)) == [0.0, 1.0], spec.name
            elif spec.name not in ("add", "sub"):
                assert core.op_partials_py(spec.code, x, 2.5) != (dx, dy), spec.name
                assert dy != 0.0, spec.name
    for bad in (-1, len(ops.OPS), 255):
        with pytest.raises(ValueError):
            core.op_partials_py(bad, 1.0, 1.0)
        with pytest.raises(ValueError):
            core.op_value_py(bad, 1.0, 1.0)


# ---------------------------------------------------------------------------
# Kinks: the conventions, exactly at the kink
# ---------------------------------------------------------------------------

def grad_at(fn, *values):
    vs = [fad.Var(v) for v in values]
    out = fn(*vs)
    out.backward()
    return tuple(v.grad for v in vs)


def test_relu_abs_sign_at_zero():
    assert grad_at(fad.relu, 0.0) == (0.0,)
    assert grad_at(fad.abs, 0.0) == (0.0,)
    assert grad_at(abs, 0.0) == (0.0,)
    assert grad_at(fad.abs, -2.0) == (-1.0,) and grad_at(fad.abs, 2.0) == (1.0,)
    assert grad_at(fad.relu, 1e-300) == (1.0,) and grad_at(fad.relu, -1e-300) == (0.0,)
    for v in (-2.0, 0.0, 3.0):
        assert grad_at(fad.sign, v) == (0.0,)
    assert fad.sign(fad.Var(-2.0)).value == -1.0 and fad.sign(0.0) == 0.0


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_tie_splits(name):
    fn = getattr(fad, name)
    assert grad_at(fn, 1.5, 1.5) == (0.5, 0.5)
    assert grad_at(fn, 0.0, 0.0) == (0.5, 0.5)
    # With a constant on either side the Var gets its half of the tie.
    x = fad.Var(1.5)
    fn(x, 1.5).backward()
    assert x.grad == 0.5
    x = fad.Var(1.5)
    fn(1.5, x).backward()
    assert x.grad == 0.5


def test_maximum_routes_to_the_larger():
    assert grad_at(fad.maximum, 3.0, 1.0) == (1.0, 0.0)
    assert grad_at(fad.maximum, 1.0, 3.0) == (0.0, 1.0)  # the second argument wins
    assert grad_at(lambda x: fad.maximum(x, 0.0), 2.0) == (1.0,)
    assert grad_at(lambda x: fad.maximum(x, 0.0), -2.0) == (0.0,)
    assert grad_at(lambda x: fad.maximum(0.0, x), 2.0) == (1.0,)
    assert grad_at(lambda x: fad.maximum(0.0, x), -2.0) == (0.0,)


def test_minimum_routes_to_the_smaller():
    assert grad_at(fad.minimum, 1.0, 3.0) == (1.0, 0.0)
    assert grad_at(fad.minimum, 3.0, 1.0) == (0.0, 1.0)  # the second argument wins
    assert grad_at(lambda x: fad.minimum(x, 0.0), -2.0) == (1.0,)
    assert grad_at(lambda x: fad.minimum(x, 0.0), 2.0) == (0.0,)
    assert grad_at(lambda x: fad.minimum(5.0, x), 2.0) == (1.0,)
    assert grad_at(lambda x: fad.minimum(0.0, x), 2.0) == (0.0,)
    assert core.op_partials_py(ops.BY_NAME["minimum"].code, 3.0, 1.0) == (0.0, 1.0)
    assert core.op_partials_py(ops.BY_NAME["maximum"].code, 1.0, 3.0) == (0.0, 1.0)


def test_sqrt_and_cbrt_at_zero_are_infinite():
    for zero in (0.0, -0.0):  # sqrt'(0) = inf at either zero (0.5 / -0.0 would be -inf)
        assert grad_at(fad.sqrt, zero) == (math.inf,)
        assert grad_at(fad.cbrt, zero) == (math.inf,)
    a = fad.Array(np.array([0.0, -0.0]))
    np.sqrt(a).sum().backward()
    assert a.grad.tolist() == [math.inf, math.inf]
    assert fad.hessian(lambda x: fad.sqrt(x[0]))(np.array([-0.0])).tolist() == [[-math.inf]]


NAN = math.nan


@pytest.mark.parametrize("name,f,args", [
    ("sqrt at -0", lambda m: m.sqrt, (-0.0,)),
    ("abs at nan", lambda m: m.abs, (NAN,)),              # sign(nan): nan
    ("relu at nan", lambda m: m.relu, (NAN,)),
    ("sign at nan", lambda m: m.sign, (NAN,)),
    ("maximum(nan, 1)", lambda m: m.maximum, (NAN, 1.0)),  # a nan: y takes the adjoint
    ("maximum(1, nan)", lambda m: m.maximum, (1.0, NAN)),
    ("minimum(nan, 1)", lambda m: m.minimum, (NAN, 1.0)),  # the same rule as maximum
    ("minimum(1, nan)", lambda m: m.minimum, (1.0, NAN)),
    ("sign at -0", lambda m: m.sign, (-0.0,)),
], ids=lambda p: p if isinstance(p, str) else "")
def test_edges_agree_with_the_reference(name, f, args):
    """At -0.0 and nan the core and the reference pick the same piece, bit
    for bit (value, and every partial, sign of zero included)."""
    nums = tuple(range(len(args)))
    got = fad.value_and_grad(f(fad), argnums=nums)(*args)
    want = ref.value_and_grad(f(ref), argnums=nums)(*args)
    pack = lambda vg: [vg[0], *vg[1]]  # noqa: E731
    assert [(math.copysign(1.0, v), v) if v == v else "nan" for v in pack(got)] == \
           [(math.copysign(1.0, v), v) if v == v else "nan" for v in pack(want)]


def test_sign_of_minus_zero_is_plus_zero_as_numpy():
    for v in (fad.sign(-0.0), fad.sign(fad.Var(-0.0)).value, float(fad.sign(np.array([-0.0]))[0])):
        assert v == 0.0 and math.copysign(1.0, v) == 1.0
    assert math.copysign(1.0, float(np.sign(-0.0))) == 1.0


def test_power_conventions_at_zero():
    # d/dx x**y at y = 0 is 0 (not 0 * inf = nan at x = 0).
    assert grad_at(fad.power, 0.0, 0.0) == (0.0, 0.0)
    assert grad_at(fad.power, 2.0, 0.0) == (0.0, math.log(2.0))
    assert grad_at(lambda x: fad.power(x, 0.0), 0.0) == (0.0,)
    # d/dy x**y at x = 0 is 0 (not 0 * -inf = nan).
    assert grad_at(fad.power, 0.0, 2.0) == (0.0, 0.0)
    assert grad_at(fad.power, 0.0, 3.0) == (0.0, 0.0)
    assert grad_at(lambda y: fad.power(0.0, y), 2.5) == (0.0,)
    assert grad_at(lambda y: 0.0 ** y, 2.5) == (0.0,)
    # and the regular case, for contrast
    assert grad_at(fad.power, 2.0, 3.0) == (12.0, 8.0 * math.log(2.0))


def test_hypot_at_origin():
    assert grad_at(fad.hypot, 0.0, 0.0) == (0.0, 0.0)
    assert grad_at(lambda x: fad.hypot(x, 0.0), 0.0) == (0.0,)
    assert grad_at(fad.hypot, 3.0, 4.0) == (0.6, 0.8)
    assert grad_at(fad.hypot, -3.0, 0.0) == (-1.0, 0.0)


@pytest.mark.parametrize("x, value, slope", [
    (-1.0, 0.0, 0.0),   # beyond the lower bound
    (0.0, 0.0, 0.5),    # at it: maximum's tie
    (0.25, 0.25, 1.0),  # inside
    (1.0, 1.0, 0.5),    # at the upper bound: minimum's tie
    (2.0, 1.0, 0.0),    # beyond it
])
def test_clip_at_and_beyond_bounds(x, value, slope):
    v = fad.Var(x)
    out = fad.clip(v, 0.0, 1.0)
    out.backward()
    assert (out.value, v.grad) == (value, slope)
    r = ref.Var(x)
    rout = ref.clip(r, 0.0, 1.0)
    rout.backward()
    assert (rout.value, r.grad) == (value, slope)
    assert fad.clip(x, 0.0, 1.0) == value


def test_clip_with_var_bounds():
    x, lo, hi = fad.Var(-1.0), fad.Var(0.0), fad.Var(1.0)
    fad.clip(x, lo, hi).backward()
    assert (x.grad, lo.grad, hi.grad) == (0.0, 1.0, 0.0)
    x, lo, hi = fad.Var(5.0), fad.Var(0.0), fad.Var(1.0)
    fad.clip(x, lo, hi).backward()
    assert (x.grad, lo.grad, hi.grad) == (0.0, 0.0, 1.0)


# ---------------------------------------------------------------------------
# IEEE results, never exceptions
# ---------------------------------------------------------------------------

def test_domain_errors_give_ieee_values():
    assert math.isnan(fad.log(fad.Var(-1.0)).value)
    assert fad.log(fad.Var(0.0)).value == -math.inf
    assert (1 / fad.Var(0.0)).value == math.inf
    assert (-1 / fad.Var(0.0)).value == -math.inf
    assert (fad.Var(1.0) / 0.0).value == math.inf
    assert math.isnan(fad.sqrt(fad.Var(-1.0)).value)
    assert math.isnan(fad.arcsin(fad.Var(2.0)).value)
    assert fad.exp(fad.Var(1000.0)).value == math.inf
    assert math.isnan(fad.power(fad.Var(-1.0), 0.5).value)
    # plain numbers too (Python's math would raise here)
    assert math.isnan(fad.log(-1.0)) and fad.log(0.0) == -math.inf
    assert math.isnan(fad.sqrt(-1.0)) and fad.exp(1000.0) == math.inf


def test_domain_errors_sweep_without_exceptions():
    y = fad.Var(0.0)
    out = 1 / y
    out.backward()
    assert y.grad == -math.inf
    x = fad.Var(-1.0)
    fad.log(x).backward()
    assert x.grad == -1.0  # 1/x is defined even where log is not
    x = fad.Var(-1.0)
    fad.sqrt(x).backward()
    assert math.isnan(x.grad)
    rx = ref.Var(-1.0)
    ref.sqrt(rx).backward()
    assert math.isnan(rx.grad)


def test_infinite_partial_behind_a_dead_branch_is_not_nan():
    # sqrt'(0) = inf, but relu is off: the sweep's absolute zero keeps 0 * inf = 0.
    x = fad.Var(0.0)
    out = fad.relu(-1.0 - x) * 0.0 + fad.relu(fad.sqrt(x) - 1.0)
    out.backward()
    assert x.grad == 0.0


# ---------------------------------------------------------------------------
# NumPy dispatch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("expr, value, slope", [
    (lambda v: np.sin(v), math.sin(2.0), math.cos(2.0)),
    (lambda v: np.exp(v), math.exp(2.0), math.exp(2.0)),
    (lambda v: np.float64(2.0) * v, 4.0, 2.0),
    (lambda v: v * np.float64(2.0), 4.0, 2.0),
    (lambda v: np.maximum(v, 0), 2.0, 1.0),
    (lambda v: np.maximum(0, v * -1), 0.0, 0.0),
    (lambda v: 2 ** v, 4.0, 4.0 * math.log(2.0)),
    (lambda v: np.float64(2.0) ** v, 4.0, 4.0 * math.log(2.0)),
    (lambda v: np.add(v, 1.0), 3.0, 1.0),
    (lambda v: np.float64(1.0) - v, -1.0, -1.0),
    (lambda v: np.sqrt(v), math.sqrt(2.0), 0.5 / math.sqrt(2.0)),
], ids=["sin", "exp", "f64*v", "v*f64", "maximum", "maximum-off", "2**v", "f64**v",
        "add", "f64-v", "sqrt"])
def test_numpy_dispatch_records(expr, value, slope):
    v = fad.Var(2.0)
    out = expr(v)
    assert type(out) is fad.Var and out.tape is not None
    assert out.value == pytest.approx(value, rel=1e-15)
    out.backward()
    assert v.grad == pytest.approx(slope, rel=1e-15)


def test_object_array_times_var():
    v1, v2, v = fad.Var(1.0), fad.Var(2.0), fad.Var(3.0)
    arr = np.array([v1, v2]) * v
    assert isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == (2,)
    assert all(type(e) is fad.Var for e in arr)
    assert [e.value for e in arr] == [3.0, 6.0]
    (arr[0] + arr[1]).backward()
    assert (v1.grad, v2.grad, v.grad) == (3.0, 3.0, 3.0)


def test_var_times_object_array():
    v1, v2, v = fad.Var(1.0), fad.Var(2.0), fad.Var(3.0)
    arr = v * np.array([v1, v2])
    assert arr.dtype == object and [e.value for e in arr] == [3.0, 6.0]


def test_object_array_ufuncs():
    v1, v2 = fad.Var(1.0), fad.Var(2.0)
    arr = np.sin(np.array([v1, v2]))
    assert arr.dtype == object and [e.value for e in arr] == [math.sin(1.0), math.sin(2.0)]
    arr = np.array([v1, v2]) * 2.0
    assert [e.value for e in arr] == [2.0, 4.0]
    arr[1].backward()
    assert (v1.grad, v2.grad) == (0.0, 2.0)


@pytest.mark.parametrize("name", ["arctan2", "hypot"])
def test_numpy_binary_ufuncs_on_object_arrays(name):
    """np.hypot and np.arctan2 call the first element's method of that name
    (AttributeError before): with a float or Var second operand, the same
    values and derivatives as fad's function."""
    xs, ys = [1.0, -2.0], [3.0, 0.5]
    vs = [fad.Var(x) for x in xs]
    arr = getattr(np, name)(np.array(vs), np.array([ys[0], fad.Var(ys[1])], dtype=object))
    assert [e.value for e in arr] == [getattr(fad, name)(x, y) for x, y in zip(xs, ys)]
    (arr[0] + arr[1]).backward()
    assert [v.grad for v in vs] == [fad.grad(lambda x: getattr(fad, name)(x, y))(x) for x, y in zip(xs, ys)]


@pytest.mark.parametrize("reduce", [np.sum, np.mean, np.prod, np.max, np.min, np.amax])
def test_numpy_reductions_of_a_scalar_are_the_scalar(reduce):
    """np.sum(v) and friends on a Var (a 1-D a @ b is one) give v itself:
    the same row, so the gradient flows through; an axis is an error."""
    x = fad.Var(3.0)
    with fad.Tape():
        y = x * x
        assert reduce(y) is y
    assert fad.grad(lambda a: reduce(a @ a))(np.array([1.0, 2.0])).tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="no axis"):
        reduce(y, axis=0)


@pytest.mark.parametrize("name", [n for n in ops.UNARY
                                  if isinstance(getattr(np, n, None), np.ufunc) and n != "sign"])
def test_numpy_unary_ufuncs_on_object_arrays(name):
    # NumPy's object loop calls each element's method of the ufunc's name.
    # (np.sign's object loop compares instead, giving ints: derivative 0 anyway.)
    lo, hi = ops.BY_NAME[name].domain
    xs = [lo + 0.3 * (hi - lo), lo + 0.8 * (hi - lo)]
    vs = [fad.Var(x) for x in xs]
    arr = getattr(np, name)(np.array(vs))
    assert arr.dtype == object and all(type(e) is fad.Var and e.tape is not None for e in arr)
    assert [e.value for e in arr] == [getattr(fad, name)(x) for x in xs]
    arr[1].backward()
    assert vs[0].grad == 0.0
    assert vs[1].grad == core.op_partials_py(ops.BY_NAME[name].code, xs[1])[0]


def test_math_functions_on_float_arrays():
    for name in ops.UNARY:
        xs = np.linspace(*ops.BY_NAME[name].domain, 7)
        got = getattr(fad, name)(xs)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == xs.shape
        want = np.array([float(np_fn(name)(x)) for x in xs])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=name)
    np.testing.assert_array_equal(fad.sin(np.array([0.5, 1.0, 2.0])), np.sin([0.5, 1.0, 2.0]))
    xs = np.linspace(0.1, 3.0, 7)
    grid = xs.reshape(7, 1)
    np.testing.assert_allclose(fad.hypot(grid, xs), np.hypot(grid, xs), rtol=1e-15)
    np.testing.assert_array_equal(fad.maximum(xs, 1.0), np.maximum(xs, 1.0))
    with pytest.raises(TypeError):
        fad.sin(np.array(["a"]))


def test_core_piecewise_ops_are_the_tables_kinks_and_guards():
    """The core's op_piecewise (which rows a replay checks) names exactly the
    ops that fastad/ops.py calls kinks or guards."""
    assert {s.code for s in ops.OPS if core.op_piecewise_py(s.code)} == {
        s.code for s in ops.OPS if s.kind in ("kink", "guard")}

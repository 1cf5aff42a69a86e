"""Tests of the pure-Python reference engine (fastad.reference)."""
import copy
import gc
import math
import operator
import pathlib
import random
import weakref

import numpy as np
import pytest

from fastad import ops
from fastad import reference as ref

Var = ref.Var
CODE = {spec.name: spec.code for spec in ops.OPS}


# ---------------------------------------------------------------------------
# Textbook examples, exact numbers
# ---------------------------------------------------------------------------

def test_x1_x2_plus_sin_x1():
    x1, x2 = Var(2.0), Var(3.0)
    z = x1 * x2 + ref.sin(x1)
    z.backward()
    assert z.value == 6.909297426825682
    assert (x1.grad, x2.grad) == (2.5838531634528574, 2.0)


def test_griewank_walther_example():
    x1, x2 = Var(2.0), Var(5.0)
    y = ref.log(x1) + x1 * x2 - ref.sin(x2)
    y.backward()
    assert (x1.grad, x2.grad) == (5.5, 1.7163378145367738)


def test_cs231n_example():
    assert ref.grad(lambda x, y, z: (x + y) * z, (0, 1, 2))(-2, 5, -4) == (-4.0, -4.0, 3.0)


def test_textbook_tape_rows():
    with ref.Tape() as t:
        x1, x2 = Var(2.0), Var(3.0)
        z = x1 * x2 + ref.sin(x1)
    z.backward()
    r = t.rows()
    assert r["op"].tolist() == [CODE[n] for n in ("input", "input", "mul", "sin", "add")]
    assert r["a"].tolist() == [-1, -1, 0, 0, 2] and r["b"].tolist() == [-1, -1, 1, -1, 3]
    assert r["op"].dtype == np.uint8 and r["a"].dtype == np.int32
    assert r["val"].dtype == np.float64 and r["c"].dtype == np.float64
    assert r["adj"].tolist() == [x1.grad, x2.grad, 1.0, 1.0, 1.0]
    assert t.inputs() == [(0, x1), (1, x2)]
    assert (z.tape, z.index, x1.tape, x1.index) == (t, 4, None, None)


# ---------------------------------------------------------------------------
# Every op against central finite differences
# ---------------------------------------------------------------------------

CALL = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
        "div": operator.truediv, "power": operator.pow, "neg": operator.neg}
SMOOTH = [s for s in ops.SCALAR_OPS if s.arity >= 1 and s.kind != "guard"]


def fd(f, args, k, h=1e-6):
    up, down = list(args), list(args)
    up[k] += h
    down[k] -= h
    return (f(*up) - f(*down)) / (2 * h)


@pytest.mark.parametrize("spec", SMOOTH, ids=[s.name for s in SMOOTH])
def test_op_against_finite_differences(spec):
    f = CALL.get(spec.name) or getattr(ref, spec.name)
    rng = random.Random(spec.code)
    for _ in range(5):
        point = [rng.uniform(*spec.domain) for _ in range(spec.arity)]
        # every argument a Var, then (binary ops) each one a constant in turn
        patterns = [(True,) * spec.arity]
        if spec.arity == 2:
            patterns += [(True, False), (False, True)]
        for pattern in patterns:
            args = [Var(p) if is_var else p for p, is_var in zip(point, pattern)]
            out = f(*args)
            assert out.tape.op[out.index] == spec.code
            assert out.value == f(*point)  # plain floats give the same value
            out.backward()
            for k, a in enumerate(args):
                if isinstance(a, Var):
                    assert a.grad == pytest.approx(fd(f, point, k), rel=1e-6, abs=1e-8)


def test_op_table_covered():
    """Every non-input op has a forward rule; every differentiable op a derivative."""
    for spec in ops.SCALAR_OPS[1:]:
        assert spec.name in ref.FORWARD
        assert (spec.name in ref.DERIVATIVES) == (spec.kind != "guard")
    for name in ops.UNARY + ops.BINARY_FUNCTIONS + ("where", "clip"):
        assert callable(getattr(ref, name)) and name in ref.__all__


# ---------------------------------------------------------------------------
# Kinks and IEEE semantics
# ---------------------------------------------------------------------------

def d(f, *point):
    """Partial derivatives of f at point, from the reference."""
    return ref.grad(f, tuple(range(len(point))))(*point)


def test_kink_conventions():
    assert d(ref.relu, 0.0) == (0.0,)
    assert d(ref.abs, 0.0) == (0.0,)
    assert d(ref.sign, 0.0) == d(ref.sign, 2.0) == (0.0,)
    assert d(ref.maximum, 1.0, 1.0) == (0.5, 0.5)
    assert d(ref.minimum, 1.0, 1.0) == (0.5, 0.5)
    assert d(ref.maximum, 2.0, 1.0) == (1.0, 0.0)
    assert d(ref.minimum, 2.0, 1.0) == (0.0, 1.0)
    assert d(ref.sqrt, 0.0) == (math.inf,)
    assert d(ref.cbrt, 0.0) == (math.inf,)
    assert d(ref.power, 0.0, 0.0) == (0.0, 0.0)  # y = 0 and x = 0 conventions
    assert d(ref.power, 3.0, 0.0) == (0.0, math.log(3.0))
    assert d(ref.power, 0.0, 2.5) == (0.0, 0.0)
    assert d(ref.hypot, 0.0, 0.0) == (0.0, 0.0)
    assert d(ref.clip, 5.0, 0.0, 1.0) == (0.0, 0.0, 1.0)


def test_ieee_results_never_raise():
    nan = math.isnan
    assert nan(ref.log(-1.0)) and ref.log(0.0) == -math.inf
    assert nan(ref.sqrt(-1.0)) and nan(ref.arcsin(2.0)) and nan(ref.power(-8.0, 1 / 3))
    assert ref.log1p(-1.0) == -math.inf and ref.log2(0) == ref.log10(0) == -math.inf
    assert ref.exp(1000.0) == math.inf and ref.sinh(-1000.0) == -math.inf
    assert ref.power(0.0, -1.0) == math.inf and ref.power(-0.0, -1.0) == -math.inf
    assert ref.power(-10.0, 309) == -math.inf
    assert (1 / Var(0.0)).value == math.inf and (-1 / Var(0.0)).value == -math.inf
    assert nan((0 / Var(0.0)).value) and nan(ref.log(Var(-1.0)).value)
    assert nan(ref.maximum(math.nan, 1.0)) and nan(ref.minimum(1.0, math.nan))
    assert ref.sigmoid(-1000.0) == 0.0 and ref.sigmoid(1000.0) == 1.0
    assert d(ref.log, 0.0) == (math.inf,)
    assert isinstance(ref.sin(1), float) and ref.sign(-3) == -1.0


# ---------------------------------------------------------------------------
# Row conventions, guards, where / clip
# ---------------------------------------------------------------------------

def row(v):
    r = v.tape.rows()
    i = v.index
    return ops.OPS[r["op"][i]].name, int(r["a"][i]), int(r["b"][i]), float(r["c"][i])


def test_constants_fold_into_c():
    x = Var(3.0)
    with ref.Tape():
        assert row(x + 2) == ("add", 0, -1, 2.0)
        assert row(2 - x) == ("sub", -1, 0, 2.0)
        assert row(x / 2) == ("div", 0, -1, 2.0)
        assert row(2.5 * x) == ("mul", -1, 0, 2.5)
        assert row(x ** 2) == ("square", 0, -1, 0.0)
        assert row(x ** 3) == ("power", 0, -1, 3.0)
        assert row(2 ** x) == ("power", -1, 0, 2.0)
        assert row(np.float64(2.0) * x) == ("mul", -1, 0, 2.0)
        assert row(-x) == ("neg", 0, -1, 0.0)
        assert row(abs(x)) == ("abs", 0, -1, 0.0)
        assert +x is x


def test_one_input_row_per_leaf_per_tape():
    x = Var(1.5)
    with ref.Tape() as t1:
        y = x * x + x
    with ref.Tape() as t2:
        z = ref.exp(x)
    assert [r for r, _ in t1.inputs()] == [0] and len(t2.inputs()) == 1
    assert t1.rows()["op"].tolist().count(0) == 1
    y.backward()
    z.backward()
    assert x.grad == pytest.approx(2 * 1.5 + 1 + math.exp(1.5))


def test_comparisons_return_bool_and_record_guards():
    x = Var(2.0)
    with ref.Tape() as t:
        results = [x < 3, x <= 1, x > 1.0, x >= 2, x == 2, x != 2, 3 > x]
    assert results == [True, False, True, True, True, False, True]
    assert all(type(r) is bool for r in results)
    r = t.rows()
    assert [ops.OPS[o].name for o in r["op"][1:]] == ["lt", "le", "gt", "ge", "eq", "ne", "lt"]
    assert r["val"][1:].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert x != "a" and len({x, Var(2.0)}) == 2  # foreign types; hash by identity


def test_where_and_clip():
    x = Var(2.0)
    with ref.Tape() as t:
        assert ref.where(x, "yes", "no") == "yes"
    assert ops.OPS[t.op[1]].name == "ne" and t.val[1] == 1.0
    assert ref.where(False, 1.0, 2.0) == 2.0 and ref.clip(3.0, 0.0, 1.0) == 1.0
    f = lambda x: ref.where(x > 0, x * x, -x)  # noqa: E731
    assert ref.grad(f)(3.0) == 6.0 and ref.grad(f)(-3.0) == -1.0


# ---------------------------------------------------------------------------
# Adjoints, leaves, tapes
# ---------------------------------------------------------------------------

def test_fork_accumulates_and_leaf_grads_accumulate():
    x = Var(3.0)
    y = x * x * x  # three uses of x
    y.backward(retain_graph=True)
    assert x.grad == 27.0
    y.backward(seed=2.0)
    assert x.grad == 27.0 + 54.0
    x.grad = 0.0
    assert x.grad == 0.0 and x.value == 3.0


def test_nonleaf_grad_and_reach():
    x, w = Var(2.0), Var(5.0)
    h = x * 3
    unused = w * 7  # recorded after h's inputs but never reached
    out = ref.sin(h)
    assert out.grad == 0.0 and out.tape.adj is None
    out.backward()
    assert out.grad == 1.0 and h.grad == math.cos(6.0)
    assert unused.grad == 0.0 and w.grad == 0.0


def test_leaf_backward_and_value():
    x = Var(2)
    x.backward()
    x.backward(3)
    assert x.grad == 4.0 and isinstance(x.value, float)
    x.value = 7
    assert float(x) == 7.0 and (x + 1).value == 8.0
    assert "Var(7.0" in repr(x) and "op=add" in repr(x + 1)


def test_with_tape_nests_and_restores():
    x = Var(1.0)
    with ref.Tape() as outer:
        a = x + 1
        with ref.Tape() as inner:
            b = x + 2
        c = x + 3
    assert a.tape is outer and c.tape is outer and b.tape is inner
    assert len(outer) == 3 and len(inner) == 2


def test_training_loop_does_not_keep_old_tapes():
    w = Var(0.5)
    tapes = []
    for _ in range(5):
        loss = (w * 2.0 - 1.0) ** 2
        tapes.append(weakref.ref(loss.tape))
        loss.backward()
        w.value -= 0.1 * w.grad
        w.grad = 0.0
    del loss
    gc.collect()
    assert all(t() is None for t in tapes)


def test_consumed_tape_starts_a_fresh_one():
    x = Var(1.0)
    y = x * 2
    y.backward()
    z = x * 3  # leaves only: a fresh tape, not the consumed one
    assert z.tape is not y.tape and z.value == 3.0


# ---------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------

def test_second_backward_raises():
    y = ref.exp(Var(1.0))
    y.backward()
    with pytest.raises(ref.FastADError, match="already swept.*retain_graph=True"):
        y.backward()


def test_consumed_var_cannot_be_used():
    y = ref.exp(Var(1.0))
    y.backward()
    assert y.value == math.e  # values stay readable
    with pytest.raises(ref.FastADError, match="already swept.*retain_graph=True"):
        y + 1


def test_mixing_tapes_raises():
    x = Var(1.0)
    with ref.Tape():
        a = x * 2
    with ref.Tape():
        b = x * 3
    with pytest.raises(ref.FastADError, match="different tapes"):
        a + b


@pytest.mark.parametrize("out", [[1.0, 2.0], (1.0,), np.zeros(3)],
                         ids=["list", "tuple", "ndarray"])
def test_grad_of_non_scalar_names_jacobian(out):
    with pytest.raises(ValueError, match="jacobian"):
        ref.grad(lambda x: out)(1.0)


def test_bad_inputs():
    with pytest.raises(TypeError):
        Var("2.0")
    with pytest.raises(TypeError):
        ref.sin("x")
    with pytest.raises(TypeError):
        Var(1.0) + "x"
    with pytest.raises(TypeError):
        ref.grad(lambda x: x)(Var(1.0))
    with pytest.raises(ref.FastADError):
        (Var(1.0) * 2).value = 3.0


# ---------------------------------------------------------------------------
# grad / value_and_grad
# ---------------------------------------------------------------------------

def test_grad_structures():
    def f(p, scale):
        return (p["w"][0] * p["w"][1] + p["b"]) * scale
    p = {"w": [2.0, 3], "b": (1.0,)[0]}
    g = ref.grad(f)(p, 10.0)
    assert g == {"w": [30.0, 20.0], "b": 10.0}
    assert all(type(v) is float for v in g["w"])
    value, (gp, gs) = ref.value_and_grad(f, (0, 1))(p, 10.0)
    assert value == 70.0 and gp == g and gs == 7.0
    assert ref.grad(lambda a, b: a[1] * b, 0)((1.0, 2.0), 4.0) == (0.0, 4.0)


def test_grad_constant_and_independent_outputs():
    assert ref.grad(lambda x: 3.0)(1.0) == 0.0
    assert ref.grad(lambda x, y: x * 2, (0, 1))(1.0, 5.0) == (2.0, 0.0)
    assert ref.grad(lambda x: x)(4.0) == 1.0
    assert ref.value_and_grad(lambda x: np.array([x * x]))(3.0) == (9.0, 6.0)
    outside = Var(2.0)
    assert ref.grad(lambda x: x * outside)(3.0) == 2.0
    assert outside.grad == 0.0  # grad() leaves other leaves alone


# ---------------------------------------------------------------------------
# Scale, and independence from the compiled core
# ---------------------------------------------------------------------------

def test_long_chain_is_not_recursive():
    x = Var(0.5)
    y = x
    for _ in range(200_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == 1.0 and len(y.tape) == 400_001


def test_reference_does_not_import_the_core():
    modules = sorted(pathlib.Path(ref.__file__).parent.glob("*.py"))  # every module of the package
    assert len(modules) > 1
    for path in modules:
        source = path.read_text()
        assert "_core" not in source and "_replay" not in source, path.name
    assert "from .. import ops" in pathlib.Path(ref.__file__).read_text()


def test_reference_is_reachable_as_an_attribute_of_the_package():
    import fastad as fad
    assert fad.reference is ref and fad.reference.grad(lambda x: x * x)(3.0) == 6.0


def test_copies_and_object_array_ufuncs_as_in_the_core():
    """As tests/test_core.py and tests/test_ops.py check of the core: a
    recorded value's copy is itself; a leaf's a new leaf; np.hypot and
    np.arctan2 of an object array call the Vars' methods."""
    x = ref.Var(2.0)
    assert copy.copy(x * x) is not None and ref.grad(lambda t: copy.copy(t * 1.0) * t)(2.0) == 4.0
    leaf = copy.deepcopy(x)
    assert leaf is not x and leaf.is_leaf and leaf.value == 2.0
    vs = [ref.Var(1.0), ref.Var(-2.0)]
    assert [e.value for e in np.hypot(np.array(vs), 3.0)] == [math.hypot(1.0, 3.0), math.hypot(-2.0, 3.0)]
    assert [e.value for e in np.arctan2(np.array(vs), 3.0)] == [math.atan2(1.0, 3.0), math.atan2(-2.0, 3.0)]

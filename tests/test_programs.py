"""Random scalar programs: the core and the reference agree on every one.

Hypothesis draws a straight-line program with fan-out (each step reads
random earlier values), binary and unary ops on safe domains, constants on
either side, Python branches on values and loops. The same program runs on
fastad and on fastad.reference; values and gradients must agree to 1e-12.
Compiled, the program's replays must give fad.grad's numbers exactly, and
its forward mode and Hessian must agree with its reverse mode.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastad as fad
from fastad import reference as ref

# Each step: (kind, i, j, constant, count). i and j pick earlier values
# (taken modulo how many exist), constant is a number in [-3, 3], count
# in 1..4 is a loop's trip count.
BINARY = ["add", "sub", "mul", "div_safe", "max", "min"]
UNARY = ["sin", "cos", "tanh", "sigmoid", "square", "gauss", "log1p_sq", "sqrt1p", "neg", "arctan"]
CONST = ["add_c", "c_sub", "mul_c", "c_mul", "c_div", "div_c", "pow_c"]
CONTROL = ["branch", "loop"]
KINDS = BINARY + UNARY + CONST + CONTROL

steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 1000),
              st.floats(-3.0, 3.0, allow_nan=False).filter(lambda c: abs(c) > 1e-3),
              st.integers(1, 4)),
    min_size=1, max_size=20)
inputs = st.lists(st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False), min_size=1, max_size=3)


def step(M, kind, x, y, c, count):
    """One instruction on module M (fastad or fastad.reference)."""
    if kind == "add":
        return x + y
    if kind == "sub":
        return x - y
    if kind == "mul":
        return x * y
    if kind == "div_safe":
        return x / (1.0 + y * y)
    if kind == "max":
        return M.maximum(x, y)
    if kind == "min":
        return M.minimum(x, y)
    if kind == "sin":
        return M.sin(x)
    if kind == "cos":
        return M.cos(x)
    if kind == "tanh":
        return M.tanh(x)
    if kind == "sigmoid":
        return M.sigmoid(x)
    if kind == "square":
        return M.square(x)
    if kind == "gauss":
        return M.exp(-x * x)
    if kind == "log1p_sq":
        return M.log1p(x * x)
    if kind == "sqrt1p":
        return M.sqrt(1.0 + x * x)
    if kind == "neg":
        return -x
    if kind == "arctan":
        return M.arctan(x)
    if kind == "add_c":
        return x + c
    if kind == "c_sub":
        return c - x
    if kind == "mul_c":
        return x * c
    if kind == "c_mul":
        return c * x
    if kind == "c_div":
        return c / (1.0 + x * x)
    if kind == "div_c":
        return x / c
    if kind == "pow_c":
        return (1.0 + x * x) ** (c / 3.0)
    if kind == "branch":  # a Python branch on a value
        if x > c / 3.0:
            return M.sin(x) * y
        return y - M.cos(x) * c
    if kind == "loop":  # a loop that reads y on every trip
        acc = x
        for _ in range(count):
            acc = acc * 0.5 + M.tanh(y)
        return acc
    raise AssertionError(kind)


def run(M, program, *xs):
    values = list(xs)
    for kind, i, j, c, count in program:
        v = step(M, kind, values[i % len(values)], values[j % len(values)], c, count)
        if v > 10.0 or v < -10.0:  # keep values bounded: a branch on the value
            v = 10.0 * M.tanh(v / 10.0)
        values.append(v)
    extra = values[len(xs):]
    return values[-1] + 0.25 * sum(extra[:-1], 0.0 * values[0])


def close(a, b):
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(program=steps, xs=inputs)
def test_core_matches_reference(program, xs):
    argnums = tuple(range(len(xs)))
    value, grads = fad.value_and_grad(lambda *a: run(fad, program, *a), argnums)(*xs)
    ref_value, ref_grads = ref.value_and_grad(lambda *a: run(ref, program, *a), argnums)(*xs)
    assert math.isfinite(ref_value)
    assert close(value, ref_value), (value, ref_value)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        assert type(g) is float
        assert close(g, r), (grads, ref_grads)


@settings(max_examples=60, deadline=None)
@given(program=steps, xs=inputs)
def test_var_backward_matches_functional(program, xs):
    # The same program through Var/backward on the core, with the inputs
    # passed as one list argument (grad's other code path).
    leaves = [fad.Var(x) for x in xs]
    out = run(fad, program, *leaves)
    out.backward()
    by_list = fad.grad(lambda p: run(fad, program, *p))(list(xs))
    ref_leaves = [ref.Var(x) for x in xs]
    ref_out = run(ref, program, *ref_leaves)
    ref_out.backward()
    assert close(out.value, ref_out.value)
    for v, g, r in zip(leaves, by_list, ref_leaves):
        assert close(v.grad, r.grad)
        assert close(g, r.grad)


@settings(max_examples=60, deadline=None)
@given(program=steps, xs=inputs)
def test_recomputed_values_are_the_recorded_ones(program, xs):
    # The tape keeps partials, not values; rows() recomputes the values from
    # the rows (compile and explain read them). They must be bit for bit the
    # values every Var was recorded with, or a trace would start from values
    # its recording never had.
    leaves = [fad.Var(x) for x in xs]
    with fad.Tape() as t:
        t.watch(*leaves)
        values = list(leaves)
        for kind, i, j, c, count in program:
            values.append(step(fad, kind, values[i % len(values)], values[j % len(values)], c, count))
    val = t.rows()["val"]
    assert [val[row] for row, _ in t.inputs()] == list(xs)
    for v in values[len(leaves):]:
        if isinstance(v, fad.Var) and v.index is not None:
            assert val[v.index] == v.value or (math.isnan(v.value) and math.isnan(val[v.index]))


@settings(max_examples=60, deadline=None)
@given(program=steps, xs=inputs, shift=st.floats(-0.5, 0.5, allow_nan=False))
def test_compiled_replays_match_the_recording(program, xs, shift):
    f = lambda p: run(fad, program, *p)  # noqa: E731
    cf = fad.compile(f, list(xs))
    for x in (list(xs), [v + shift for v in xs]):  # the recorded point, and one that may branch
        assert cf.value_and_grad(x) == fad.value_and_grad(f)(x)
        g = np.array(cf.grad(x))
        # forward mode (several directions a sweep) against reverse mode
        np.testing.assert_allclose(cf.jacobian(x, mode="fwd"), g, rtol=1e-12, atol=1e-12)
        # the Hessian, by blocks of directions: each column is the product
        # with that basis vector alone, and the matrix is symmetric
        H = cf.hessian(x)
        for j in range(len(x)):
            assert np.array_equal(H[:, j], cf.hvp(x, np.eye(len(x))[j].tolist()))
        np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-10)

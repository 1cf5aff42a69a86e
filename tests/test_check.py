"""fastad/check.py: gradients against central finite differences."""
import math
import types

import numpy as np
import pytest

import fastad.reference as ref
from fastad.check import check_grad


def _core():
    import fastad
    return fastad


def fake_engine(gradient):
    """An engine whose grad returns gradient(*args) whatever f is."""
    return types.SimpleNamespace(grad=lambda f, argnums=0: gradient)


def test_correct_gradients_pass(engine):
    assert check_grad(lambda x, y: x * y + engine.sin(x), 2.0, 3.0, engine=engine) < 1e-9
    assert check_grad(lambda x: engine.exp(x) / (1 + x * x), -1.5, engine=engine) < 1e-8
    # large and small inputs: the step scales with |x|
    assert check_grad(lambda x: engine.log(x) * x, 1e6, engine=engine) < 1e-8
    assert check_grad(lambda x: engine.sqrt(x), 0.25, engine=engine) < 1e-8


def test_default_engine_is_the_core():
    fad = _core()
    assert check_grad(lambda x, y: fad.hypot(x, y), 3.0, 4.0) < 1e-9


def test_wrong_gradient_is_caught():
    def f(x, y):
        return x * y

    assert check_grad(f, 2.0, 3.0, engine=fake_engine(lambda x, y: (y, x))) < 1e-9
    err = check_grad(f, 2.0, 3.0, engine=fake_engine(lambda x, y: (y, -x)))
    assert err == pytest.approx(2 * 2.0 / 2.0)  # |-2 - 2| / max(1, 2, 2)


def test_relative_and_absolute_scale():
    f = lambda x: 1e6 * x  # noqa: E731
    # 1% off a derivative of 1e6: |1.01e6 - 1e6| / max(1, 1.01e6, 1e6)
    assert check_grad(f, 1.0, engine=fake_engine(lambda x: (1.01e6,))) == pytest.approx(
        0.01 / 1.01, rel=1e-6)
    # an exact zero derivative is compared absolutely, not divided by ~0
    assert check_grad(lambda x: 0.0 * x, 5.0, engine=fake_engine(lambda x: (0.0,))) == 0.0


def test_arrays_per_element():
    def f(a, x):
        return float(np.sum(a ** 3) * x)

    a = np.array([[1.0, -2.0], [0.5, 3.0]])

    def good(a, x):
        return (3 * a ** 2 * x, float(np.sum(a ** 3)))

    assert check_grad(f, a, 2.0, engine=fake_engine(good)) < 1e-8

    def bad(a, x):
        g = 3 * a ** 2 * x
        g[1, 0] += 1.0  # one element wrong
        return (g, float(np.sum(a ** 3)))

    assert check_grad(f, a, 2.0, engine=fake_engine(bad)) > 0.1
    with pytest.raises(ValueError, match="shape"):
        check_grad(f, a, 2.0, engine=fake_engine(lambda a, x: (np.zeros(3), 0.0)))


def test_arrays_with_the_core():
    fad = _core()
    a = np.array([0.3, -1.2, 2.0])
    err = check_grad(lambda v: fad.sin(v * v).sum(), a)
    assert err < 1e-8


def test_nested_arguments_with_the_reference():
    def f(p):
        return p["w"][0] * p["w"][1] + ref.exp(p["b"])

    assert check_grad(f, {"w": [1.5, -0.5], "b": 0.2}, engine=ref) < 1e-9


def test_namedtuple_arguments(engine):
    import collections
    Point = collections.namedtuple("Point", "a b")
    err = check_grad(lambda p: p.a * engine.sin(p.b), Point(2.0, 0.5), engine=engine)
    assert err < 1e-8


def test_single_argument_bare_gradient_engine():
    # an engine returning the bare gradient for one argument is accepted too
    eng = types.SimpleNamespace(grad=lambda f, argnums=0: lambda x: 2 * x)
    assert check_grad(lambda x: x * x, 3.0, engine=eng) < 1e-9


def test_eps_and_errors():
    assert check_grad(lambda x: x * x, 3.0, eps=1e-12, engine=ref) < 1e-6
    with pytest.raises(ValueError, match="eps"):
        check_grad(lambda x: x, 1.0, eps=0.0, engine=ref)
    with pytest.raises(TypeError):
        check_grad(lambda x: x, "1.0", engine=ref)
    with pytest.raises(TypeError, match="at least one"):
        check_grad(lambda: 1.0, engine=ref)
    holds_itself = [1.0]
    holds_itself.append(holds_itself)
    with pytest.raises(ValueError, match="holds itself"):  # (RecursionError before)
        check_grad(lambda p: 1.0, holds_itself, engine=ref)
    with pytest.raises(ValueError, match="scalar"):
        check_grad(lambda x: np.array([1.0, 2.0]) * x, 1.0,
                   engine=fake_engine(lambda x: (0.0,)))


@pytest.mark.parametrize("dtype", [np.int64, np.float32], ids=["int", "float32"])
def test_non_float64_arrays_nested_in_arguments(dtype):
    # the step was rounded into the leaf's own dtype: a correct gradient scored 0.99998 (int)
    f = lambda p: np.sum(p[0] ** 2)  # noqa: E731
    for arg in ([np.array([1, 2], dtype)], {"a": np.array([1, 2], dtype)}):
        g = (lambda p: np.sum(p["a"] ** 2)) if isinstance(arg, dict) else f
        assert check_grad(g, arg) < 1e-8


def test_an_oscillating_function_at_a_large_argument(engine):
    """The relative step at x = 1e8 (605) spans periods of sin: a correct
    derivative read 0.36 there; the absolute step is tried too. A wrong
    derivative is still O(1)."""
    for x in (1e6, 1e8, 1e12):
        assert check_grad(engine.sin, x, engine=engine) < 1e-6
        assert check_grad(lambda v: v ** 3, x, engine=engine) < 1e-6  # steep: the relative step is the right one
    wrong = fake_engine(lambda x: (math.cos(x) + 0.5,))
    assert check_grad(np.sin, 1e8, engine=wrong) > 0.1
    # a gradient of 0 where f has slope 1, f's values too large for the short step
    # to resolve (both f(x +- h) one float): still O(1), not matched by that step's 0
    assert check_grad(lambda v: 1e12 + v, 1e8, engine=fake_engine(lambda x: (0.0,))) > 0.9


def test_arguments_and_outputs_as_grad_takes_them():
    with pytest.raises(TypeError, match="complex"):  # refused, not cast to its real part
        check_grad(lambda x: (x * x).sum(), np.array([1j]))
    assert check_grad(lambda x: x * 2.0, np.array([1.0])) < 1e-9  # a one-element output, as grad takes

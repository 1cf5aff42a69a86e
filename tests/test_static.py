"""fastad/_static.py: arguments of fad.compile outside argnums that hold no
float (an index, a flag, a name, integer labels) are static: one compiled
function per value, each giving fad.grad's numbers."""
import pickle

import numpy as np
import pytest

import fastad as fad


def pick(x, i, mode):
    return x[i] ** 2 * x[0] if mode == "sq" else fad.sin(x[i])


def nll(W, X, labels):
    logp = fad.log_softmax(X @ W, axis=1)
    return -np.mean(logp[np.arange(len(labels)), labels])


def test_an_index_and_a_flag_are_static_and_give_grads_numbers():
    x = [1.5, 2.0, -0.5]
    cf = fad.compile(pick, x, 1, "sq")
    for i in (0, 1, 2):
        for mode in ("sq", "sin"):
            for point in (x, [0.3, -1.0, 2.5]):
                assert cf.grad(point, i, mode) == fad.grad(pick)(point, i, mode)
                assert cf(point, i, mode) == pick([fad.Var(v) for v in point], i, mode).value
    assert len(cf.compiled) == 6  # one per (i, mode) seen: new points replay


def test_floats_outside_argnums_stay_traced_data():
    """A data array outside argnums is replayed with its new values, not
    recorded again; integer labels beside it are static."""
    rng = np.random.default_rng(0)
    W, X = rng.normal(size=(3, 4)), rng.normal(size=(5, 3))
    labels = np.array([0, 3, 1, 1, 2])
    cf = fad.compile(nll, W, X, labels)
    X2 = rng.normal(size=(5, 3))
    np.testing.assert_array_equal(cf.grad(W, X2, labels), fad.grad(nll)(W, X2, labels))
    assert len(cf.compiled) == 1
    other = np.array([2, 2, 0, 3, 1])
    np.testing.assert_array_equal(cf.grad(W, X, other), fad.grad(nll)(W, X, other))
    assert len(cf.compiled) == 2


def test_a_static_array_changed_in_place_by_the_caller_is_a_new_value():
    rng = np.random.default_rng(1)
    W, X = rng.normal(size=(3, 4)), rng.normal(size=(5, 3))
    labels = np.array([0, 3, 1, 1, 2])
    cf = fad.compile(nll, W, X, labels)
    original = labels.copy()
    labels[:] = [1, 1, 1, 1, 1]  # the compiled function kept its own copy
    np.testing.assert_array_equal(cf.grad(W, X, labels), fad.grad(nll)(W, X, labels))
    np.testing.assert_array_equal(cf.grad(W, X, original), fad.grad(nll)(W, X, original))


def test_argnums_around_a_static_argument():
    f = lambda a, i, b: a[i] * b ** 3  # noqa: E731
    cf = fad.compile(f, [1.0, 2.0], 1, 3.0, argnums=(0, 2))
    assert cf.grad([1.0, 2.0], 0, 0.5) == fad.grad(f, argnums=(0, 2))([1.0, 2.0], 0, 0.5)
    assert cf.value_and_grad([1.0, 2.0], 1, 2.0) == fad.value_and_grad(f, argnums=(0, 2))([1.0, 2.0], 1, 2.0)
    g = fad.compile(f, [1.0, 2.0], 1, 3.0, argnums=2)  # the list is traced data, not differentiated
    assert g.grad([4.0, 5.0], 0, 2.0) == fad.grad(f, argnums=2)([4.0, 5.0], 0, 2.0) == 48.0


def test_second_order_and_forward_mode_through_a_static_argument():
    x = np.array([0.7, -1.2, 2.0])
    cf = fad.compile(pick, x, 2, "sq")
    np.testing.assert_allclose(cf.hessian(x, 2, "sq"), fad.hessian(pick)(x, 2, "sq"), rtol=1e-14)
    v = np.array([1.0, 0.5, -2.0])
    np.testing.assert_allclose(cf.hvp(x, 2, "sq", v), fad.hessian(pick)(x, 2, "sq") @ v, rtol=1e-14)
    np.testing.assert_allclose(cf.jacobian(x, 1, "sin"), fad.jacobian(pick)(x, 1, "sin"), rtol=1e-14)
    value, tangent = cf.jvp((x, 1, "sq"), v)
    assert value == pytest.approx(x[1] ** 2 * x[0])
    assert tangent == pytest.approx(fad.grad(pick)(x, 1, "sq") @ v)
    value, vjp_row = cf.vjp((x, 1, "sq"), 2.0)
    np.testing.assert_allclose(vjp_row, 2.0 * fad.grad(pick)(x, 1, "sq"), rtol=1e-14)


def test_the_last_cache_size_values_are_kept():
    cf = fad.compile(pick, [1.0] * 12, 0, "sq")
    for i in range(12):
        assert cf.grad([2.0] * 12, i, "sq")[i] == (8.0 if i else 12.0)
    assert len(cf.compiled) == cf.cache_size == 8
    assert cf.grad([2.0] * 12, 0, "sq")[0] == 12.0  # evicted: compiled again


def test_a_compiled_function_with_static_arguments_pickles():
    x = [1.5, 2.0, -0.5]
    cf = pickle.loads(pickle.dumps(fad.compile(pick, x, 1, "sq")))
    assert cf.grad(x, 1, "sq") == fad.grad(pick)(x, 1, "sq")
    assert cf.grad(x, 2, "sin") == fad.grad(pick)(x, 2, "sin")  # a new value: pick survived pickling
    lam = pickle.loads(pickle.dumps(fad.compile(lambda x, i: x[i] ** 2, x, 1)))
    assert lam.grad(x, 1) == [0.0, 4.0, 0.0]  # the value it was compiled for replays
    with pytest.raises(TypeError, match="did not survive pickling"):
        lam.grad(x, 0)


def test_bad_static_arguments_say_what_is_wrong():
    with pytest.raises(TypeError, match="must be hashable"):
        fad.compile(lambda x, s: x * len(s), 2.0, {1, 2})
    cf = fad.compile(pick, [1.0, 2.0], 1, "sq")
    with pytest.raises(TypeError, match="takes 3 arguments, got 2"):
        cf.grad([1.0, 2.0], 1)
    with pytest.raises(ValueError, match="one argument"):
        cf.grad_batch(np.ones((4, 2)))


def test_threads_share_the_cache_of_static_values():
    """Eight threads calling with twelve index values (more than the cache
    keeps, so values are recorded, evicted and recorded again while other
    threads replay) get fad.grad's numbers, and the cache stays bounded. (A
    smoke test: the window the cache's lock closes is too narrow to hit
    on demand.)"""
    import concurrent.futures
    x = [0.5 + k for k in range(12)]
    cf = fad.compile(pick, x, 0, "sq")
    want = {i: fad.grad(pick)(x, i, "sq") for i in range(12)}

    def work(seed):
        order = np.random.default_rng(seed).integers(0, 12, 200)
        return all(cf.grad(x, int(i), "sq") == want[int(i)] for i in order)

    import sys
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two steps of the cache's bookkeeping
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(work, range(8)))
    finally:
        sys.setswitchinterval(interval)
    assert len(cf.compiled) <= cf.cache_size


def scaled(x, fn):
    return fn(x) * 2.0


def test_a_module_or_a_function_as_a_static_argument():
    """Hashable objects are static by their hash and used as they are (not
    copied: a module cannot be); the compiled function pickles with a
    function among its static values, and leaves out of the pickle the values
    that do not pickle (a module, a lambda), recording them again on use."""
    def body(x, m):
        return m.sin(x[0]) * x[1]

    cf = fad.compile(body, [1.0, 2.0], fad)
    assert cf.grad([1.0, 2.0], fad) == fad.grad(body)([1.0, 2.0], fad)
    cs = fad.compile(scaled, 3.0, np.square)  # a ufunc, hashable and picklable by name
    assert cs.grad(3.0, np.square) == 12.0
    back = pickle.loads(pickle.dumps(cs))
    assert back.grad(3.0, np.square) == 12.0 and len(back.compiled) == 1
    cs.grad(3.0, fad.sin)  # a function of fastad's, picklable by name too
    assert len(pickle.loads(pickle.dumps(cs)).compiled) == 2
    cl = fad.compile(scaled, 3.0, lambda v: v * v)  # a lambda: the pickle leaves its value out
    back = pickle.loads(pickle.dumps(cl))
    assert len(back.compiled) == 0
    assert back.grad(3.0, fad.tanh) == pytest.approx(2.0 * (1 - np.tanh(3.0) ** 2))


class Indices(list):
    pass


def test_static_containers_of_subclasses_keep_their_type():
    """A list subclass, a defaultdict or an OrderedDict as a static argument
    reaches f as itself (copied as deepcopy copies it), and an OrderedDict
    is another value than a dict with the same items."""
    import collections
    x = [1.0, 2.0, 3.0]
    f = lambda x, idx: sum(x[i] for i in idx)  # noqa: E731
    cf = fad.compile(f, x, Indices([0, 2]))
    assert cf.grad(x, Indices([0, 2])) == [1.0, 0.0, 1.0]
    g = lambda x, d: x[0] * d["missing"] + x[1] * (2.0 if type(d) is dict else 3.0)  # noqa: E731
    dd = collections.defaultdict(int, {"k": 1})
    cg = fad.compile(g, x, dd)
    assert cg.grad(x, dd) == fad.grad(g)(x, dd) == [0.0, 3.0, 0.0]
    od, plain = collections.OrderedDict(missing=1), {"missing": 1}
    assert cg.grad(x, od) == [1.0, 3.0, 0.0] and cg.grad(x, plain) == [1.0, 2.0, 0.0]


def test_floats_beside_a_name_are_static_too():
    # ("relu", 0.5) cannot be traced (a str), so it is static: its float a constant of each recording
    f = lambda x, cfg: fad.maximum(x, cfg[1]) if cfg[0] == "relu" else x * cfg[1]  # noqa: E731
    cf = fad.compile(f, 2.0, ("relu", 0.5))
    for x, cfg in ((2.0, ("relu", 0.5)), (0.1, ("relu", 0.5)), (2.0, ("lin", 3.0)), (2.0, ("lin", -1.5))):
        assert cf.grad(x, cfg) == fad.grad(f)(x, cfg)
        assert cf(x, cfg) == f(fad.Var(x), cfg).value
    assert len(cf.compiled) == 3


def test_static_floats_are_told_apart_by_their_bits():
    # 0.0 and -0.0 were one value (arctan2 gave pi for both); a nan is one value, not a new one each call
    cf = fad.compile(lambda x, s: fad.arctan2(s[1], x), -1.0, ("a", 0.0))
    assert cf(-1.0, ("a", -0.0)) == -np.pi and cf(-1.0, ("a", 0.0)) == np.pi
    nan = float("nan")
    cg = fad.compile(lambda x, s: x * 2.0 if s[1] != s[1] else x, 1.0, ("a", nan))
    for _ in range(3):
        assert cg.grad(1.0, ("a", nan)) == 2.0
    assert len(cg.compiled) == 1

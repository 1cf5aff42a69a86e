"""fastad/sparsity.py: a Hessian from as few Hessian-vector products as a
coloring of its pattern allows, and the same numbers as the dense route."""
import operator

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastad as fad
from fastad import _workloads
from fastad import ops as _ops
from fastad.sparsity import hessian_plan


def plan_of(cf):
    t = cf.traces[0]
    return hessian_plan(t.op, t.a, t.b, t.in_rows, t.out_rows[0])


def dense_hessian(cf, x):
    """One Hessian-vector product per basis vector."""
    return np.column_stack([cf.hvp(x, e) for e in np.eye(len(x)).tolist()])


def colored_hessian(cf, x):
    """cf.hessian by its plan: a trace makes one on its second Hessian (on
    the first with 256 inputs or more), so call it twice; the first call's
    numbers (the dense route, below 256 inputs) must be the same."""
    first = cf.hessian(x)
    second = cf.hessian(x)
    assert cf.traces[0].hessian_plan is not None
    np.testing.assert_allclose(second, first, rtol=1e-13, atol=1e-13)
    return second


def rosenbrock(x):  # the benchmarks' scalar Rosenbrock (W4)
    return _workloads.rosenbrock(x, fad)


def test_rosenbrock_takes_three_products_at_any_size(rosenbrock_hessian):
    x = np.linspace(-1.0, 1.5, 300).tolist()
    cf = fad.compile(rosenbrock, x)
    plan = plan_of(cf)
    assert plan.n_colors == 3
    assert plan.seeds().shape == (300, 3) and plan.seeds().sum() == 300
    H = cf.hessian(x)  # 300 inputs: colored on the first call
    assert cf.traces[0].hessian_plan.n_colors == 3
    assert np.array_equal(H, dense_hessian(cf, x))
    np.testing.assert_allclose(H, rosenbrock_hessian(x), rtol=1e-13, atol=1e-10)


DIFFERENTIABLE = [s for s in _ops.SCALAR_OPS if s.arity >= 1 and s.kind != "guard"]
_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
              "div": operator.truediv, "neg": operator.neg, "power": operator.pow}


@pytest.mark.parametrize("spec,shape", [(s, shape) for s in DIFFERENTIABLE
                                         for shape in (("x",) if s.arity == 1 else ("xy", "xc", "cx"))],
                         ids=lambda p: getattr(p, "name", p))
def test_every_op_curved_where_it_is_curved(spec, shape):
    """The pattern holds every nonzero of the dense Hessian for each op of
    the table, alone, with a constant on either side: an op that the
    pattern took for flat (sparsity._FLAT, mul or div by a constant) but
    op_second curves would drop its entries. Points are drawn inside the
    op's domain, off its kinks."""
    fn = _OPERATORS.get(spec.name) or getattr(fad, spec.name)
    lo, hi = spec.domain
    c = lo + 0.37 * (hi - lo)
    if spec.arity == 1:
        f = lambda x: sum(fn(xi) for xi in x)  # noqa: E731 (diagonal)
    elif shape == "xy":
        f = lambda x: sum(fn(x[2 * k], x[2 * k + 1]) for k in range(4))  # noqa: E731 (2x2 blocks)
    elif shape == "xc":
        f = lambda x: sum(fn(xi, c) for xi in x)  # noqa: E731
    else:
        f = lambda x: sum(fn(c, xi) for xi in x)  # noqa: E731
    rng = np.random.default_rng(spec.code)
    x = rng.uniform(lo, hi, 8).tolist()
    cf = fad.compile(f, x)
    plan = plan_of(cf)
    assert plan is not None
    pattern = np.zeros((8, 8), bool)
    pattern[plan.rows, plan.cols] = True
    for _ in range(3):
        x = rng.uniform(lo, hi, 8).tolist()
        H = dense_hessian(cf, x)
        assert not (H[~pattern] != 0.0).any(), H
        np.testing.assert_array_equal(colored_hessian(cf, x), H)


@pytest.mark.parametrize("f,colors", [
    (lambda x: sum((x[2 * k] * x[2 * k + 1]) ** 2 for k in range(len(x) // 2)), 2),  # 2x2 blocks
    (lambda x: sum(fad.sin(xi) for xi in x) + 3.0 * x[0] - x[1], 1),                   # diagonal
    (lambda x: sum(x[i] * x[i + 2] for i in range(len(x) - 2)), 3),                    # two bands out
    # five wide: every column has more entries than max(4, sqrt(n)) at n = 24, and a
    # product each (dense) before the coloring with no heavy column was tried too
    (lambda x: sum(fad.sin(x[i] * x[i + 1] * x[i + 2]) for i in range(len(x) - 2)), 5),
], ids=["blocks", "diagonal", "band", "band-five-wide"])
def test_patterns_and_their_colors(f, colors):
    x = np.linspace(0.1, 1.3, 24).tolist()
    cf = fad.compile(f, x)
    assert plan_of(cf).n_colors == colors
    np.testing.assert_array_equal(colored_hessian(cf, x), dense_hessian(cf, x))


@pytest.mark.parametrize("f", [
    lambda x: sum(x) ** 2,                                                # every pair
    lambda x: sum(x[i] * x[j] for i in range(0, 12, 2) for j in range(1, 12, 2)),  # bipartite
], ids=["dense", "bipartite"])
def test_dense_patterns_take_the_dense_route(f):
    """A pattern whose coloring needs more than half the products, or a
    row that depends on every input, goes dense: one product per input."""
    x = np.linspace(0.1, 1.3, 12).tolist()
    cf = fad.compile(f, x)
    assert plan_of(cf) is None
    np.testing.assert_array_equal(colored_hessian(cf, x), dense_hessian(cf, x))
    assert cf.traces[0].hessian_plan is False  # looked for once, then dense for good


def test_a_pattern_too_big_to_track_goes_dense(monkeypatch):
    """The pattern's sets are bounded: past PATTERN_BUDGET dependencies, or
    a row depending on over half the inputs, the Hessian is dense."""
    import fastad.sparsity as sparsity
    x = np.linspace(0.1, 1.3, 40).tolist()
    cf = fad.compile(rosenbrock, x)
    assert plan_of(cf).n_colors == 3
    monkeypatch.setattr(sparsity, "PATTERN_BUDGET", 50)  # Rosenbrock tracks about 3 a term
    assert plan_of(cf) is None
    monkeypatch.undo()
    cf = fad.compile(lambda x: fad.sin(sum(x[:21])) + sum(xi * xi for xi in x), x)  # 21 > 40 / 2
    assert plan_of(cf) is None
    np.testing.assert_array_equal(colored_hessian(cf, x), dense_hessian(cf, x))


@pytest.mark.parametrize("n", [12, 300])
def test_an_arrow_takes_two_products(n):
    """x0 coupled to every input: its column gets a product of its own, the
    others share one, and row 0 is read from column 0's by symmetry."""
    x = np.linspace(0.1, 1.3, n).tolist()
    cf = fad.compile(lambda x: sum(x[0] * xi * xi for xi in x[1:]) + sum(fad.sin(xi) for xi in x), x)
    plan = plan_of(cf)
    assert plan.n_colors == 2 and plan.colors[0] == 0 and set(plan.colors[1:]) == {1}
    xa = np.array(x)
    want = np.diag(-np.sin(xa) + np.r_[0.0, 2.0 * xa[0] * np.ones(n - 1)])
    want[0, 1:] = want[1:, 0] = 2.0 * xa[1:]
    H = colored_hessian(cf, x)
    np.testing.assert_allclose(H, want, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(H, dense_hessian(cf, x), rtol=1e-15, atol=1e-15)


def test_linear_rows_neither_add_entries_nor_count_inputs():
    """A long sum of squares: its partial sums depend on every input, but a
    sum has no second derivative, so the pattern is the diagonal (one
    product), and the dependency limit does not apply to them."""
    x = np.linspace(0.1, 1.3, 200).tolist()
    cf = fad.compile(lambda x: sum(xi * xi for xi in x) + 2.0 * x[3] - x[7] / 4.0 + fad.relu(x[5]), x)
    plan = plan_of(cf)
    assert plan.n_colors == 1 and sorted(set(zip(plan.rows, plan.cols))) == [(i, i) for i in range(200)]
    np.testing.assert_array_equal(colored_hessian(cf, x), 2.0 * np.eye(200))


def test_the_block_of_one_argnum():
    """cf.hessian of one argument is its block of the whole colored matrix."""
    def f(w, x):  # pairs (w_i, x_i) and (w_0, w_1): 3 colors for 8 inputs
        return sum((wi * xi) ** 2 for wi, xi in zip(w, x)) + w[0] * w[1]

    w, x = [0.5, -1.0, 2.0, 0.25], [1.5, 3.0, -0.5, 2.0]
    Hw = np.diag([2.0 * xi ** 2 for xi in x])
    Hw[0, 1] = Hw[1, 0] = 1.0
    for argnums, want in ((0, Hw), (1, np.diag([2.0 * wi ** 2 for wi in w]))):
        cf = fad.compile(f, w, x, argnums=argnums)
        first = cf.hessian(w, x)
        np.testing.assert_allclose(first, want, rtol=1e-15)
        assert np.array_equal(cf.hessian(w, x), first) and cf.traces[0].hessian_plan.n_colors == 3


# Random programs over up to 10 inputs, each step reading two earlier values
# nearby (so that patterns stay sparse), or one of them times the first input
# (which couples that input to many: arrows): whatever plan is found, its
# pattern holds every nonzero of the dense Hessian, and the compressed
# Hessian is the dense one.
OPS = ["add", "mul", "sin", "square", "div", "sub_c", "tanh", "mul_c", "times_x0"]
programs = st.lists(st.tuples(st.sampled_from(OPS), st.integers(1, 4), st.integers(1, 4)),
                    min_size=1, max_size=25)


def run(x, program):
    values = list(x)
    for name, i, j in program:
        u, v = values[-i if i <= len(values) else 0], values[-j if j <= len(values) else 0]
        values.append({"add": lambda: u + v, "mul": lambda: u * v, "sin": lambda: fad.sin(u),
                       "square": lambda: u * u, "div": lambda: u / (1.0 + v * v),
                       "sub_c": lambda: 0.5 - u, "tanh": lambda: fad.tanh(u), "mul_c": lambda: 3.0 * u,
                       "times_x0": lambda: u * x[0]}[name]())
    return sum(values[len(x):], 0.0 * values[0])


@settings(max_examples=60, deadline=None)
@given(program=programs, n=st.integers(2, 10), seed=st.integers(0, 1000))
def test_random_patterns_hold_the_dense_hessian(program, n, seed):
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, n).tolist()
    cf = fad.compile(lambda x: run(x, program), x)
    dense = dense_hessian(cf, x)
    plan = plan_of(cf)
    if plan is not None:
        pattern = set(zip(plan.rows.tolist(), plan.cols.tolist()))
        assert {(int(r), int(c)) for r, c in zip(*np.nonzero(dense))} <= pattern
    np.testing.assert_allclose(colored_hessian(cf, x), dense, rtol=1e-13, atol=1e-13)


def test_a_one_off_hessian_of_few_inputs_goes_dense():
    """Coloring costs more than the dense route once, below 256 inputs:
    fad.hessian (a new trace every call) and a first cf.hessian do not
    color; a second cf.hessian on the same trace does."""
    cf = fad.compile(rosenbrock, [0.5] * 20)
    cf.hessian([0.5] * 20)
    assert cf.traces[0].hessian_plan is None
    cf.hessian([0.5] * 20)
    assert cf.traces[0].hessian_plan.n_colors == 3


@settings(max_examples=40, deadline=None)
@given(n=st.integers(6, 40), hub=st.integers(0, 39), links=st.lists(st.integers(0, 39), min_size=1, max_size=40),
       band=st.booleans(), seed=st.integers(0, 1000))
def test_random_hubs_and_bands(n, hub, links, band, seed):
    """One input coupled to some others (a hub: a heavy column once it has
    more than max(4, sqrt(n)) entries, its row then read by symmetry), on
    a diagonal, with or without Rosenbrock's band."""
    hub %= n

    def f(x):
        total = sum(fad.sin(xi) for xi in x) + sum(x[hub] * x[j % n] ** 2 for j in links)
        if band:
            total = total + sum((x[i + 1] - x[i] ** 2) ** 2 for i in range(n - 1))
        return total

    x = np.random.default_rng(seed).uniform(-1.0, 1.0, n).tolist()
    cf = fad.compile(f, x)
    dense = dense_hessian(cf, x)
    plan = plan_of(cf)
    if plan is not None:
        assert {(int(r), int(c)) for r, c in zip(*np.nonzero(dense))} <= set(zip(plan.rows.tolist(),
                                                                              plan.cols.tolist()))
    np.testing.assert_allclose(colored_hessian(cf, x), dense, rtol=1e-13, atol=1e-13)

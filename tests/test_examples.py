"""The examples in examples/ run, in their short forms, and reach their numbers.

Each example is imported by path (the examples folder is not a package and
not on sys.path) and its ``main(argv)`` called in-process. The folder is
found relative to this file, so the tests also run against an installed
fastad (the package data, fastad/data/iris.csv, then comes from the install).
"""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    path = EXAMPLES / f"{name}.py"
    assert path.exists(), f"{path} is missing"
    spec = importlib.util.spec_from_file_location(f"fastad_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def iris():
    return load_example("iris_softmax")


def test_iris_data_is_fishers(iris):
    X, y = iris.load_iris()
    assert X.shape == (150, 4) and X.dtype == np.float64
    assert y.shape == (150,) and y.dtype.kind == "i"
    assert np.bincount(y).tolist() == [50, 50, 50]
    assert X[0].tolist() == [5.1, 3.5, 1.4, 0.2] and y[0] == 0
    assert X[-1].tolist() == [5.9, 3.0, 5.1, 1.8] and y[-1] == 2
    # the well-known column means (cm)
    np.testing.assert_allclose(X.mean(axis=0), [5.843333, 3.057333, 3.758, 1.199333], atol=1e-6)


def test_iris_softmax_regression(iris, capsys):
    params, history = iris.main(["--epochs", "100"])
    out = capsys.readouterr().out
    assert history[0]["epoch"] == 0
    assert abs(history[0]["loss"] - math.log(3)) < 1e-15
    assert "epoch    0  loss 1.09861228866810" in out
    assert "epoch  100" in out
    losses = [h["loss"] for h in history]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert history[-1]["test_acc"] > 0.9
    assert params["W"].shape == (4, 3) and params["B"].shape == (3,)


def test_iris_loss_gradient_matches_finite_differences(iris):
    import fastad as fad

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    Y = np.eye(3)[rng.integers(0, 3, 12)]
    params = {"W": rng.normal(size=(4, 3)), "B": rng.normal(size=3)}
    assert fad.check_grad(lambda p: iris.loss(p, X, Y), params) < 1e-6


def test_mlp_numpy_loss_decreases(capsys):
    mlp = load_example("mlp_numpy")
    _, history = mlp.main(["--steps", "100"])
    out = capsys.readouterr().out
    assert "step     0" in out and "step   100" in out
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["acc"] > 0.85


def test_micrograd_mlp_loss_decreases(capsys):
    micro = load_example("micrograd_mlp")
    model, history = micro.main(["--steps", "15", "--n", "50"])
    capsys.readouterr()
    assert len(model.parameters()) == 337
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    # zero_grad resets every leaf
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_textbook_numbers(capsys):
    textbook = load_example("textbook")
    results = textbook.main([])
    out = capsys.readouterr().out
    (v1, g1), (v2, g2) = results
    assert v1 == pytest.approx(6.909297426825682, abs=1e-15)
    assert g1 == pytest.approx((3.0 + math.cos(2.0), 2.0), abs=1e-15)
    assert v2 == pytest.approx(math.log(2.0) + 10.0 - math.sin(5.0), abs=1e-14)
    assert g2 == pytest.approx((5.5, 2.0 - math.cos(5.0)), abs=1e-15)
    for number in ("2.5838531634528574", "6.909297426825682", "-0.4161468365",
                   "5.5", "1.7163378145367738", "11.65207146", "0.2836621855"):
        assert number in out
    assert "sin(w1)" in out and "log(w1)" in out


def test_newton_reaches_rosenbrocks_minimum(capsys, rosenbrock_hessian):
    newton = load_example("newton")
    import fastad as fad

    x, history = newton.main(["--n", "10"])
    out = capsys.readouterr().out
    assert np.abs(x - 1.0).max() < 1e-12 and history[-1]["f"] < 1e-25
    assert len(history) <= 40 and out.rstrip().splitlines()[-2].endswith("converged")
    x0, cut = newton.main(["--n", "10", "--steps", "3"])  # stopped short: says so, and x is where f was taken
    out = capsys.readouterr().out
    assert "not converged" in out and len(cut) == 4 and cut[-1]["f"] == newton.rosenbrock(x0.tolist())
    last = [h for h in history if h["gnorm"] > 0][-4:]  # quadratic: |g| about squares
    assert all(h["tau"] == 0.0 and h["t"] == 1.0 for h in last[:-1])
    assert last[-1]["gnorm"] < 100.0 * last[-2]["gnorm"] ** 2
    cf = fad.compile(newton.rosenbrock, [0.0] * 10)
    for point in (np.zeros(10), np.linspace(-1.0, 1.5, 10)):
        np.testing.assert_allclose(cf.hessian(point.tolist()), rosenbrock_hessian(point),
                                   rtol=1e-14, atol=1e-12)
    # from (-1.2, 1, ..., 1): the other minimum, a local one near (-1, 1, ..., 1)
    x2, h2 = newton.minimise(10, verbose=False, start=[-1.2] + [1.0] * 9)
    assert h2[-1]["gnorm"] < 1e-10 and -1.0 < x2[0] < -0.98 and 3.98 < h2[-1]["f"] < 3.99
    assert np.all(np.linalg.eigvalsh(rosenbrock_hessian(x2)) > 0)


@pytest.mark.parametrize("name,args,message", [
    ("newton", ["--steps", "-1"], "0 or more"), ("micrograd_mlp", ["--steps", "0"], "1 or more"),
])
def test_example_step_counts_are_checked(capsys, name, args, message):
    # micrograd_mlp --steps 0 failed on an empty history (IndexError)
    with pytest.raises(SystemExit) as info:
        load_example(name).main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err

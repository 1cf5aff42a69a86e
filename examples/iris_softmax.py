"""Softmax regression on Fisher's iris data, trained with fastad.

The model is p(class | x) = softmax(x @ W + B), fitted by full-batch
gradient descent on the mean cross-entropy. Gradients come from
``fad.grad`` over the parameter dict ``{"W": ..., "B": ...}``; the model
code is plain NumPy (``@``, broadcasting, ``.sum``, ``.mean``) run on
``fad.Array`` values.

The data (150 flowers, 4 measurements in cm, 3 species) ship with fastad
as ``fastad/data/iris.csv``. At W = 0, B = 0 every class gets probability
1/3, so the initial loss is log 3 = 1.0986122886681098 (up to the rounding
of the mean over the training rows).

    python examples/iris_softmax.py --epochs 200 --lr 0.5
"""
import argparse
import csv
import io
import math
import sys
from importlib import resources

import numpy as np

try:
    import fastad as fad
except ImportError:  # running from a source checkout built in place: use it
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    import fastad as fad

SPECIES = ("setosa", "versicolor", "virginica")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def load_iris():
    """X (150, 4) float64 in cm and y (150,) int in {0, 1, 2}, from the packaged CSV."""
    text = resources.files("fastad").joinpath("data/iris.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], [r for r in rows[1:] if r]
    if tuple(header) != FEATURES + ("species",):
        raise ValueError(f"unexpected iris.csv header {header}")
    X = np.array([[float(v) for v in r[:4]] for r in body], dtype=np.float64)
    y = np.array([int(r[4]) for r in body], dtype=np.int64)
    return X, y


def split(X, y, n_test_per_class=10, seed=4):
    """A seeded stratified split: n_test_per_class flowers of each species held out."""
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_test_per_class]
                           for c in np.unique(y)])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return X[~mask], y[~mask], X[mask], y[mask]


def standardise(X_train, X_test):
    """Zero mean, unit variance, with the training set's statistics."""
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    return (X_train - mu) / sd, (X_test - mu) / sd


def one_hot(y, k=3):
    return np.eye(k)[y]


def predict(params, X):
    """Class probabilities softmax(X @ W + B), shape (n, 3)."""
    return fad.softmax(X @ params["W"] + params["B"])


def loss(params, X, Y):
    """Mean cross-entropy -sum(Y * log softmax(Z)) over the rows, Z = X @ W + B."""
    Z = X @ params["W"] + params["B"]
    return -(Y * fad.log_softmax(Z)).sum(axis=1).mean()


def accuracy(params, X, y):
    Z = X @ params["W"] + params["B"]
    return float(np.mean(np.argmax(Z, axis=1) == y))


def init_params(n_features=4, n_classes=3):
    return {"W": np.zeros((n_features, n_classes)), "B": np.zeros(n_classes)}


def train(epochs=200, lr=0.5, seed=4, log_every=10, verbose=True):
    """Full-batch gradient descent. Returns (params, history).

    history is a list of dicts {epoch, loss, train_acc, test_acc}, one per
    logged epoch (every ``log_every`` epochs, epoch 0 and the last one).
    """
    X, y = load_iris()
    X_train, y_train, X_test, y_test = split(X, y, seed=seed)
    X_train, X_test = standardise(X_train, X_test)
    Y_train = one_hot(y_train)

    params = init_params()
    loss_and_grad = fad.value_and_grad(loss)
    history = []
    for epoch in range(epochs + 1):
        value, g = loss_and_grad(params, X_train, Y_train)
        if epoch % log_every == 0 or epoch == epochs:
            rec = {"epoch": epoch, "loss": value,
                   "train_acc": accuracy(params, X_train, y_train),
                   "test_acc": accuracy(params, X_test, y_test)}
            history.append(rec)
            if verbose:
                print(f"epoch {epoch:4d}  loss {value!r:<20}  train acc {rec['train_acc']:.3f}"
                      f"  held-out acc {rec['test_acc']:.3f}")
        if epoch == epochs:
            break
        params = {k: params[k] - lr * g[k] for k in params}
    return params, history


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=4,
                    help="seed of the train/held-out split (over seeds 0-19 the held-out "
                         "accuracy after 200 epochs averages 0.95)")
    args = ap.parse_args(argv)
    print(f"iris: 120 training / 30 held-out flowers; log 3 = {math.log(3)!r}")
    params, history = train(args.epochs, args.lr, args.seed)
    print(f"final held-out accuracy {history[-1]['test_acc']:.3f}")
    return params, history


if __name__ == "__main__":
    main()

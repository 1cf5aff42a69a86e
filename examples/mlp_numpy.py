"""A two-layer MLP in plain NumPy, differentiated by fastad.

The model is ordinary NumPy code -- ``np.tanh``, ``@``, broadcasting,
``.sum``/``.mean`` -- and it runs unchanged on ``fad.Array`` values, so
``fad.value_and_grad`` over the parameter dict gives the loss and the
gradient of every weight in one reverse sweep:

    h      = tanh(X @ W1 + b1)          (n, hidden)
    logits = h @ W2 + b2                (n, 2)
    loss   = mean cross-entropy of softmax(logits) against the labels

The data are two interleaved half-moons with Gaussian noise (seeded).

    python examples/mlp_numpy.py --steps 500
"""
import argparse
import sys

import numpy as np

try:
    import fastad as fad
except ImportError:  # running from a source checkout built in place: use it
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    import fastad as fad


def make_moons(n=200, noise=0.1, seed=0):
    """X (n, 2) float64, y (n,) int in {0, 1}: two interleaved half circles."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    n1 = n - n0
    t0 = rng.uniform(0.0, np.pi, n0)
    t1 = rng.uniform(0.0, np.pi, n1)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(0.0, noise, (n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    perm = rng.permutation(n)
    return X[perm], y[perm]


def init_params(hidden=16, seed=0, n_in=2, n_out=2):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, hidden)),
        "b1": np.zeros(hidden),
        "W2": rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, n_out)),
        "b2": np.zeros(n_out),
    }


def forward(params, X):
    """Logits of the MLP; plain NumPy, so it works on ndarrays and fad.Arrays alike."""
    h = np.tanh(X @ params["W1"] + params["b1"])
    return h @ params["W2"] + params["b2"]


def loss(params, X, Y):
    """Mean cross-entropy; Y is one-hot (n, 2)."""
    return -np.mean(np.sum(Y * fad.log_softmax(forward(params, X)), axis=1))


def accuracy(params, X, y):
    return float(np.mean(np.argmax(forward(params, X), axis=1) == y))


def train(steps=500, lr=0.5, hidden=16, seed=0, log_every=50, verbose=True):
    """Full-batch gradient descent. Returns (params, history of {step, loss, acc})."""
    X, y = make_moons(seed=seed)
    Y = np.eye(2)[y]
    params = init_params(hidden, seed)
    loss_and_grad = fad.value_and_grad(loss)
    history = []
    for step in range(steps + 1):
        value, g = loss_and_grad(params, X, Y)
        if step % log_every == 0 or step == steps:
            rec = {"step": step, "loss": value, "acc": accuracy(params, X, y)}
            history.append(rec)
            if verbose:
                print(f"step {step:5d}  loss {value:.6f}  accuracy {rec['acc']:.3f}")
        if step == steps:
            break
        params = {k: params[k] - lr * g[k] for k in params}
    return params, history


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    params, history = train(args.steps, args.lr, args.hidden, args.seed)
    n = sum(p.size for p in params.values())
    print(f"{n} parameters; final loss {history[-1]['loss']:.6f}, accuracy {history[-1]['acc']:.3f}")
    return params, history


if __name__ == "__main__":
    main()

"""A micrograd-style MLP on scalar ``fad.Var`` values.

Every weight is its own ``fad.Var``; a neuron is ``tanh(sum(w_i * x_i) + b)``
written with Python ``+`` and ``*``. Each step rebuilds the graph from the
same leaf Vars, calls ``loss.backward()``, steps ``p.value -= lr * p.grad``
and zeroes the gradients, exactly as in Karpathy's micrograd demo (max-margin
loss with L2 regularisation on two moons, labels -1/+1).

    python examples/micrograd_mlp.py --steps 50
"""
import argparse
import math
import random
import sys

try:
    import fastad as fad
except ImportError:  # running from a source checkout built in place: use it
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    import fastad as fad


def make_moons(n=100, noise=0.1, seed=0):
    """Two interleaved half circles (the data of mlp_numpy.py), as lists of floats."""
    rng = random.Random(seed)
    X, y = [], []
    for i in range(n):
        label = i % 2
        t = rng.uniform(0.0, math.pi)
        px, py = (math.cos(t), math.sin(t)) if label == 0 else (1.0 - math.cos(t), 0.5 - math.sin(t))
        X.append([px + rng.gauss(0.0, noise), py + rng.gauss(0.0, noise)])
        y.append(label)
    return X, y


class Module:
    def parameters(self):
        return []

    def zero_grad(self):
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    def __init__(self, n_in, nonlin=True, rng=random):
        self.w = [fad.Var(rng.uniform(-1.0, 1.0)) for _ in range(n_in)]
        self.b = fad.Var(0.0)
        self.nonlin = nonlin

    def __call__(self, x):
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return fad.tanh(act) if self.nonlin else act

    def parameters(self):
        return self.w + [self.b]

    def __repr__(self):
        return f"{'Tanh' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    def __init__(self, n_in, n_out, **kw):
        self.neurons = [Neuron(n_in, **kw) for _ in range(n_out)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer[{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    def __init__(self, n_in, n_outs, seed=0):
        rng = random.Random(seed)
        sizes = [n_in] + list(n_outs)
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(n_outs) - 1, rng=rng)
                       for i in range(len(n_outs))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def loss_fn(model, X, y, alpha=1e-4):
    """Mean SVM max-margin loss + L2 penalty, and the accuracy (as a float)."""
    scores = [model(xi) for xi in X]
    losses = [fad.relu(1.0 - yi * si) for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    acc = sum((yi > 0) == (si.value > 0) for yi, si in zip(y, scores)) / len(y)
    return data_loss + reg_loss, acc


def train(steps=50, n=100, hidden=16, seed=0, log_every=5, verbose=True):
    X, y01 = make_moons(n, noise=0.1, seed=seed)
    y = [2.0 * float(v) - 1.0 for v in y01]  # labels -1 / +1
    model = MLP(2, [hidden, hidden, 1], seed=seed)
    history = []
    for k in range(steps):
        total, acc = loss_fn(model, X, y)
        model.zero_grad()
        total.backward()
        lr = 1.0 - 0.9 * k / steps  # linear decay, as in micrograd's demo
        for p in model.parameters():
            p.value -= lr * p.grad
        history.append({"step": k, "loss": total.value, "acc": acc})
        if verbose and (k % log_every == 0 or k == steps - 1):
            print(f"step {k:4d}  loss {total.value:.6f}  accuracy {acc:.3f}")
    return model, history


def _positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=_positive, default=50)
    ap.add_argument("--n", type=int, default=100, help="number of points")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, history = train(args.steps, args.n, args.hidden, args.seed)
    print(f"MLP 2-{args.hidden}-{args.hidden}-1, {len(model.parameters())} scalar Var parameters; final loss "
          f"{history[-1]['loss']:.6f}, accuracy {history[-1]['acc']:.3f}")
    return model, history


if __name__ == "__main__":
    main()

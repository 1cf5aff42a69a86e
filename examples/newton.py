"""Newton's method on the Rosenbrock function, with compiled derivatives.

f(x) = sum over i of 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 has its minimum
0 at x = (1, ..., 1). It is written once, as a Python loop over a list, and
compiled with ``fad.compile``: every step replays it in C for the value and
gradient (``cf.value_and_grad``) and for the Hessian (``cf.hessian``, which
from its second call colors the tridiagonal pattern and takes 3
Hessian-vector products at any n). A backtracking line search keeps every step a descent; where the
Hessian is not positive definite, a multiple of the identity is added to it.

From x = 0 in 10 dimensions it reaches the minimum in 26 steps, the last
ones full Newton steps that square the gradient's norm. (From (-1.2, 1, 1,
..., 1) it finds another minimum, a local one near (-1, 1, ..., 1) where
f = 3.98658; for 4 <= n <= 7 these two are known to be the only ones.)

    python examples/newton.py --n 10
"""
import argparse
import sys

import numpy as np

try:
    import fastad as fad
except ImportError:  # running from a source checkout built in place: use it
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    import fastad as fad


def rosenbrock(x):
    total = 0.0
    for i in range(len(x) - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return total


def newton_direction(H, g, beta=1e-3):
    """-(H + tau I)^-1 g with the smallest tau in 0, beta, 2 beta, 4 beta ...
    that makes the matrix positive definite (Nocedal and Wright's Cholesky
    with added multiple of the identity, Algorithm 3.3): a Newton step where
    H is positive definite, a shorter step towards -g where it is not."""
    tau = 0.0 if np.min(np.diag(H)) > 0 else beta - np.min(np.diag(H))
    while True:
        try:
            L = np.linalg.cholesky(H + tau * np.eye(len(g)))
            break
        except np.linalg.LinAlgError:
            tau = max(2.0 * tau, beta)
    return -np.linalg.solve(L.T, np.linalg.solve(L, g)), tau


def minimise(n=10, max_steps=100, tol=1e-10, verbose=True, start=None):
    """Returns (x, history): history has one dict {step, f, gnorm, tau, t}
    per step (tau: the multiple of the identity added to the Hessian, t:
    the step length the line search took). start: the first x (default 0)."""
    x = np.zeros(n) if start is None else np.array(start, np.float64)
    cf = fad.compile(rosenbrock, x.tolist())
    history = []
    for step in range(max_steps + 1):
        f, g = cf.value_and_grad(x.tolist())
        g = np.array(g)
        rec = {"step": step, "f": f, "gnorm": float(np.linalg.norm(g)), "tau": 0.0, "t": 0.0}
        history.append(rec)
        if rec["gnorm"] < tol or step == max_steps:  # converged, or out of steps: x is where f was taken
            break
        d, rec["tau"] = newton_direction(cf.hessian(x.tolist()), g)
        t, slope = 1.0, float(g @ d)  # Armijo backtracking along d
        while rosenbrock((x + t * d).tolist()) > f + 1e-4 * t * slope and t > 1e-12:
            t *= 0.5
        rec["t"] = t
        if verbose:
            print(f"step {step:3d}  f {f:<24.17g} |g| {rec['gnorm']:<10.3e} tau {rec['tau']:<9.3g} t {t:g}")
        x = x + t * d
    if verbose:
        last = history[-1]
        end = "converged" if last["gnorm"] < tol else f"stopped after {max_steps} steps, not converged"
        print(f"step {last['step']:3d}  f {last['f']:<24.17g} |g| {last['gnorm']:.3e}  {end}")
    return x, history


def _count(text):
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="number of variables")
    ap.add_argument("--steps", type=_count, default=100, help="at most this many Newton steps")
    args = ap.parse_args(argv)
    x, history = minimise(args.n, args.steps)
    print(f"x = {np.array2string(x, precision=12)}")
    return x, history


if __name__ == "__main__":
    main()

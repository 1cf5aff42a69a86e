"""grad_batch scaling curve: throughput of cf.grad_batch on 1 thread, and the
speed-up on 2, 4, 8, 12 and 16 threads, for compiled Rosenbrock of three sizes.
Checks the batch against sequential cf.grad first. For many-core machines:

    OPENBLAS_NUM_THREADS=1 python benchmarks/grad_batch_scaling.py
"""
import time, statistics as st, os, numpy as np, fastad as fad
from fastad import _workloads as W
def med(f, k=9):
    ts = []
    for _ in range(k):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return st.median(ts)
for n, B in [(100, 20000), (1000, 4000), (10000, 400)]:
    x0 = np.random.default_rng(0).uniform(-1.5, 1.5, n)
    cf = fad.compile(lambda x: W.rosenbrock(x, fad), x0)
    X = np.random.default_rng(1).uniform(-1.5, 1.5, (B, n))
    ref = np.array([cf.grad(x) for x in X[:8]])
    assert np.array_equal(cf.grad_batch(X[:8], threads=4), ref)
    t1 = med(lambda: cf.grad_batch(X, threads=1))
    row = [f"rosenbrock n={n} B={B}: 1 thread {B / t1:,.0f} grads/s"]
    for th in (2, 4, 8, 12, 16):
        t = med(lambda: cf.grad_batch(X, threads=th))
        row.append(f"{th}: {t1 / t:.2f}x")
    print("; ".join(row), flush=True)

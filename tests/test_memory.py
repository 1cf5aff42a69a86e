"""Memory: tapes go away with their last Var, training loops stay flat, and
a graph of ten million ops records and sweeps in bounded bytes per row."""
import gc
import math
import os
import random
import threading

import numpy as np
import pytest

import fastad as fad

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def live_tapes():
    """Tape objects alive in this process (Tape is a GC-tracked type: it holds a list)."""
    return sum(type(o) is fad.Tape for o in gc.get_objects())


def test_tape_is_gc_visible():
    # The other tests count tapes through the GC; make sure that can see one.
    before = live_tapes()
    t = fad.Tape()
    assert live_tapes() == before + 1
    del t
    assert live_tapes() == before


@pytest.mark.parametrize("args", [
    (2.0,), ([1.0, 2.0],), ({"a": 1.0, "b": [2.0]},), (np.array([1.0, 2.0]),)],
    ids=["float", "list", "dict", "ndarray"])
def test_grad_leaves_no_tape_alive(args):
    def f(p):
        leaves = p if isinstance(p, list) else (
            [p["a"], p["b"][0]] if isinstance(p, dict) else
            list(p) if isinstance(p, (np.ndarray, fad.Array)) else [p])
        out = leaves[0] * leaves[-1] + fad.sin(leaves[0])
        seen.append(live_tapes())
        return out

    seen = []
    gc.collect()
    before = live_tapes()
    for _ in range(3):
        g = fad.grad(f)(*args)
        v, g2 = fad.value_and_grad(f)(*args)
    assert type(v) is float
    assert np.array_equal(g, g2) if isinstance(g, np.ndarray) else g == g2
    assert seen and all(n > before for n in seen)  # a tape existed while f ran
    assert live_tapes() == before  # and none is left once grad returned


def test_grad_leaves_no_tape_alive_when_f_raises():
    def f(x):
        leaf = x["x"] if isinstance(x, dict) else x
        if leaf * leaf > -1.0:  # recorded, then f fails
            raise RuntimeError("inside f")
        return leaf

    before = live_tapes()
    with pytest.raises(RuntimeError):
        fad.grad(f)(2.0)
    with pytest.raises(RuntimeError):
        fad.grad(f)({"x": 2.0})
    assert live_tapes() == before
    # the thread's tape state is restored: ops on leaves record on the implicit tape again
    x = fad.Var(1.0)
    y = x * 2.0
    assert y.tape is not None and len(y.tape) == 2


def test_a_finished_threads_tape_is_freed_with_it():
    # Its state stayed in the core's one-slot thread cache until another
    # thread's first op; nothing here calls fastad after the join.
    def work():
        kept.append((fad.Var(1.0) * 2.0).value)  # the thread's implicit tape now has rows

    kept = []
    gc.collect()
    before = live_tapes()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    gc.collect()
    assert kept == [2.0]
    assert live_tapes() == before


def test_implicit_tape_stays_bounded():
    x = fad.Var(1.5)
    for _ in range(100_000):
        y = (x * 2.0).value
    assert y == 3.0
    z = x * 3.0
    assert len(z.tape) <= 2  # INPUT x and the mul: the old rows were recycled
    assert z.tape.nbytes < 1 << 20


def test_evaluation_loops_that_keep_the_last_result_stay_bounded_as_the_readme_says():
    """`loss = f(params)` with no backward keeps the last loss alive while
    the next records, so the thread's tape cannot reset and grows (the
    README says so); no_grad, `.value` or a Tape block per step stay flat."""
    ps = [fad.Var(0.1 * k) for k in range(10)]
    f = lambda: sum(p * p for p in ps)  # noqa: E731
    loss = f()
    start = len(loss.tape)
    for _ in range(50):
        loss = f()
    assert len(loss.tape) == start + 50 * (start - len(ps))  # every step's ops, kept: as documented
    del loss
    for _ in range(200):
        with fad.no_grad():
            loss = f()
        assert loss.tape is None
    for _ in range(200):
        with fad.Tape():
            loss = f()
        assert len(loss.tape) <= start  # each step's tape goes with the last loss
    for _ in range(200):
        kept = f().value
    assert kept == loss.value and len(f().tape) <= start


def _mlp(n_in, n_hidden, rng):
    w1 = [[fad.Var(rng.uniform(-1, 1)) for _ in range(n_in)] for _ in range(n_hidden)]
    b1 = [fad.Var(0.0) for _ in range(n_hidden)]
    w2 = [fad.Var(rng.uniform(-1, 1)) for _ in range(n_hidden)]
    b2 = fad.Var(0.0)
    params = [w for row in w1 for w in row] + b1 + w2 + [b2]

    def forward(x):
        hidden = [fad.tanh(sum((w * xi for w, xi in zip(row, x)), b)) for row, b in zip(w1, b1)]
        return sum((w * h for w, h in zip(w2, hidden)), b2)
    return forward, params


def test_training_loop_memory_is_flat():
    rng = random.Random(0)
    forward, params = _mlp(2, 8, rng)
    data = [((0.0, 0.0), -1.0), ((0.0, 1.0), 1.0), ((1.0, 0.0), 1.0), ((1.0, 1.0), -1.0)]
    losses, rss, tapes = [], {}, set()
    gc.collect()
    for step in range(1, 1001):
        loss = sum(((forward(x) - y) ** 2 for x, y in data), 0.0 * params[0])
        for p in params:
            p.grad = 0.0
        loss.backward()
        for p in params:
            p.value -= 0.05 * p.grad
        losses.append(loss.value)
        if step in (200, 600, 1000):
            rss[step] = rss_bytes()
            tapes.add(live_tapes())
    del loss
    assert losses[-1] < 0.1 * losses[0]  # it trained (the loop did real work)
    assert max(tapes) <= 2  # no tape survives its step
    early, late = rss[600] - rss[200], rss[1000] - rss[600]
    assert rss[1000] - rss[200] < 20 << 20, rss
    assert early < 2 << 20 and late < 2 << 20, (early, late)


def test_ten_million_op_chain():
    n = 5_000_000  # two ops per step: 10,000,000 rows plus the input
    a, b = 1.0000001, 1e-9
    x = fad.Var(0.5)
    y = x
    for _ in range(n):
        y = y * a + b
    tape = y.tape
    assert len(tape) == 2 * n + 1
    y.backward()
    an = math.pow(a, n)
    assert y.value == pytest.approx(an * 0.5 + b * (an - 1) / (a - 1), rel=1e-8)
    assert x.grad == pytest.approx(an, rel=1e-8)
    assert tape.nbytes / len(tape) <= 64
    assert tape.nbytes < 1 << 30
    peak = rss_bytes()
    del y, tape
    # The thread keeps its consumed implicit tape until its next recording,
    # which replaces it; then the rows must go back to the system.
    z = fad.Var(1.0) * 2.0
    assert len(z.tape) == 2
    assert rss_bytes() < peak - (200 << 20)

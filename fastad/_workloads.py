"""Benchmark workloads, written once and run unchanged by every engine.

A workload is ``fn(xs, m) -> scalar``: ``xs`` is a list of the engine's
scalars and ``m`` a namespace with ``sin cos tanh exp log1p`` -- the
``math`` module for plain Python floats (the floor for anything that runs
Python per op), ``fastad`` for the compiled core, ``fastad.reference`` for
the pure-Python reference. Because every engine runs the same Python code,
every engine records the same graph, and time ratios compare like with like.

Both ``python -m fastad bench`` (``fastad/bench.py``) and the pytest-benchmark
suite (``benchmarks/``) time the phases defined here:

* ``eval``   -- the function on Python floats (engine ``float`` only);
* ``record`` -- build the leaves and run the function (on the thread's
  implicit tape, as user code does; the graph is dropped after each call);
* ``sweep``  -- ``out.backward()`` alone, on a graph recorded untimed;
* ``grad``   -- the whole gradient through the public ``grad`` (recording,
  sweep and reading the gradient back), or for the MLP one micrograd-style
  training step (zero grads, loss, ``backward()``, update the leaves).

Programs stored as rows are drawn from a seeded ``random.Random``, so every
run, engine and machine sees the same graph. The ideas (bounded chains, a
DAG whose output sums its sinks) follow the peers benchmark's workloads.
This module imports neither the core nor the reference: engines come in
through :func:`engines`.

Two more sections follow the scalar workloads: ``arrays`` (NumPy code on
``fad.Array``, against the same code on plain ndarrays, engine ``NUMPY``)
and ``compile`` (``fad.compile``'s replays against recording with
``fad.grad``); see the comments at their headings.
"""
import contextlib
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# --- sizes ------------------------------------------------------------------

SIZES = {
    "full": {"chain": 100_000, "dag": 1_000_000, "rosenbrock": 10_000, "mlp": 100},
    "quick": {"chain": 2_000, "dag": 20_000, "rosenbrock": 1_000, "mlp": 10},
}
NAMES = ("seed", "chain", "dag", "rosenbrock", "mlp")
SEED_CALLS = 1_000  # the textbook function is timed 1,000 calls at a time
PHASES = ("record", "sweep", "grad")  # what the two AD engines are timed on
MLP_SIZES = (2, 16, 16, 1)
MLP_LR = 1e-3


@dataclass
class Workload:
    name: str  # "dag"
    label: str  # "dag N=1,000,000 (live)"
    fn: object  # fn(xs, m) -> scalar
    x0: list  # the input point, Python floats
    size: int = 0  # the size parameter (0 for the textbook function)
    calls: int = 1  # calls per timed run: times are for `calls` calls
    info: dict = field(default_factory=dict)


# --- W1: the textbook function ----------------------------------------------

def seed_fn(xs, m):
    x1, x2 = xs
    return x1 * x2 + m.sin(x1)


# --- W2/W3: programs stored as rows (op, a, b), interpreted in Python --------

ADD, SUB, MUL, DIV, SIN, COS, TANH, EXP, GAUSS, LOG1PSQ = range(10)
BINARY = (ADD, SUB, MUL, DIV)
CHAIN_OPS = (ADD, MUL, SIN, TANH, EXP)
DAG_OPS = (ADD, SUB, MUL, DIV, SIN, COS, TANH, GAUSS, LOG1PSQ)


def op_table(m):
    """Program op code -> f(x, y) in the engine's math (unary ops ignore y)."""
    sin, cos, tanh, exp, log1p = m.sin, m.cos, m.tanh, m.exp, m.log1p
    return (
        lambda x, y: x + y,
        lambda x, y: x - y,
        lambda x, y: x * y,
        lambda x, y: x / (1.0 + y * y),  # safe division
        lambda x, y: sin(x),
        lambda x, y: cos(x),
        lambda x, y: tanh(x),
        lambda x, y: exp(x),  # chains only; the generator keeps the value bounded
        lambda x, y: exp(-(x * x)),  # safe exp
        lambda x, y: log1p(x * x),  # safe log
    )


# d op(x, y) / dx: what a chain multiplies up along its length.
_SLOPE = {
    ADD: lambda x, y, v: 1.0,
    MUL: lambda x, y, v: y,
    SIN: lambda x, y, v: math.cos(x),
    TANH: lambda x, y, v: 1.0 - v * v,
    EXP: lambda x, y, v: v,
}


@lru_cache(maxsize=4)
def random_program(n, n_in, ops, seed, chain=False, bound=10.0, max_log_slope=5.0):
    """``n`` rows ``(op, a, b)`` over ``n_in`` inputs, drawn at the point x0.

    A DAG row reads two uniformly random earlier nodes; a chain row reads
    the previous node and a random input. An op whose value would leave
    [-bound, bound] is redrawn so nothing overflows; in a chain, so is an op
    that would take the derivative of the chain so far out of
    [e^-max_log_slope, e^max_log_slope], so adjoints neither vanish nor
    blow up along it (a freely drawn chain underflows to 0 in ~2,000 ops).
    Returns ``(rows, x0)``; both are tuples, so the cache cannot be mutated.
    """
    rng = random.Random(seed)
    x0 = [rng.uniform(-1.0, 1.0) for _ in range(n_in)]
    f = op_table(math)
    vals, rows, log_slope = list(x0), [], 0.0
    for k in range(n_in, n_in + n):
        a = k - 1 if chain else rng.randrange(k)
        b = 0 if chain else rng.randrange(k)
        while True:
            if chain:
                b = rng.randrange(n_in)
            op = rng.choice(ops)
            v = f[op](vals[a], vals[b])
            if abs(v) > bound:
                continue
            if chain:
                slope = abs(_SLOPE[op](vals[a], vals[b], v))
                if slope == 0.0 or abs(log_slope + math.log(slope)) > max_log_slope:
                    continue
                log_slope += math.log(slope)
            break
        vals.append(v)
        rows.append((op, a, b))
    return tuple(rows), tuple(x0)


def sinks(rows, n_in):
    """Nodes no later row reads: summing them makes every node reach the output."""
    read = bytearray(n_in + len(rows))
    for op, a, b in rows:
        read[a] = 1
        if op in BINARY:  # unary rows carry a b they do not read
            read[b] = 1
    return [k for k in range(n_in, n_in + len(rows)) if not read[k]]


def program_fn(rows, outputs):
    """Interpret the rows with the engine's ops; return the sum of ``outputs``."""
    first, rest = outputs[0], outputs[1:]

    def run(xs, m):
        f = op_table(m)
        v = list(xs)
        push = v.append
        for op, a, b in rows:
            push(f[op](v[a], v[b]))
        out = v[first]
        for k in rest:
            out = out + v[k]
        return out

    return run


# --- W4: Rosenbrock as a scalar loop ---------------------------------------

def rosenbrock(x, m):
    total = 0.0
    for i in range(len(x) - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return total


# --- W5: micrograd-style MLP on scalars -------------------------------------

def mlp_fn(points, targets, sizes=MLP_SIZES):
    """Squared loss of a tanh MLP (linear last layer) summed over the points;
    the parameters arrive as one flat list, neuron by neuron (weights, bias)."""
    points, targets = tuple(points), tuple(targets)

    def run(p, m):
        layers, k = [], 0
        for n_in, n_out in zip(sizes, sizes[1:]):
            layer = []
            for _ in range(n_out):
                layer.append((p[k:k + n_in], p[k + n_in]))
                k += n_in + 1
            layers.append(layer)
        last = len(layers) - 1
        tanh = m.tanh
        loss = 0.0
        for x, y in zip(points, targets):
            h = x
            for depth, layer in enumerate(layers):
                out = []
                for w, b in layer:
                    act = b
                    for wi, hi in zip(w, h):
                        act = act + wi * hi
                    out.append(act if depth == last else tanh(act))
                h = out
            loss = loss + (h[0] - y) ** 2
        return loss

    return run


def moons(n, seed):
    """Two interleaved half circles with noise, labels -1/+1 (micrograd's demo)."""
    rng = random.Random(seed)
    pts, ys = [], []
    for i in range(n):
        t = math.pi * rng.random()
        top = i % 2 == 0
        x, y = (math.cos(t), math.sin(t)) if top else (1 - math.cos(t), 0.5 - math.sin(t))
        pts.append((x + rng.gauss(0, 0.1), y + rng.gauss(0, 0.1)))
        ys.append(1.0 if top else -1.0)
    return pts, ys


# --- the catalogue ----------------------------------------------------------

@lru_cache(maxsize=None)
def make(name, size=None, seed=0):
    """One workload; ``size`` None means the full size. Deterministic in ``seed``."""
    if size is None and name != "seed":
        size = SIZES["full"][name]
    if name == "seed":
        return Workload("seed", "seed z = x1*x2 + sin(x1), per call",
                        seed_fn, [2.0, 3.0], 0, calls=SEED_CALLS)
    if name == "chain":
        rows, x0 = random_program(size, 10, CHAIN_OPS, seed, chain=True)
        return Workload("chain", f"chain N={size:,}", program_fn(rows, [len(x0) + size - 1]),
                        list(x0), size)
    if name == "dag":
        rows, x0 = random_program(size, 100, DAG_OPS, seed)
        out = sinks(rows, len(x0))
        return Workload("dag", f"dag N={size:,} (live: output = sum of {len(out):,} sinks)",
                        program_fn(rows, out), list(x0), size, info={"sinks": len(out)})
    if name == "rosenbrock":
        rng = random.Random(seed)
        return Workload("rosenbrock", f"rosenbrock n={size:,}", rosenbrock,
                        [rng.uniform(-1.5, 1.5) for _ in range(size)], size)
    if name == "mlp":
        pts, ys = moons(size, seed)
        rng = random.Random(seed + 1)
        n_params = sum((i + 1) * o for i, o in zip(MLP_SIZES, MLP_SIZES[1:]))
        return Workload("mlp", f"mlp 2-16-16-1 tanh, {size} points, one step",
                        mlp_fn(pts, ys), [rng.uniform(-1, 1) for _ in range(n_params)], size)
    raise ValueError(f"unknown workload {name!r}; expected one of {NAMES}")


def catalogue(quick=False):
    """Every workload at the quick or the full sizes, cheapest first."""
    sizes = SIZES["quick" if quick else "full"]
    return [make(name, None if name == "seed" else sizes[name]) for name in NAMES]


# --- engines ----------------------------------------------------------------

class Engine:
    """One library under test: the module giving ``Var``, ``Tape``, ``grad``
    and the math functions (``math`` for the plain-float floor)."""

    def __init__(self, name, module):
        self.name = name
        self.m = module
        self.Var = getattr(module, "Var", None)
        self.Tape = getattr(module, "Tape", None)
        self.grad = getattr(module, "grad", None)

    @property
    def is_ad(self):
        return self.Var is not None

    def tape(self):
        """A fresh tape as the current one, where the engine has ``Tape``."""
        return self.Tape() if self.Tape is not None else contextlib.nullcontext()

    def __repr__(self):
        return f"Engine({self.name!r})"


FLOAT = Engine("float", math)


def engines():
    """``(fastad, reference)`` as Engines. The compiled core may be missing
    (not built yet): then the first is None, the reference still runs."""
    from . import reference
    try:
        import fastad
        core = Engine("fastad", fastad) if hasattr(fastad, "Var") else None
    except ImportError:
        core = None
    return core, Engine("reference", reference)


# --- phases -----------------------------------------------------------------

@dataclass
class Phase:
    """A timed body: ``run(*setup())`` is one timed run of ``calls`` calls;
    ``setup`` (untimed, may be None) prepares what the run consumes."""
    run: object
    setup: object = None
    calls: int = 1


def _list_grad_ok(engine):
    """Whether ``engine.grad(f)`` takes a list argument and returns a list."""
    try:
        g = engine.grad(lambda xs: xs[0] * xs[1])([3.0, 2.0])
        return list(g) == [2.0, 3.0]
    except Exception:
        return False


def phase(wl, engine, name):
    """The body that times phase ``name`` of workload ``wl`` on ``engine``."""
    fn, x0, m, calls = wl.fn, wl.x0, engine.m, wl.calls
    # Both sides build their input list each call (floats: a copy, as the
    # peers harness does; AD engines: one leaf per number), so a ratio
    # compares the library's cost, not list building on one side only.
    if name == "eval":
        if calls == 1:
            return Phase(lambda: fn(list(x0), m))

        def run_eval():
            for _ in range(calls):
                fn(list(x0), m)
        return Phase(run_eval, calls=calls)

    Var, tape = engine.Var, engine.tape
    if name == "record":
        # On the thread's implicit tape, as user code records: the graph is
        # dropped at once, so each call starts on an empty tape (the core
        # resets its tape in place, the reference makes a new one).
        def run_record():
            for _ in range(calls):
                fn(list(map(Var, x0)), m)
        return Phase(run_record, calls=calls)

    if name == "sweep":
        def setup_sweep():
            outs = []
            for _ in range(calls):  # one tape per graph: a sweep consumes its tape
                with tape():
                    outs.append(fn([Var(v) for v in x0], m))
            return (outs,)

        def run_sweep(outs):
            for out in outs:
                out.backward()
        return Phase(run_sweep, setup_sweep, calls)

    if name == "grad":
        if wl.name == "seed":
            g = engine.grad(lambda x1, x2: fn([x1, x2], m), argnums=(0, 1))

            def run_grad():
                for _ in range(calls):
                    g(2.0, 3.0)
            return Phase(run_grad, calls=calls)
        if wl.name == "mlp":
            return Phase(training_step(wl, engine), calls=calls)
        if _list_grad_ok(engine):
            g = engine.grad(lambda xs: fn(xs, m))
            return Phase(lambda: g(x0), calls=calls)
        return Phase(lambda: manual_grad(wl, engine), calls=calls)
    raise ValueError(f"unknown phase {name!r}")


def training_step(wl, engine):
    """One micrograd-style step on persistent leaves, as a training loop
    writes it: zero the grads, build the loss, ``backward()``, update."""
    params = [engine.Var(v) for v in wl.x0]
    fn, m = wl.fn, engine.m

    def step():
        for p in params:
            p.grad = 0.0
        loss = fn(params, m)
        loss.backward()
        for p in params:
            p.value = p.value - MLP_LR * p.grad
        return loss

    return step


def manual_grad(wl, engine):
    """``(value, gradient list)`` by leaves, ``backward()`` and ``.grad``."""
    xs = [engine.Var(v) for v in wl.x0]
    with engine.tape():
        out = wl.fn(xs, engine.m)
    out.backward()
    return out.value, [x.grad for x in xs]


def tape_info(wl, engine):
    """Size of one recording of ``wl`` (one call) on ``engine``:

    * ``rows``: ``len(tape)``;
    * ``nbytes``, ``bytes_per_row``: ``tape.nbytes`` and ``nbytes / rows``
      right after recording (the tape's allocation, spare capacity included:
      a small tape that took over a bigger one's parked arrays shows many
      bytes per row);
    * ``nbytes_swept``, ``bytes_per_row_swept``: the same after
      ``backward(retain_graph=True)``, adjoints included.

    The ``nbytes`` entries are None where the engine's Tape has no ``nbytes``.
    """
    with engine.tape():
        out = wl.fn([engine.Var(v) for v in wl.x0], engine.m)
    t = getattr(out, "tape", None)
    rows = len(t) if t is not None else None
    nbytes = getattr(t, "nbytes", None) if t is not None else None
    swept = None
    if nbytes is not None:
        try:
            out.backward(retain_graph=True)
            swept = t.nbytes
        except Exception:
            swept = None
    return {"rows": rows, "nbytes": nbytes, "nbytes_swept": swept,
            "bytes_per_row": nbytes / rows if nbytes is not None and rows else None,
            "bytes_per_row_swept": swept / rows if swept is not None and rows else None}


def row_bytes(engine, max_rows=1 << 24):
    """Bytes a tape allocates per row of capacity, and per row in use after
    a sweep: ``(per_row, swept)``, or None where the engine's Tape has no
    ``nbytes``.

    Appends one-row ops and watches ``tape.nbytes``: it jumps when the arrays
    grow, and a jump happens when the rows fill the capacity. Between the
    first jump (capacity n1 full) and the second (capacity n2 full) the
    allocation grew by (n2 - n1) rows, so the bytes per row come out exact
    whatever the growth policy and whatever slack the tape started with.
    A sweep then trims the spare rows.
    """
    if engine.Tape is None:
        return None
    x = engine.Var(0.5)
    with engine.Tape() as t:
        y = x * 1.0
        if getattr(t, "nbytes", None) is None:
            return None
        full = []  # (rows when full, nbytes then)
        while len(full) < 2 and len(t) < max_rows:
            n, b = len(t), t.nbytes
            y = y + 1.0
            if t.nbytes != b:
                full.append((n, b))
    if len(full) < 2:
        return None
    (n1, b1), (n2, b2) = full
    per_row = (b2 - b1) / (n2 - n1)
    try:
        # The loop stopped just after a growth (about half the rows spare); a
        # sweep trims a tape with over 12.5% spare rows to fit (and adds the
        # adjoints, on a tape that allocates them only then).
        y.backward(retain_graph=True)
        with_adj = t.nbytes / len(t)
    except Exception:
        with_adj = None
    return per_row, with_adj


# --- the targets the issues set (reported, not asserted) --------------------

TARGETS = (
    # (workload, phase, ratio kind, bound, text); ratio kind "ref" is
    # reference/fastad (want >= bound), "float" is fastad/float (want <= bound).
    ("dag", "sweep", "ref", 100.0, "reverse sweep >= 100x faster than the reference (live DAG)"),
    ("*", "record", "ref", 10.0, "recording >= 10x faster than the reference"),
    ("*", "record", "float", 3.0, "recording <= 3x float eval"),
    ("rosenbrock", "grad", "float", 4.0, "whole gradient of Rosenbrock <= 4x float eval"),
)
MAX_BYTES_PER_ROW = 40.0
JUDGED_ROWS = 10_000  # bytes/row is judged on a tape this big or bigger


def check_targets(medians, tapes, layout=None):
    """Lines saying which targets are met. ``medians[(workload, engine,
    phase)]`` is seconds per call, ``tapes[workload]`` :func:`tape_info`'s
    dict for the core, ``layout`` :func:`row_bytes` of the core."""
    lines = []
    names = sorted({w for w, _, _ in medians}, key=lambda w: NAMES.index(w) if w in NAMES else 99)
    for wname, ph, kind, bound, text in TARGETS:
        for w in names if wname == "*" else [wname]:
            fast = medians.get((w, "fastad", ph))
            other = medians.get((w, "reference", ph) if kind == "ref" else (w, "float", "eval"))
            if not fast or not other:
                continue
            ratio = other / fast if kind == "ref" else fast / other
            ok = ratio >= bound if kind == "ref" else ratio <= bound
            lines.append(f"{'met ' if ok else 'MISS'}  {text}: {w} {ratio:,.2f}x")
    bound = MAX_BYTES_PER_ROW
    if layout and layout[1] is not None:
        lines.append(f"{'met ' if layout[1] <= bound else 'MISS'}  <= {bound:.0f} bytes of tape "
                     f"per node, row layout: {layout[0]:.1f} B/row, {layout[1]:.1f} after a sweep")
    sized = [(t["rows"], w, t) for w, t in tapes.items()
             if t.get("rows") and t.get("bytes_per_row_swept") is not None]
    if sized:  # the biggest tape: the least distorted by capacity granularity
        rows, w, t = max(sized)
        per = t["bytes_per_row_swept"]
        if rows < JUDGED_ROWS:  # (--only a small workload: a tape's first block is most of its bytes)
            lines.append(f"not judged: <= {bound:.0f} bytes of tape per node, on the biggest tape of "
                         f"this run, {w} ({rows:,} rows; {JUDGED_ROWS:,} or more are needed)")
        else:
            lines.append(f"{'met ' if per <= bound else 'MISS'}  <= {bound:.0f} bytes of tape per node, "
                         f"tape.nbytes / len(tape) after the sweep on the biggest tape: {w} "
                         f"({rows:,} rows) {per:.1f} B/row")
    return lines


# === arrays (issue "arrays"): NumPy code on fad.Array ======================
#
# The same NumPy code runs on plain ndarrays (engine ``numpy``: no
# gradient, the floor), on ``fastad.Array`` and on ``fastad.reference.Array``.
# Model code reaches the engine only through ``m.log_softmax`` (NumPy has
# none); everything else is ``np.*``, ``@`` and methods, which the Array
# types take over through ``__array_ufunc__`` / ``__array_function__``.

ARRAY_NAMES = ("iris", "mlp784", "ops10", "elemloop")
ARRAY_SIZES = {
    "full": {"mlp784": 64, "elemloop": 10_000},
    "quick": {"mlp784": 16, "elemloop": 1_000},
}
MLP784_SIZES = (784, 256, 10)
SMALL_OPS, SMALL_LEN = 100, 10  # ops10: 100 elementwise ops on 10-element arrays

# The timed bodies of each array workload, (engine, phase), floors first.
# Phases: ``eval`` the code on ndarrays (``numpy``) or, for the element
# loop's list variant, on a list of floats (``float``); ``record`` the
# forward on Arrays (implicit tape, graph dropped); ``grad`` the gradient
# (iris, mlp784: ``value_and_grad`` over the parameter dict; ops10 and the
# element loop: leaves + forward + ``backward()``); ``*-list`` the element
# loop on a list of scalar Vars instead of one Array.
_AD_ARRAY_PHASES = {"elemloop": ("record", "grad", "record-list", "grad-list")}
ARRAY_BODIES = {
    name: ([("numpy", "eval")] + ([("float", "eval")] if name == "elemloop" else [])
           + [(e, ph) for e in ("fastad", "reference")
              for ph in _AD_ARRAY_PHASES.get(name, ("record", "grad"))])
    for name in ARRAY_NAMES
}
ARRAY_PHASE_LABELS = {
    "iris": {"record": "forward on Arrays", "grad": "value_and_grad step"},
    "mlp784": {"record": "forward on Arrays", "grad": "value_and_grad step"},
    "ops10": {"record": "record, per op", "grad": "record + backward, per op"},
    "elemloop": {"record": "Array: record", "grad": "Array: record + backward",
                 "record-list": "list of Vars: record",
                 "grad-list": "list of Vars: record + backward"},
}


def np_log_softmax(z, axis=-1):
    """log_softmax on ndarrays, as one writes it without an AD library."""
    z = z - np.max(z, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


class _NumpyMath:
    """The ``m`` of the NumPy floor: ndarrays in, no tape."""
    Array = staticmethod(np.asarray)
    log_softmax = staticmethod(np_log_softmax)


NUMPY = Engine("numpy", _NumpyMath)


def softmax_loss(params, X, Y, m):
    """Softmax regression: mean(-sum(Y * log_softmax(X @ W + B)))."""
    Z = X @ params["W"] + params["B"]
    return np.mean(-np.sum(Y * m.log_softmax(Z), axis=1))


def mlp784_loss(params, X, Y, m):
    """A tanh MLP with a softmax cross-entropy (examples/mlp_numpy.py's model)."""
    h = np.tanh(X @ params["W1"] + params["b1"])
    Z = h @ params["W2"] + params["b2"]
    return np.mean(-np.sum(Y * m.log_softmax(Z), axis=1))


def small_ops(a, b, m=None):
    """SMALL_OPS elementwise ops (five kinds, values kept in [-2, 2]), then a sum."""
    y = a
    for _ in range(SMALL_OPS // 5):
        y = y * b
        y = np.sin(y)
        y = y + b
        y = np.tanh(y)
        y = y - a
    return y.sum()


def pair_loop(a, m=None):
    """Element by element: s = s + a[i] * a[i+1] (a 1-d Array, ndarray or list)."""
    s = 0.0
    for i in range(len(a) - 1):
        s = s + a[i] * a[i + 1]
    return s


def load_iris():
    """X (150, 4) in cm and the one-hot species Y (150, 3), from fastad/data/iris.csv."""
    import csv
    import io
    from importlib import resources
    text = resources.files("fastad").joinpath("data/iris.csv").read_text(encoding="utf-8")
    body = [r for r in list(csv.reader(io.StringIO(text)))[1:] if r]
    X = np.array([[float(v) for v in r[:4]] for r in body])
    Y = np.eye(3)[[int(r[4]) for r in body]]
    return X, Y


@lru_cache(maxsize=None)
def make_array(name, size=None, seed=0):
    """One array workload; ``x0`` holds the inputs (parameter dict, arrays)."""
    if size is None and name in ARRAY_SIZES["full"]:
        size = ARRAY_SIZES["full"][name]
    rng = np.random.default_rng(seed)
    if name == "iris":
        X, Y = load_iris()
        params = {"W": rng.normal(0.0, 0.1, (4, 3)), "B": np.zeros(3)}
        return Workload("iris", "iris softmax regression 150x4, 3 classes",
                        softmax_loss, params, len(X), info={"X": X, "Y": Y})
    if name == "mlp784":
        n_in, n_hid, n_out = MLP784_SIZES
        X = rng.normal(size=(size, n_in))
        Y = np.eye(n_out)[rng.integers(0, n_out, size)]
        params = {"W1": rng.normal(0.0, n_in ** -0.5, (n_in, n_hid)), "b1": np.zeros(n_hid),
                  "W2": rng.normal(0.0, n_hid ** -0.5, (n_hid, n_out)), "b2": np.zeros(n_out)}
        return Workload("mlp784", f"mlp 784-256-10 tanh + softmax CE, batch {size}",
                        mlp784_loss, params, size, info={"X": X, "Y": Y})
    if name == "ops10":
        ab = (rng.uniform(-1.0, 1.0, SMALL_LEN), rng.uniform(-1.0, 1.0, SMALL_LEN))
        return Workload("ops10", f"{SMALL_OPS} elementwise ops on {SMALL_LEN}-element arrays",
                        small_ops, ab, SMALL_LEN, calls=SMALL_OPS)
    if name == "elemloop":
        return Workload("elemloop", f"element loop s = s + a[i]*a[i+1], n={size:,}",
                        pair_loop, rng.uniform(-1.0, 1.0, size), size)
    raise ValueError(f"unknown array workload {name!r}; expected one of {ARRAY_NAMES}")


def array_catalogue(quick=False):
    sizes = ARRAY_SIZES["quick" if quick else "full"]
    return [make_array(name, sizes.get(name)) for name in ARRAY_NAMES]


def array_phase(wl, engine, name):
    """The body timing phase ``name`` of array workload ``wl`` on ``engine``
    (``NUMPY`` or ``FLOAT`` for ``eval``, else an AD engine)."""
    fn, m = wl.fn, engine.m
    if wl.name in ("iris", "mlp784"):
        params, X, Y = wl.x0, wl.info["X"], wl.info["Y"]
        if name == "eval":
            return Phase(lambda: fn(params, X, Y, m))
        if name == "record":
            Array = m.Array
            return Phase(lambda: fn({k: Array(v) for k, v in params.items()}, X, Y, m))
        if name == "grad":
            vg = m.value_and_grad(lambda p: fn(p, X, Y, m))
            return Phase(lambda: vg(params))
    elif wl.name == "ops10":
        a0, b0 = wl.x0
        calls = wl.calls
        if name == "eval":
            return Phase(lambda: fn(a0, b0), calls=calls)
        Array = m.Array
        if name == "record":
            return Phase(lambda: fn(Array(a0), Array(b0)), calls=calls)
        if name == "grad":
            return Phase(lambda: fn(Array(a0), Array(b0)).backward(), calls=calls)
    elif wl.name == "elemloop":
        x0 = wl.x0
        xl = x0.tolist()
        if name == "eval":
            data = xl if engine.name == "float" else x0
            return Phase(lambda: fn(data))
        if name == "record":
            return Phase(lambda: fn(m.Array(x0)))
        if name == "grad":
            return Phase(lambda: fn(m.Array(x0)).backward())
        Var = m.Var
        if name == "record-list":
            return Phase(lambda: fn([Var(v) for v in xl]))
        if name == "grad-list":
            return Phase(lambda: fn([Var(v) for v in xl]).backward())
    raise ValueError(f"unknown phase {name!r} of array workload {wl.name!r}")


def array_gradient(wl, engine):
    """``(value, gradient)`` of an array workload on an AD engine, untimed
    (for the agreement checks): the gradient as a dict or a list of arrays."""
    m = engine.m
    if wl.name in ("iris", "mlp784"):
        X, Y = wl.info["X"], wl.info["Y"]
        value, g = m.value_and_grad(lambda p: wl.fn(p, X, Y, m))(wl.x0)
        return float(value), {k: np.asarray(v) for k, v in g.items()}
    leaves = [m.Array(v) for v in (wl.x0 if wl.name == "ops10" else (wl.x0,))]
    with engine.tape():
        out = wl.fn(*leaves)
    out.backward()
    return float(out.value), [np.asarray(a.grad) for a in leaves]


def array_floor_value(wl):
    """The workload's value on ndarrays (no AD)."""
    if wl.name in ("iris", "mlp784"):
        return float(wl.fn(wl.x0, wl.info["X"], wl.info["Y"], NUMPY.m))
    return float(wl.fn(*(wl.x0 if wl.name == "ops10" else (wl.x0,))))


# === compile (issue "compile"): fad.compile, trace once, replay in C ========
#
# ``cf-rosenbrock`` and ``cf-dag`` are the scalar workloads above, compiled
# as ``fad.compile(lambda x: fn(x, fad), x0)`` on a list of floats;
# ``grad_batch`` is Rosenbrock n=100 over B stacked points; ``jacobian`` a
# 100 -> 100 map x -> tanh(A @ x) written as Python loops over a list;
# ``hessian`` Rosenbrock n=100's Hessian: by a coloring of its pattern, by
# products with every basis vector (16 a sweep, or one call each);
# ``cf-iris`` and ``cf-mlp784`` the array models above, compiled over their
# parameter dicts (ArrayTraces: each array row replays by NumPy). On iris
# the arrays are small, so what a row costs beside its NumPy call decides.

COMPILE_NAMES = ("cf-rosenbrock", "cf-dag", "grad_batch", "jacobian", "hessian", "cf-iris",
                 "cf-mlp784")
ARRAY_COMPILED = ("cf-iris", "cf-mlp784")
COMPILE_SIZES = {
    "full": {"cf-rosenbrock": 10_000, "cf-dag": 1_000_000, "grad_batch": 2_000, "hessian": 100,
             "cf-mlp784": 64},
    "quick": {"cf-rosenbrock": 1_000, "cf-dag": 20_000, "grad_batch": 500, "hessian": 50,
              "cf-mlp784": 16},
}
BATCH_N = 100  # grad_batch: Rosenbrock of this size
JAC_N = 100
# (engine, phase) per item; engine "cf" is the compiled function.
_REPLAY = [("float", "eval"), ("cf", "eval"), ("cf", "value_and_grad"), ("cf", "grad"),
           ("cf", "hvp"), ("fastad", "grad"), ("reference", "grad"),
           # the same replays on an ndarray: no list to read, the gradient
           # an ndarray instead of a list of Python floats
           ("cf", "eval-ndarray"), ("cf", "value_and_grad-ndarray"), ("cf", "grad-ndarray")]
COMPILE_BODIES = {
    "cf-rosenbrock": _REPLAY,
    "cf-dag": _REPLAY,
    "grad_batch": [("cf", "loop"), ("cf", "threads=1"), ("cf", "threads=2"),
                   ("cf", "threads=None")],
    "jacobian": [("float", "eval"), ("cf", "fwd"), ("cf", "rev"), ("fastad", "rev")],
    "hessian": [("cf", "grad"), ("cf", "hvp-loop"), ("cf", "hvp-blocks"), ("cf", "hessian"),
                ("fastad", "hessian")],
    **{name: [("numpy", "eval"), ("cf", "eval"), ("cf", "value_and_grad"), ("fastad", "grad"),
              ("reference", "grad")] for name in ARRAY_COMPILED},
}


def tanh_layer(A):
    """x -> [tanh(sum_j A[i][j] * x[j]) for i]: a dense layer as Python loops."""
    A = tuple(tuple(row) for row in A)

    def run(x, m):
        tanh, out = m.tanh, []
        for row in A:
            acc = 0.0
            for a, xj in zip(row, x):
                acc = acc + a * xj
            out.append(tanh(acc))
        return out

    return run


@lru_cache(maxsize=None)
def make_compiled(name, size=None, seed=0):
    """One compile workload (the functions are not compiled here: that
    needs the core, see :func:`compile_phases`)."""
    if size is None and name in COMPILE_SIZES["full"]:
        size = COMPILE_SIZES["full"][name]
    if name in ("cf-rosenbrock", "cf-dag"):
        base = make(name[3:], size, seed)
        rng = random.Random(seed + 3)
        return Workload(name, base.label, base.fn, base.x0, size,
                        info={"base": base, "v": [rng.uniform(-1.0, 1.0) for _ in base.x0]})
    if name == "grad_batch":
        base = make("rosenbrock", BATCH_N, seed)
        X = np.random.default_rng(seed + 4).uniform(-1.5, 1.5, (size, BATCH_N))
        return Workload(name, f"grad_batch rosenbrock n={BATCH_N}, B={size:,}", base.fn, base.x0,
                        size, info={"X": X})
    if name == "jacobian":
        rng = random.Random(seed + 5)
        A = [[rng.gauss(0.0, JAC_N ** -0.5) for _ in range(JAC_N)] for _ in range(JAC_N)]
        return Workload(name, f"jacobian of x -> tanh(A @ x), {JAC_N} -> {JAC_N}, Python loops",
                        tanh_layer(A), [rng.uniform(-1.0, 1.0) for _ in range(JAC_N)], JAC_N)
    if name == "hessian":
        base = make("rosenbrock", size, seed)
        return Workload(name, f"hessian of rosenbrock n={size}", base.fn, base.x0, size)
    if name in ARRAY_COMPILED:
        base = make_array(name[3:], size, seed)
        return Workload(name, base.label, base.fn, base.x0, size, info=dict(base.info))
    raise ValueError(f"unknown compile workload {name!r}; expected one of {COMPILE_NAMES}")


def compile_catalogue(quick=False):
    sizes = COMPILE_SIZES["quick" if quick else "full"]
    return [make_compiled(name, sizes.get(name)) for name in COMPILE_NAMES]


def compile_phases(wl, engine):
    """``{(engine, phase): Phase}`` for compile workload ``wl``.

    With the core (``engine.name == "fastad"``) every body but the
    reference's: the function is compiled here, once (untimed; its trace
    rows go to ``wl.info["rows"]``). With the reference, its ``grad``
    where the item has one (the reference has no compile)."""
    fn = wl.fn
    if engine.name == "reference":
        if wl.name in ("cf-rosenbrock", "cf-dag"):
            return {("reference", "grad"): phase(wl.info["base"], engine, "grad")}
        if wl.name in ARRAY_COMPILED:
            params, X, Y = wl.x0, wl.info["X"], wl.info["Y"]
            ref_vg = engine.m.value_and_grad(lambda p: fn(p, X, Y, engine.m))
            return {("reference", "grad"): Phase(lambda: ref_vg(params))}
        return {}
    fad = engine.m
    if wl.name in ARRAY_COMPILED:
        params, X, Y = wl.x0, wl.info["X"], wl.info["Y"]
        cf = fad.compile(lambda p: fn(p, X, Y, fad), params)
        wl.info["rows"], wl.info["cf"] = len(cf.traces[0].op), cf
        vg = fad.value_and_grad(lambda p: fn(p, X, Y, fad))
        return {("numpy", "eval"): Phase(lambda: fn(params, X, Y, NUMPY.m)),
                ("cf", "eval"): Phase(lambda: cf(params)),
                ("cf", "value_and_grad"): Phase(lambda: cf.value_and_grad(params)),
                ("fastad", "grad"): Phase(lambda: vg(params))}
    cf = fad.compile(lambda x: fn(x, fad), list(wl.x0))
    wl.info["rows"] = len(cf.traces[0].op)
    x0 = list(wl.x0)
    bodies = {}
    if wl.name in ("cf-rosenbrock", "cf-dag"):
        v, xa = wl.info["v"], np.array(x0)
        cfa = fad.compile(lambda x: fn(x, fad), xa)  # the same trace, called with ndarrays
        bodies = {
            ("float", "eval"): phase(wl.info["base"], FLOAT, "eval"),
            ("cf", "eval"): Phase(lambda: cf(x0)),
            ("cf", "value_and_grad"): Phase(lambda: cf.value_and_grad(x0)),
            ("cf", "grad"): Phase(lambda: cf.grad(x0)),
            ("cf", "hvp"): Phase(lambda: cf.hvp(x0, v)),
            ("fastad", "grad"): phase(wl.info["base"], engine, "grad"),
            ("cf", "eval-ndarray"): Phase(lambda: cfa(xa)),
            ("cf", "value_and_grad-ndarray"): Phase(lambda: cfa.value_and_grad(xa)),
            ("cf", "grad-ndarray"): Phase(lambda: cfa.grad(xa)),
        }
    elif wl.name == "grad_batch":
        X = wl.info["X"]
        rows = X.tolist()

        def loop():
            for row in rows:
                cf.grad(row)

        bodies = {("cf", "loop"): Phase(loop)}
        for threads in (1, 2, None):
            bodies[("cf", f"threads={threads}")] = Phase(
                lambda threads=threads: cf.grad_batch(X, threads=threads))
    elif wl.name == "jacobian":
        jac = fad.jacobian(lambda x: fn(x, fad), mode="rev")
        bodies = {
            ("float", "eval"): Phase(lambda: fn(x0, math)),
            ("cf", "fwd"): Phase(lambda: cf.jacobian(x0, mode="fwd")),
            ("cf", "rev"): Phase(lambda: cf.jacobian(x0, mode="rev")),
            ("fastad", "rev"): Phase(lambda: jac(x0)),
        }
    elif wl.name == "hessian":
        basis = np.eye(len(x0)).tolist()

        def hvp_loop():  # the Hessian as n products, one call each
            for e in basis:
                cf.hvp(x0, e)

        hess = fad.hessian(lambda x: fn(x, fad))
        trace, xa, eye = cf.traces[0], np.array(x0), np.eye(len(x0))
        bodies = {
            ("cf", "grad"): Phase(lambda: cf.grad(x0)),
            ("cf", "hvp-loop"): Phase(hvp_loop),
            ("cf", "hvp-blocks"): Phase(lambda: trace.hvp(xa, eye)),  # the dense route
            ("cf", "hessian"): Phase(lambda: cf.hessian(x0)),
            ("fastad", "hessian"): Phase(lambda: hess(x0)),
        }
    wl.info["cf"] = cf
    return bodies


# --- the targets of the arrays and compile issues (reported, not asserted) --

RATIO_TARGETS = {
    # section: (workload, (engine, phase) numerator, (engine, phase)
    # denominator, "<=" or ">=", bound, text); the ratio is
    # median(numerator) / median(denominator).
    "arrays": (
        ("ops10", ("fastad", "grad"), ("numpy", "eval"), "<=", 4.0,
         "small arrays: record + backward per op <= 4x the plain NumPy op"),
        ("mlp784", ("fastad", "grad"), ("numpy", "eval"), "<=", 3.5,
         "MLP 784-256-10 gradient step <= 3.5x the NumPy forward"),
        ("elemloop", ("fastad", "grad"), ("fastad", "grad-list"), "<=", 2.0,
         "element loop on an Array <= 2x the same loop on a list of Vars (record + backward)"),
    ),
    "compile": (
        ("cf-rosenbrock", ("fastad", "grad"), ("cf", "grad"), ">=", 20.0,
         "cf.grad >= 20x faster than fad.grad (record + sweep)"),
        ("cf-rosenbrock", ("cf", "value_and_grad"), ("cf", "eval"), "<=", 3.0,
         "cf.value_and_grad <= 3x cf(x)"),
        ("cf-dag", ("cf", "value_and_grad"), ("cf", "eval"), "<=", 3.0,
         "cf.value_and_grad <= 3x cf(x)"),
        ("cf-rosenbrock", ("cf", "hvp"), ("cf", "grad"), "<=", 5.0, "cf.hvp <= 5x cf.grad"),
        ("cf-dag", ("cf", "hvp"), ("cf", "grad"), "<=", 5.0, "cf.hvp <= 5x cf.grad"),
        ("grad_batch", ("cf", "threads=1"), ("cf", "threads=2"), ">=", 1.7,
         "grad_batch: 2 threads >= 1.7x the single-thread throughput"),
    ),
}


def check_ratio_targets(section, medians):
    """Lines saying which of a section's targets are met; ``medians[(workload,
    engine, phase)]`` is seconds per call."""
    lines = []
    for w, num, den, cmp, bound, text in RATIO_TARGETS[section]:
        a, b = medians.get((w,) + num), medians.get((w,) + den)
        if not a or not b:
            continue
        ratio = a / b
        ok = ratio <= bound if cmp == "<=" else ratio >= bound
        lines.append(f"{'met ' if ok else 'MISS'}  {text}: {w} {ratio:,.2f}x")
    return lines

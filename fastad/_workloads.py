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
"""
import contextlib
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

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
    if name == "eval":
        if calls == 1:
            return Phase(lambda: fn(x0, m))

        def run_eval():
            for _ in range(calls):
                fn(x0, m)
        return Phase(run_eval, calls=calls)

    Var, tape = engine.Var, engine.tape
    if name == "record":
        # On the thread's implicit tape, as user code records: the graph is
        # dropped at once, so each call starts on an empty tape (the core
        # resets its tape in place, the reference makes a new one).
        def run_record():
            for _ in range(calls):
                fn([Var(v) for v in x0], m)
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
    """Bytes a tape allocates per row of capacity, ``(rows, rows + adjoints)``,
    or None where the engine's Tape has no ``nbytes``.

    Appends one-row ops and watches ``tape.nbytes``: it jumps when the arrays
    grow, and a jump happens when the rows fill the capacity. Between the
    first jump (capacity n1 full) and the second (capacity n2 full) the
    allocation grew by (n2 - n1) rows, so the bytes per row come out exact
    whatever the growth policy and whatever slack the tape started with.
    A sweep then adds the adjoints.
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
        before = t.nbytes
        y.backward(retain_graph=True)
        with_adj = per_row + (t.nbytes - before) / len(t)
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
                     f"per node, row layout: {layout[0]:.1f} B/row, {layout[1]:.1f} with adjoints")
    sized = [(t["rows"], w, t) for w, t in tapes.items()
             if t.get("rows") and t.get("bytes_per_row_swept") is not None]
    if sized:  # the biggest tape: the least distorted by capacity granularity
        rows, w, t = max(sized)
        per = t["bytes_per_row_swept"]
        lines.append(f"{'met ' if per <= bound else 'MISS'}  <= {bound:.0f} bytes of tape per node, "
                     f"tape.nbytes / len(tape) after the sweep on the biggest tape: {w} "
                     f"({rows:,} rows) {per:.1f} B/row")
    return lines

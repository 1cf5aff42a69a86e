"""fastad.reference: reverse-mode automatic differentiation in plain Python.

This module is the same algorithm as fastad's compiled core, written to be
read. Tests use it as an oracle and benchmarks as their baseline, so it
imports nothing from the compiled core: only the op table (``ops.py``) for
op codes, names and arities. Every value and derivative formula below is
written here, independently of the core.

The Wengert list (the "tape")
-----------------------------
Evaluating ``z = x1 * x2 + sin(x1)`` at (2, 3) as a sequence of elementary
operations gives one row per intermediate value::

    row  op     a   b   c    val
    0    input  -1  -1  0    2.0         w0 = x1
    1    input  -1  -1  0    3.0         w1 = x2
    2    mul     0   1  0    6.0         w2 = w0 * w1
    3    sin     0  -1  0    0.909...    w3 = sin(w0)
    4    add     2   3  0    6.909...    w4 = w2 + w3

``a`` and ``b`` are the rows an op reads (-1: none, or "the constant c":
``x + 2`` is ``add(a=x, b=-1, c=2)``). Rows are appended in creation order,
and an op's arguments always exist before it, so that order is already a
topological order of the computation graph.

The reverse sweep
-----------------
``z.backward()`` seeds the adjoint ``adj[z] = dz/dz = 1`` and walks the rows
backwards. For each row ``i`` the output reaches, and each argument ``j`` of
it, the chain rule adds ``adj[i] * d(w_i)/d(w_j)`` into ``adj[j]``; adjoints
add up where a value is used more than once. Because every row is visited
after all the rows that read it, ``adj[i]`` is complete when we reach it,
and one backward loop (no recursion) suffices. Finally the adjoints of the
INPUT rows are the gradient, and are added into the leaves' ``.grad``.

Leaves (``Var(2.0)``) live on no tape. The first op that uses a leaf on a
tape appends an INPUT row for it; a training loop can therefore rebuild a
fresh tape every step from the same leaves without growing memory.
"""
import math
import numbers
import threading
import weakref

import numpy as np

from . import ops

__all__ = [
    "FastADError", "Tape", "Var", "grad", "value_and_grad",
    "DERIVATIVES", "FORWARD",
] + list(ops.UNARY) + list(ops.BINARY_FUNCTIONS) + ["where", "clip"]

INF = math.inf
NAN = math.nan
_builtin_abs = abs  # this module defines its own ``abs`` below


class FastADError(Exception):
    """Misuse of a graph: a released tape, or tapes mixed in one op."""


# ---------------------------------------------------------------------------
# Scalar math with IEEE semantics: domain errors give nan, poles and
# overflows give +-inf. The ``math`` module raises instead, so we wrap it.
# ---------------------------------------------------------------------------

def _ieee(fn, overflow=lambda x: INF):
    """Wrap ``math.fn``: ValueError -> nan, OverflowError -> overflow(x)."""
    def safe(x):
        try:
            return fn(x)
        except ValueError:
            return NAN
        except OverflowError:
            return overflow(x)
    return safe


def _log_like(fn, pole):
    """A logarithm: -inf at its pole, nan below it."""
    safe = _ieee(fn)
    return lambda x: -INF if x == pole else safe(x)


def _div(x, y):
    """x / y, with IEEE results for y == 0 (Python raises)."""
    try:
        return x / y
    except ZeroDivisionError:
        if x == 0 or x != x:
            return NAN
        return math.copysign(INF, x) * math.copysign(1.0, y)


def _is_odd_integer(y):
    return float(y).is_integer() and _builtin_abs(y) % 2 == 1


def _pow(x, y):
    """x ** y as C's pow(): never complex, never an exception."""
    try:
        return math.pow(x, y)
    except OverflowError:  # |x ** y| too large: negative for x < 0 and odd y
        return -INF if x < 0 and _is_odd_integer(y) else INF
    except ValueError:
        if x == 0:  # 0 to a negative power is a pole, signed like the zero
            negative = math.copysign(1.0, x) < 0 and _is_odd_integer(y)
            return -INF if negative else INF
        return NAN  # negative base, non-integer exponent


def _sign(x):
    if x != x:
        return NAN
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _sigmoid(x):
    # Stable form: exp() of a non-positive number never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # nan also ends up here and stays nan
    return e / (1.0 + e)


def _cbrt(x):
    if hasattr(math, "cbrt"):  # Python >= 3.11
        return math.cbrt(x)
    return math.copysign(_builtin_abs(x) ** (1.0 / 3.0), x)


def _maximum(x, y):  # like numpy: a nan in either argument gives nan
    if x != x or y != y:
        return NAN
    return x if x >= y else y


def _minimum(x, y):
    if x != x or y != y:
        return NAN
    return x if x <= y else y


_sqrt = _ieee(math.sqrt)
_exp = _ieee(math.exp)
_sin = _ieee(math.sin)
_cos = _ieee(math.cos)
_sinh = _ieee(math.sinh, lambda x: math.copysign(INF, x))
_cosh = _ieee(math.cosh)
_log = _log_like(math.log, 0.0)

# The forward value of every op, keyed by op name: f(x) or f(x, y).
FORWARD = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": _div,
    "power": _pow,
    "neg": lambda x: -x,
    "square": lambda x: x * x,
    "sqrt": _sqrt,
    "cbrt": _cbrt,
    "exp": _exp,
    "expm1": _ieee(math.expm1),
    "log": _log,
    "log1p": _log_like(math.log1p, -1.0),
    "log2": _log_like(math.log2, 0.0),
    "log10": _log_like(math.log10, 0.0),
    "sin": _sin,
    "cos": _cos,
    "tan": _ieee(math.tan),
    "arcsin": _ieee(math.asin),
    "arccos": _ieee(math.acos),
    "arctan": math.atan,
    "sinh": _sinh,
    "cosh": _cosh,
    "tanh": math.tanh,
    "erf": math.erf,
    "sigmoid": _sigmoid,
    "relu": lambda x: 0.0 if x <= 0 else x,  # nan <= 0 is False: nan stays
    "abs": math.fabs,
    "sign": _sign,
    "maximum": _maximum,
    "minimum": _minimum,
    "arctan2": math.atan2,
    "hypot": math.hypot,
    # Guards: the outcome of a comparison, recorded as 1.0 or 0.0.
    "lt": lambda x, y: float(x < y),
    "le": lambda x, y: float(x <= y),
    "gt": lambda x, y: float(x > y),
    "ge": lambda x, y: float(x >= y),
    "eq": lambda x, y: float(x == y),
    "ne": lambda x, y: float(x != y),
}

_SQRT_PI = math.sqrt(math.pi)
_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


def _tie(x, y, first_wins):
    """Partials of maximum/minimum: all to the winner, 0.5 / 0.5 on a tie."""
    if x == y:
        return 0.5, 0.5
    return (1.0, 0.0) if first_wins else (0.0, 1.0)


# The partial derivatives of every op, keyed by op name, autograd style.
# Each receives the argument values x, y (y is None for unary ops) and the
# op's output f, and returns d f/dx for a unary op, (d f/dx, d f/dy) for a
# binary one. Guards and inputs have none: the sweep skips them.
DERIVATIVES = {
    "add": lambda x, y, f: (1.0, 1.0),
    "sub": lambda x, y, f: (1.0, -1.0),
    "mul": lambda x, y, f: (y, x),
    "div": lambda x, y, f: (_div(1.0, y), _div(-f, y)),
    "power": lambda x, y, f: (
        0.0 if y == 0 else y * _pow(x, y - 1.0),  # d/dx = y x^(y-1)
        0.0 if x == 0 else f * _log(x),           # d/dy = f log x
    ),
    "neg": lambda x, y, f: -1.0,
    "square": lambda x, y, f: 2.0 * x,
    "sqrt": lambda x, y, f: INF if f == 0 else 0.5 / f,
    "cbrt": lambda x, y, f: _div(1.0, 3.0 * f * f),
    "exp": lambda x, y, f: f,
    "expm1": lambda x, y, f: f + 1.0,
    "log": lambda x, y, f: _div(1.0, x),
    "log1p": lambda x, y, f: _div(1.0, 1.0 + x),
    "log2": lambda x, y, f: _div(1.0, x * _LN2),
    "log10": lambda x, y, f: _div(1.0, x * _LN10),
    "sin": lambda x, y, f: _cos(x),
    "cos": lambda x, y, f: -_sin(x),
    "tan": lambda x, y, f: 1.0 + f * f,
    "arcsin": lambda x, y, f: _div(1.0, _sqrt(1.0 - x * x)),
    "arccos": lambda x, y, f: _div(-1.0, _sqrt(1.0 - x * x)),
    "arctan": lambda x, y, f: 1.0 / (1.0 + x * x),
    "sinh": lambda x, y, f: _cosh(x),
    "cosh": lambda x, y, f: _sinh(x),
    "tanh": lambda x, y, f: 1.0 - f * f,
    "erf": lambda x, y, f: 2.0 / _SQRT_PI * _exp(-x * x),
    "sigmoid": lambda x, y, f: f * (1.0 - f),
    "relu": lambda x, y, f: 1.0 if x > 0 else 0.0,  # relu'(0) = 0
    "abs": lambda x, y, f: _sign(x),                # abs'(0) = 0
    "sign": lambda x, y, f: 0.0,
    "maximum": lambda x, y, f: _tie(x, y, x > y),
    "minimum": lambda x, y, f: _tie(x, y, x < y),
    # x, y are arctan2's first and second arguments (numpy's y and x)
    "arctan2": lambda x, y, f: (_div(y, x * x + y * y), _div(-x, x * x + y * y)),
    "hypot": lambda x, y, f: (0.0, 0.0) if f == 0 else (x / f, y / f),
}

# The same tables indexed by op code, for the sweep.
_NAME = [spec.name for spec in ops.OPS]
_ARITY = [spec.arity for spec in ops.OPS]
_FORWARD = [FORWARD.get(spec.name) for spec in ops.OPS]
_PARTIALS = [DERIVATIVES.get(spec.name) for spec in ops.OPS]
_INPUT = ops.BY_NAME["input"].code


# ---------------------------------------------------------------------------
# The tape
# ---------------------------------------------------------------------------

_RELEASED = ("this graph was already swept by backward() and released; "
             "pass retain_graph=True to the first backward() to sweep it "
             "again or to keep building on it")


class Tape:
    """A Wengert list: parallel lists, one entry per row.

    ``op[i]`` is the op code (see ops.OPS), ``a[i]``/``b[i]`` the argument
    rows (-1: none, or the constant ``c[i]``), ``val[i]`` the value, and
    ``adj`` the adjoints from the last reverse sweep (None before).
    ``leaves`` lists ``(row, leaf)`` for every INPUT row.
    """

    def __init__(self):
        self.op, self.a, self.b, self.c, self.val = [], [], [], [], []
        self.adj = None
        self.leaves = []        # (row, leaf Var) of every INPUT row
        self._row_of_leaf = {}  # id(leaf) -> its INPUT row on this tape
        self.consumed = False   # set by backward() without retain_graph
        self._outer = []        # tapes that were current before `with self`

    def __len__(self):
        return len(self.op)

    def append(self, code, a, b, c, val):
        """Append a row and return its index."""
        self.op.append(code)
        self.a.append(a)
        self.b.append(b)
        self.c.append(c)
        self.val.append(val)
        return len(self.op) - 1

    def input_row(self, leaf):
        """The INPUT row of ``leaf`` on this tape, appended on first use."""
        row = self._row_of_leaf.get(id(leaf))
        if row is None:
            row = self.append(_INPUT, -1, -1, 0.0, leaf._value)
            self._row_of_leaf[id(leaf)] = row
            self.leaves.append((row, leaf))  # also keeps id(leaf) valid
        return row

    def sweep(self, out, seed=1.0):
        """The reverse sweep from row ``out``; returns the adjoint list.

        Walking backwards, every row's readers come after it, so its
        adjoint is complete when the loop reaches it. A row whose adjoint
        is exactly zero passes nothing on: that skips the rows the output
        does not reach, and makes 0 * inf count as 0 (CppAD's "absolute
        zero" product), so an infinite partial the output does not depend
        on cannot turn a gradient into nan. The compiled core does the same.
        """
        op, a, b, c, val = self.op, self.a, self.b, self.c, self.val
        adj = [0.0] * len(op)
        adj[out] = seed
        for i in range(out, -1, -1):
            partials = _PARTIALS[op[i]]
            if adj[i] == 0.0 or partials is None:  # unreached, input, guard
                continue
            ai, bi = a[i], b[i]
            x = val[ai] if ai >= 0 else c[i]
            if _ARITY[op[i]] == 1:
                adj[ai] += adj[i] * partials(x, None, val[i])
                continue
            y = val[bi] if bi >= 0 else c[i]
            dx, dy = partials(x, y, val[i])
            if ai >= 0:
                adj[ai] += adj[i] * dx
            if bi >= 0:
                adj[bi] += adj[i] * dy
        self.adj = adj
        return adj

    def check_usable(self):
        if self.consumed:
            raise FastADError(_RELEASED)

    # -- introspection (INTERNAL-CONTRACT.md) --------------------------------

    def rows(self):
        """The rows as numpy arrays (copies)."""
        n = len(self.op)
        adj = None
        if self.adj is not None:  # rows added after the sweep have adjoint 0
            adj = np.zeros(n, dtype=np.float64)
            adj[:len(self.adj)] = self.adj
        return {
            "op": np.array(self.op, dtype=np.uint8),
            "a": np.array(self.a, dtype=np.int32),
            "b": np.array(self.b, dtype=np.int32),
            "c": np.array(self.c, dtype=np.float64),
            "val": np.array(self.val, dtype=np.float64),
            "adj": adj,
        }

    def inputs(self):
        """``(row, leaf)`` for every INPUT row, in row order."""
        return list(self.leaves)

    def explain(self, fmt="text"):
        from .explain import explain_tape
        return explain_tape(self, fmt)

    # -- `with Tape() as t:` makes t the thread's current tape -------------

    def __enter__(self):
        stack = _current_stack()
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _current_stack().pop()
        return False

    def __repr__(self):
        state = " consumed" if self.consumed else ""
        return f"<reference.Tape with {len(self)} rows{state}>"


_local = threading.local()


def _current_stack():
    """The thread's stack of tapes entered with `with`."""
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _tape_for_leaves():
    """The tape an op whose arguments are all leaves records on.

    Inside ``with Tape()`` it is that tape. Otherwise it is the thread's
    implicit tape, held by a weak reference only, so that it goes away
    with the last Var on it. A consumed tape is replaced by a fresh one.
    """
    stack = _current_stack()
    if stack:
        if stack[-1].consumed:
            stack[-1] = Tape()
        return stack[-1]
    ref = getattr(_local, "implicit", None)
    tape = ref() if ref is not None else None
    if tape is None or tape.consumed:
        tape = Tape()
        _local.implicit = weakref.ref(tape)
    return tape


# ---------------------------------------------------------------------------
# Var: a handle on a row (or a leaf holding its own value and grad)
# ---------------------------------------------------------------------------

class Var:
    """A scalar: a leaf ``Var(2.0)``, or a handle on a row of a tape."""

    __slots__ = ("_tape", "_index", "_value", "_grad", "__weakref__")

    def __init__(self, value):
        if not (isinstance(value, (Var, numbers.Real))):
            raise TypeError(f"Var needs a real number, got {type(value).__name__}")
        self._tape = None  # a leaf is on no tape
        self._index = None
        self._value = float(value)
        self._grad = 0.0

    @classmethod
    def _node(cls, tape, index):
        node = cls.__new__(cls)
        node._tape, node._index = tape, index
        node._value = node._grad = None
        return node

    @property
    def is_leaf(self):
        return self._tape is None

    @property
    def tape(self):
        return self._tape

    @property
    def index(self):
        return self._index

    @property
    def value(self):
        if self._tape is None:
            return self._value
        return self._tape.val[self._index]

    @value.setter
    def value(self, v):
        if self._tape is not None:
            raise FastADError("only a leaf Var's value can be set")
        self._value = float(v)

    @property
    def grad(self):
        if self._tape is None:
            return self._grad
        adj = self._tape.adj
        return adj[self._index] if adj is not None and self._index < len(adj) else 0.0

    @grad.setter
    def grad(self, g):
        if self._tape is not None:
            raise FastADError("only a leaf Var's grad can be set")
        self._grad = float(g)

    def backward(self, seed=1.0, retain_graph=False):
        """Reverse sweep from this node; adds into the leaves' ``.grad``."""
        seed = float(seed)
        if self._tape is None:  # d leaf / d leaf = 1
            self._grad += seed
            return
        tape = self._tape
        tape.check_usable()
        adj = tape.sweep(self._index, seed)
        for row, leaf in tape.leaves:
            if row <= self._index:
                leaf._grad += adj[row]
        if not retain_graph:
            tape.consumed = True

    # -- operators ------------------------------------------------------------

    def __add__(self, other): return _operator("add", self, other)
    def __radd__(self, other): return _operator("add", other, self)
    def __sub__(self, other): return _operator("sub", self, other)
    def __rsub__(self, other): return _operator("sub", other, self)
    def __mul__(self, other): return _operator("mul", self, other)
    def __rmul__(self, other): return _operator("mul", other, self)
    def __truediv__(self, other): return _operator("div", self, other)
    def __rtruediv__(self, other): return _operator("div", other, self)
    def __pow__(self, other): return _operator("power", self, other)
    def __rpow__(self, other): return _operator("power", other, self)
    def __neg__(self): return _apply("neg", self)
    def __pos__(self): return self
    def __abs__(self): return _apply("abs", self)

    # Comparisons compare values and return a bool, recording a guard row.
    def __lt__(self, other): return _operator("lt", self, other)
    def __le__(self, other): return _operator("le", self, other)
    def __gt__(self, other): return _operator("gt", self, other)
    def __ge__(self, other): return _operator("ge", self, other)
    def __eq__(self, other): return _operator("eq", self, other)
    def __ne__(self, other): return _operator("ne", self, other)
    __hash__ = object.__hash__  # by identity: Vars are graph nodes

    def __bool__(self):  # truthy = value != 0, recorded as a guard
        return self != 0.0

    def __float__(self):
        return float(self.value)

    def __format__(self, spec):  # f"{loss:.3f}"
        return format(self.value, spec)

    def __repr__(self):
        if self._tape is None:
            return f"Var({self._value!r}, grad={self._grad!r})"
        name = _NAME[self._tape.op[self._index]]
        return f"Var({self.value!r}, grad={self.grad!r}, op={name}, row={self._index})"


def _tape_of(args):
    """The tape of the non-leaf arguments, or the current one if none."""
    tape = None
    for v in args:
        if isinstance(v, Var) and v._tape is not None:
            v._tape.check_usable()
            if tape is None:
                tape = v._tape
            elif v._tape is not tape:
                raise FastADError(
                    "cannot combine Vars recorded on two different tapes in one "
                    "operation; build the whole computation on one tape (or use "
                    "float(v) / Var(v.value) to start afresh from a value)")
    return tape if tape is not None else _tape_for_leaves()


def _slot(tape, x):
    """(row, value) of an argument; a constant is (-1, its value)."""
    if x._tape is None:
        return tape.input_row(x), x._value
    return x._index, tape.val[x._index]


def _apply(name, *args):
    """Evaluate op ``name`` on numbers or Vars; record a row if any is a Var.

    A binary op with one constant puts it in ``c`` and -1 in its slot.
    """
    code = ops.BY_NAME[name].code
    for v in args:
        if not isinstance(v, (Var, numbers.Real)):
            raise TypeError(f"{name}() takes numbers or Vars, got {type(v).__name__}")
    if not any(isinstance(v, Var) for v in args):  # plain numbers: no tape
        return _FORWARD[code](*(float(v) for v in args))
    tape = _tape_of(args)
    rows, values, c = [-1, -1], [], 0.0
    for k, v in enumerate(args):
        if isinstance(v, Var):
            rows[k], value = _slot(tape, v)
        else:
            c = value = float(v)
        values.append(value)
    val = _FORWARD[code](*values)
    return Var._node(tape, tape.append(code, rows[0], rows[1], c, val))


def _operator(name, x, y):
    """``x <op> y`` from a Var method: NotImplemented for foreign types, so
    Python can try the other operand."""
    if not isinstance(x, (Var, numbers.Real)) or not isinstance(y, (Var, numbers.Real)):
        return NotImplemented
    if name == "power":
        return power(x, y)
    out = _apply(name, x, y)
    if name in ops.GUARDS:  # a comparison returns a bool
        return out.value == 1.0
    return out


# ---------------------------------------------------------------------------
# Math functions: plain floats in, plain float out; a Var in, a Var out
# ---------------------------------------------------------------------------

def sin(x): return _apply("sin", x)
def cos(x): return _apply("cos", x)
def tan(x): return _apply("tan", x)
def arcsin(x): return _apply("arcsin", x)
def arccos(x): return _apply("arccos", x)
def arctan(x): return _apply("arctan", x)
def sinh(x): return _apply("sinh", x)
def cosh(x): return _apply("cosh", x)
def tanh(x): return _apply("tanh", x)
def exp(x): return _apply("exp", x)
def expm1(x): return _apply("expm1", x)
def log(x): return _apply("log", x)
def log1p(x): return _apply("log1p", x)
def log2(x): return _apply("log2", x)
def log10(x): return _apply("log10", x)
def sqrt(x): return _apply("sqrt", x)
def cbrt(x): return _apply("cbrt", x)
def square(x): return _apply("square", x)
def abs(x): return _apply("abs", x)  # noqa: A001 (fad.abs, as in numpy)
def sign(x): return _apply("sign", x)
def sigmoid(x): return _apply("sigmoid", x)
def relu(x): return _apply("relu", x)
def erf(x): return _apply("erf", x)
def maximum(x, y): return _apply("maximum", x, y)
def minimum(x, y): return _apply("minimum", x, y)
def arctan2(y, x): return _apply("arctan2", y, x)
def hypot(x, y): return _apply("hypot", x, y)


def power(x, y):
    """x ** y. A Var squared records ``square``; otherwise ``power``."""
    if isinstance(x, Var) and isinstance(y, numbers.Real) and y == 2:
        return _apply("square", x)
    return _apply("power", x, y)


def where(cond, x, y):
    """x if cond else y. A Var condition is true when its value != 0,
    which is recorded as a guard."""
    if isinstance(cond, Var):
        cond = cond != 0.0  # records the guard
    return x if cond else y


def clip(x, lo, hi):
    """minimum(maximum(x, lo), hi)."""
    return minimum(maximum(x, lo), hi)


# ---------------------------------------------------------------------------
# Functional transforms
# ---------------------------------------------------------------------------

def _tree_map(fn, tree):
    """Apply fn to every leaf of nested lists / tuples / dicts."""
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_tree_map(fn, v) for v in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return fn(tree)


def _make_leaf(x):
    if isinstance(x, Var):
        raise TypeError("the reference grad() takes floats, not Vars "
                        "(it does not nest grad)")
    if not isinstance(x, numbers.Real):
        raise TypeError(f"grad() arguments must be floats or nested "
                        f"lists / tuples / dicts of floats, got {type(x).__name__}")
    return Var(x)


def value_and_grad(f, argnums=0):
    """``value_and_grad(f)(*args)`` -> (f(*args), df/dargs[argnums])."""
    def wrapped(*args, **kwargs):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        for n in nums:
            if not -len(args) <= n < len(args):
                raise ValueError(f"argnums {n} is out of range for {len(args)} arguments")
        args = list(args)
        leaves = {n: _tree_map(_make_leaf, args[n]) for n in nums}
        for n in nums:
            args[n] = leaves[n]
        with Tape():
            out = f(*args, **kwargs)
        out = _scalar_output(out)
        if isinstance(out, Var) and out._tape is not None:
            adj = out._tape.sweep(out._index)  # no side effect on other leaves
            row_of = out._tape._row_of_leaf

            def gradient(leaf):  # an unused argument has no INPUT row: 0
                row = row_of.get(id(leaf))
                return adj[row] if row is not None else 0.0
        else:  # a leaf or a constant: 1 for that very leaf, 0 otherwise
            def gradient(leaf):
                return 1.0 if leaf is out else 0.0
        grads = tuple(_tree_map(gradient, leaves[n]) for n in nums)
        return float(out), grads[0] if isinstance(argnums, int) else grads
    return wrapped


def grad(f, argnums=0):
    """``grad(f)(*args)`` -> df/dargs[argnums], shaped like the arguments."""
    vg = value_and_grad(f, argnums)

    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]
    return wrapped


def _scalar_output(out):
    if isinstance(out, (Var, numbers.Real)):
        return out
    if isinstance(out, np.ndarray) and out.size == 1:
        return _scalar_output(out.reshape(-1)[0])
    if isinstance(out, (list, tuple, np.ndarray)):
        raise ValueError("grad needs a function with a scalar output; for a "
                         "vector output use jacobian (or vjp)")
    raise TypeError(f"grad needs a function returning a scalar, got {type(out).__name__}")

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

Arrays
------
An ``Array`` is the same idea one level up: a row whose value is a whole
float64 ndarray, and whose adjoint, in the sweep, is an ndarray of the same
shape. ``w = x @ W`` is one ``matmul`` row; ``np.sin(a)`` is one ``map`` row
(the scalar op's code in ``c``: the elementwise op *is* the scalar op, with
its derivative taken from the same table, element by element); ``a.sum()``
is a ``sum`` row whose value is a plain float, and ``a[i]`` an ``elem`` row
(flat index in ``c``), so scalar and array rows mix freely on one tape::

    row  op           a   b   c    val
    0    array_input  -1  -1  0    [1, 2, 3]     w0 = a
    1    input        -1  -1  0    2.0           w1 = x
    2    map           0  -1  16   [sin 1, ...]  w2 = sin(w0)   (16: sin)
    3    sum           2  -1  0    1.891...      w3 = sum(w2)
    4    mul           3   1  0    3.783...      w4 = w3 * w1

The sweep is the same single backward loop: each array row hands its
adjoint to its arguments by its own rule, a *vector*-Jacobian product
(``dX = G @ Y.T`` for a matmul), written out in the section "The
derivatives of the array ops" below. Where NumPy broadcast an argument up
to the result's shape, the rule sums the adjoint back down to the
argument's shape (``_unbroadcast``). Parameters that are not rows (an axis,
an index, a constant operand) are kept in ``tape.aux[row]``.
"""
import math
import numbers
import threading
import weakref

import numpy as np

from . import ops

__all__ = [
    "FastADError", "Tape", "Var", "Array", "grad", "value_and_grad",
    "DERIVATIVES", "FORWARD",
    "stack", "concatenate", "logsumexp", "softmax", "log_softmax",
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

# The same tables indexed by op code, for the sweep. Array ops have no
# entry here: their rules are _ARRAY_RULES, further down.
_NAME = [spec.name for spec in ops.OPS]
_ARITY = [spec.arity for spec in ops.OPS]
_FORWARD = [FORWARD.get(spec.name) for spec in ops.OPS]
_PARTIALS = [DERIVATIVES.get(spec.name) if spec.kind != "array" else None
             for spec in ops.OPS]
_CODE = {spec.name: spec.code for spec in ops.OPS}
_INPUT = _CODE["input"]
_ARRAY_INPUT = _CODE["array_input"]


# ---------------------------------------------------------------------------
# The tape
# ---------------------------------------------------------------------------

_RELEASED = ("this graph was already swept by backward() and released; "
             "pass retain_graph=True to the first backward() to sweep it "
             "again or to keep building on it")


class Tape:
    """A Wengert list: parallel lists, one entry per row.

    ``op[i]`` is the op code (see ops.OPS), ``a[i]``/``b[i]`` the argument
    rows (-1: none, or the constant ``c[i]``), ``val[i]`` the value (a float,
    or an ndarray for an array row), ``aux[i]`` an array row's parameters
    (axis, index, constant operands: see each op's recorder), and ``adj``
    the adjoints from the last reverse sweep (None before). ``leaves`` lists
    ``(row, leaf)`` for every INPUT and ARRAY_INPUT row.
    """

    def __init__(self):
        self.op, self.a, self.b, self.c, self.val = [], [], [], [], []
        self.aux = {}           # row -> parameters of an array row
        self.has_arrays = False  # any array row (rows() then converts values)
        self.adj = None
        self.swept_from = None  # the row the last sweep started from (explain names it)
        self.leaves = []        # (row, leaf Var or Array) of every input row
        self._row_of_leaf = {}  # id(leaf) -> its input row on this tape
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
        """The input row of ``leaf`` (a Var or an Array) on this tape,
        appended on first use."""
        row = self._row_of_leaf.get(id(leaf))
        if row is not None and self.val[row] is not leaf._value:
            row = None  # its value was set since: a new input row, as the core does
        if row is None:
            if isinstance(leaf, Array):
                self.has_arrays = True
                row = self.append(_ARRAY_INPUT, -1, -1, 0.0, leaf._value)
            else:
                row = self.append(_INPUT, -1, -1, 0.0, leaf._value)
            self._row_of_leaf[id(leaf)] = row
            self.leaves.append((row, leaf))  # also keeps id(leaf) valid
        return row

    def sweep(self, out, seed=1.0):
        """The reverse sweep from row ``out``; returns the adjoint list.

        Walking backwards, every row's readers come after it, so its
        adjoint is complete when the loop reaches it. A row whose adjoint
        is exactly zero (all zeros, for an array row) passes nothing on:
        that skips the rows the output does not reach, and makes 0 * inf
        count as 0 (CppAD's "absolute zero" product), so an infinite
        partial the output does not depend on cannot turn a gradient into
        nan. The compiled core does the same.

        The adjoint of a scalar row is a float; that of an array row is an
        ndarray of the row's shape (0.0 until something reaches it). Scalar
        rows apply their partials right here; array rows apply their rule
        from _ARRAY_RULES, which adds into their arguments' adjoints.
        """
        op, a, b, c, val = self.op, self.a, self.b, self.c, self.val
        adj = [0.0] * len(op)
        if isinstance(val[out], np.ndarray):
            adj[out] = np.array(np.broadcast_to(seed, val[out].shape), dtype=np.float64)
        else:
            adj[out] = float(seed)
        for i in range(out, -1, -1):
            partials = _PARTIALS[op[i]]
            if partials is None:  # an input, a guard, or an array row
                rule = _ARRAY_RULES[op[i]]
                if rule is not None and _reached(adj[i]):
                    rule(self, i, adj[i], adj)
                continue
            if adj[i] == 0.0:  # unreached
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
        self.swept_from = out
        return adj

    def check_usable(self):
        if self.consumed:
            raise FastADError(_RELEASED)

    # -- introspection: the same rows(), shapes() and inputs() as the core's --

    def rows(self):
        """The rows as numpy arrays (copies). An array row's value and
        adjoint do not fit a float column: they read nan there (the arrays
        themselves are ``tape.val[i]`` and ``tape.adj[i]``; ``shapes()``
        says which rows hold arrays)."""
        n = len(self.op)
        val, adj = self.val, self.adj
        if self.has_arrays:
            scalar = [not isinstance(v, np.ndarray) for v in self.val]
            val = [v if s else NAN for v, s in zip(self.val, scalar)]
            if adj is not None:
                adj = [float(g) if s else NAN for g, s in zip(adj, scalar)]
        out_adj = None
        if adj is not None:  # rows added after the sweep have adjoint 0
            out_adj = np.zeros(n, dtype=np.float64)
            out_adj[:len(adj)] = adj
        return {
            "op": np.array(self.op, dtype=np.uint8),
            "a": np.array(self.a, dtype=np.int32),
            "b": np.array(self.b, dtype=np.int32),
            "c": np.array(self.c, dtype=np.float64),
            "val": np.array(val, dtype=np.float64),
            "adj": out_adj,
        }

    def shapes(self):
        """Per row: None where its value is a number, the shape of its array
        value where it is one."""
        return [v.shape if isinstance(v, np.ndarray) else None for v in self.val]

    def inputs(self):
        """``(row, leaf)`` for every input row, in row order."""
        return list(self.leaves)

    def watch(self, *leaves):
        """Give these leaves (Vars or Arrays) their input rows now, in this
        order, instead of at first use: traces then list inputs first."""
        for leaf in leaves:
            if not isinstance(leaf, (Var, Array)) or leaf._tape is not None:
                raise TypeError(f"watch() takes leaf Vars and Arrays, got {leaf!r}")
            self.check_usable()
            self.input_row(leaf)

    def explain(self, fmt="text", output=None):
        """The evaluation trace; the gradient of `output`, by default of the
        row the last sweep started from (else the last row)."""
        from .explain import explain_tape
        return explain_tape(self, fmt, output=self.swept_from if output is None else output)

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


def _reached(g):
    """Whether an adjoint is not exactly zero (any element, for an array)."""
    if isinstance(g, np.ndarray):
        return bool(g.any())
    return g != 0.0


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

class _Handle:
    """What a Var and an Array share: a leaf (no tape) owning its value and
    gradient, or a handle to row `index` of `tape`."""
    __slots__ = ()

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

    def _node_value(self):
        if self._tape is None:
            return self._value
        return self._tape.val[self._index]


class Var(_Handle):
    """A scalar: a leaf ``Var(2.0)``, or a handle on a row of a tape."""

    __slots__ = ("_tape", "_index", "_value", "_grad", "__weakref__")

    def __init__(self, value):
        if not (isinstance(value, (Var, numbers.Real))):
            raise TypeError(f"Var needs a real number, got {type(value).__name__}")
        self._tape = None  # a leaf is on no tape
        self._index = None
        self._value = float(value)
        self._grad = 0.0

    @property
    def value(self):
        return self._node_value()

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
        _backward(self._tape, self._index, seed, retain_graph)

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

    def __int__(self):
        return int(self.value)

    def __round__(self, ndigits=None):
        return round(self.value, ndigits)

    def __trunc__(self):
        return int(self.value)

    def __format__(self, spec):  # f"{loss:.3f}"
        return format(self.value, spec)

    def __repr__(self):
        if self._tape is None:
            return f"Var({self._value!r}, grad={self._grad!r})"
        name = _NAME[self._tape.op[self._index]]
        return f"Var({self.value!r}, grad={self.grad!r}, op={name}, row={self._index})"

    # -- NumPy: np.sin(v), np.float64(2) * v, v * ndarray ---------------------

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _numpy_ufunc(ufunc, method, inputs, kwargs)

    # NumPy applies a ufunc to an object array (of Vars) by calling each
    # element's method of that name: np.exp(np.array([v1, v2], dtype=object)).
    def sqrt(self): return _apply("sqrt", self)
    def cbrt(self): return _apply("cbrt", self)
    def square(self): return _apply("square", self)
    def exp(self): return _apply("exp", self)
    def expm1(self): return _apply("expm1", self)
    def log(self): return _apply("log", self)
    def log1p(self): return _apply("log1p", self)
    def log2(self): return _apply("log2", self)
    def log10(self): return _apply("log10", self)
    def sin(self): return _apply("sin", self)
    def cos(self): return _apply("cos", self)
    def tan(self): return _apply("tan", self)
    def arcsin(self): return _apply("arcsin", self)
    def arccos(self): return _apply("arccos", self)
    def arctan(self): return _apply("arctan", self)
    def sinh(self): return _apply("sinh", self)
    def cosh(self): return _apply("cosh", self)
    def tanh(self): return _apply("tanh", self)
    def sign(self): return _apply("sign", self)

    # A Var stands for a one-number array too (a 0-d Array's results, a 1-D
    # a @ b): NumPy's reductions of it are itself.
    def _reduced(self, name, axis=None, out=None, **kwargs):
        _unsupported(name, out=out, **{k: v for k, v in kwargs.items() if k != "keepdims"})
        if axis is not None and axis != ():
            raise ValueError(f"{name} of a scalar Var takes no axis, got axis={axis!r}")
        return self

    def sum(self, axis=None, dtype=None, out=None, **kwargs):
        return self._reduced("sum", axis, out, dtype=dtype, **kwargs)

    def mean(self, axis=None, dtype=None, out=None, **kwargs):
        return self._reduced("mean", axis, out, dtype=dtype, **kwargs)

    def prod(self, axis=None, dtype=None, out=None, **kwargs):
        return self._reduced("prod", axis, out, dtype=dtype, **kwargs)

    def max(self, axis=None, out=None, **kwargs):
        return self._reduced("max", axis, out, **kwargs)

    def min(self, axis=None, out=None, **kwargs):
        return self._reduced("min", axis, out, **kwargs)


def _backward(tape, out, seed, retain_graph):
    """Sweep ``tape`` from row ``out`` and add the input rows' adjoints
    into their leaves' ``.grad`` (backward() of a Var or an Array)."""
    tape.check_usable()
    adj = tape.sweep(out, seed)
    for row, leaf in tape.leaves:
        if row <= out and _reached(adj[row]):
            if isinstance(leaf, Array):
                leaf._grad = leaf._grad + adj[row]  # a new array: no aliasing
            else:
                leaf._grad += adj[row]
    if not retain_graph:
        tape.consumed = True


def _tape_of(args):
    """The tape of the non-leaf arguments, or the current one if none."""
    tape = None
    for v in args:
        if isinstance(v, (Var, Array)) and v._tape is not None:
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

    A binary op with one constant puts it in ``c`` and -1 in its slot. With
    an Array, an ndarray or a list among the arguments the op is
    elementwise: a ``map`` row (see Arrays below).
    """
    code = ops.BY_NAME[name].code
    for v in args:
        if not isinstance(v, (Var, numbers.Real)):
            return _map(name, *args)  # raises TypeError for a non-number
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
    Python can try the other operand. A Var with a float ndarray is an
    elementwise op: an Array (a comparison: an ndarray of bools)."""
    if not isinstance(x, (Var, numbers.Real)) or not isinstance(y, (Var, numbers.Real)):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if name in ops.GUARDS:
                return _NUMPY_UFUNC[name](_operand(x)[1], _operand(y)[1])
            return _map(name, x, y)
        return NotImplemented
    if name == "power":
        return power(x, y)
    if name in ops.GUARDS:
        # a value of a swept graph is a number now: a guard on the live side, if any
        x, y = (v.value if isinstance(v, Var) and v._tape is not None and v._tape.consumed else v
                for v in (x, y))
        if not isinstance(x, Var) and not isinstance(y, Var):
            return _FORWARD[ops.BY_NAME[name].code](float(x), float(y)) == 1.0
    out = _apply(name, x, y)
    if name in ops.GUARDS:  # a comparison returns a bool
        return out.value == 1.0
    return out


# ---------------------------------------------------------------------------
# Math functions: plain floats in, plain float out; a Var in, a Var out;
# an Array in, an Array out (one elementwise `map` row); ndarrays in, ndarray out
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
    """x ** y. Squaring (a Var or an Array) records ``square``; otherwise
    ``power``."""
    squared = isinstance(y, numbers.Real) and y == 2
    if isinstance(x, Var) and squared:
        return _apply("square", x)
    if isinstance(x, Array) and squared:
        return _map("square", x)
    return _apply("power", x, y)


def where(cond, x, y):
    """x if cond else y. A Var condition is true when its value != 0,
    which is recorded as a guard. With an Array among the arguments, or an
    array condition, it is elementwise (np.where): a ``where`` row."""
    if any(isinstance(v, Array) for v in (cond, x, y)) or (
            isinstance(cond, np.ndarray) and cond.ndim and cond.dtype != object):
        return _where(cond, x, y)
    if isinstance(cond, np.ndarray) and cond.ndim:  # an object array of Vars
        return np.frompyfunc(where, 3, 1)(cond, x, y)
    if isinstance(cond, Var):
        cond = cond != 0.0  # records the guard
    return x if cond else y


def clip(x, lo, hi):
    """minimum(maximum(x, lo), hi); a None bound is no bound, as in np.clip."""
    if lo is None and hi is None:
        raise ValueError("clip needs a lower or an upper bound (or both)")
    if lo is not None:
        x = maximum(x, lo)
    return x if hi is None else minimum(x, hi)


# ---------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------

def _frozen(value):
    """A read-only float64 copy: a tape's values never change under it."""
    a = np.array(value, dtype=np.float64)
    a.flags.writeable = False
    return a


class Array(_Handle):
    """A float64 array: a leaf ``Array(ndarray)``, or a handle on an array
    row of a tape. Operators and NumPy functions on it record rows, with
    NumPy's broadcasting."""

    __slots__ = ("_tape", "_index", "_value", "_grad", "__weakref__")
    __array_priority__ = 100  # ndarray <op> Array asks the Array first

    def __init__(self, value):
        a = np.asarray(value)
        if a.dtype.kind not in "fiu":
            if isinstance(value, (Var, Array)) or a.dtype == object:
                raise TypeError("Array() takes numbers; to build an Array from Vars use stack()")
            raise TypeError(f"Array() takes real numbers, got dtype {a.dtype}")
        self._tape = None  # a leaf is on no tape
        self._index = None
        self._value = _frozen(a)
        self._grad = np.zeros(a.shape)

    # -- state ----------------------------------------------------------------

    @property
    def value(self):
        return self._node_value()

    @value.setter
    def value(self, v):
        if self._tape is not None:
            raise FastADError("only a leaf Array's value can be set")
        v = _frozen(v)
        if v.shape != self._value.shape:
            raise ValueError(f"value must have shape {self._value.shape}, got {v.shape}")
        self._value = v

    @property
    def grad(self):
        """A leaf's accumulated gradient (zeros before any sweep), or a
        recorded array's adjoint from the last sweep."""
        if self._tape is None:
            return self._grad
        adj = self._tape.adj
        g = adj[self._index] if adj is not None and self._index < len(adj) else 0.0
        return g.copy() if isinstance(g, np.ndarray) else np.zeros(self.shape)

    @grad.setter
    def grad(self, g):
        if self._tape is not None:
            raise FastADError("only a leaf Array's grad can be set")
        if g is None:  # zeroed, as in fastad
            g = np.zeros(self._value.shape)
        g = np.array(g, dtype=np.float64)
        if g.shape != self._value.shape:
            raise ValueError(f"grad must have shape {self._value.shape}, got {g.shape}")
        self._grad = g

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)
    dtype = property(lambda self: self.value.dtype)
    T = property(lambda self: _transpose(self))

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def __bool__(self):  # as an ndarray: only a one-element array has a truth value
        return bool(self.value)

    def backward(self, seed=None, retain_graph=False):
        """Reverse sweep from this array, seeded with ``seed`` (the adjoint
        of every element: this is d sum(seed * self)). The seed may be left
        out for a one-element array."""
        if seed is None:
            if self.size != 1:
                raise ValueError("backward() of an array with more than one element needs a "
                                 "seed of its shape (or reduce it first, e.g. .sum())")
            seed = 1.0
        seed = np.broadcast_to(np.asarray(seed, dtype=np.float64), self.shape)
        if self._tape is None:  # d leaf / d leaf = identity
            self._grad = self._grad + seed
            return
        _backward(self._tape, self._index, seed, retain_graph)

    def __repr__(self):
        body = np.array2string(self.value, separator=", ", prefix="Array(")
        if self._tape is None:
            return f"Array({body})"
        return f"Array({body}, op={_NAME[self._tape.op[self._index]]}, row={self._index})"

    # -- operators: NumPy semantics, recorded -----------------------------------

    def __add__(self, other): return _map("add", self, other)
    def __radd__(self, other): return _map("add", other, self)
    def __sub__(self, other): return _map("sub", self, other)
    def __rsub__(self, other): return _map("sub", other, self)
    def __mul__(self, other): return _map("mul", self, other)
    def __rmul__(self, other): return _map("mul", other, self)
    def __truediv__(self, other): return _map("div", self, other)
    def __rtruediv__(self, other): return _map("div", other, self)
    def __pow__(self, other): return power(self, other)
    def __rpow__(self, other): return _map("power", other, self)
    def __matmul__(self, other): return _matmul(self, other)
    def __rmatmul__(self, other): return _matmul(other, self)
    def __neg__(self): return _map("neg", self)
    def __pos__(self): return self
    def __abs__(self): return _map("abs", self)

    # Comparisons compare values, elementwise: an ndarray of bools, no rows.
    def __lt__(self, other): return self.value < _operand(other)[1]
    def __le__(self, other): return self.value <= _operand(other)[1]
    def __gt__(self, other): return self.value > _operand(other)[1]
    def __ge__(self, other): return self.value >= _operand(other)[1]
    def __eq__(self, other): return self.value == _operand(other)[1]
    def __ne__(self, other): return self.value != _operand(other)[1]
    __hash__ = object.__hash__  # by identity: Arrays are graph nodes

    def __getitem__(self, key):
        return _getitem(self, key)

    # -- methods, as on ndarray -------------------------------------------------

    def sum(self, axis=None, keepdims=False): return _reduce("sum", self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _reduce("amax", self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _reduce("amin", self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return _reduce("prod", self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _mean(self, axis, keepdims)

    def reshape(self, *shape, order="C"):
        return _reshape(self, shape[0] if len(shape) == 1 else shape, order)

    def transpose(self, *axes):
        return _transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def swapaxes(self, axis1, axis2): return _swapaxes(self, axis1, axis2)
    def squeeze(self, axis=None): return _squeeze(self, axis)
    def ravel(self, order="C"): return _reshape(self, (-1,), order)
    def flatten(self): return _reshape(self, (-1,))
    def dot(self, other): return _dot(self, other)
    def clip(self, lo=None, hi=None, *, min=None, max=None):
        return clip(self, lo if min is None else min, hi if max is None else max)

    def item(self):
        """The single element of a one-element array, as a scalar (elem) row."""
        if self.size != 1:
            raise ValueError(f"item() needs a one-element array, this one has shape {self.shape}")
        return _elem(self, 0)

    # -- NumPy's protocols ------------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a tracked Array cannot become a plain ndarray (its derivatives "
                        "would be lost); use .value for the numbers")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _numpy_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        impl = _NUMPY_FUNCTIONS.get(func)
        if impl is None:
            raise TypeError(f"fastad.reference does not implement numpy.{func.__name__} on "
                            "tracked values (the result would lose its derivative); apply it "
                            "to .value if no derivative is needed")
        return impl(*args, **kwargs)


def _tracked(v):
    return isinstance(v, (Var, Array))


def _holds_tracked(v):
    """Whether a list / tuple / object array holds a Var or an Array."""
    if _tracked(v):
        return True
    if isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.dtype == object):
        return any(_holds_tracked(e) for e in v)
    return False


def _operand(v):
    """``(handle, value)`` of an argument of an array op: the handle is the
    Var or Array (None for a constant), the value its float or ndarray.
    Lists and object arrays holding Vars become a ``stack`` row."""
    if _tracked(v):
        return v, v.value
    if isinstance(v, np.ndarray) and v.dtype == object:
        if v.size == 0:
            return None, np.zeros(v.shape)
        return _operand(_reshape(stack(list(v.reshape(-1))), v.shape))
    if isinstance(v, (list, tuple)) and _holds_tracked(v):
        return _operand(stack(v))
    if type(v) is float:
        return None, v
    if type(v) is not np.ndarray and isinstance(v, numbers.Real):  # one number (a Fraction too,
        return None, float(v)                                       # which NumPy holds as an object)
    a = np.asarray(v)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"fastad arrays take real numbers, got {type(v).__name__}"
                        + (f" of dtype {a.dtype}" if isinstance(v, np.ndarray) else ""))
    return None, (a.astype(np.float64) if a.ndim else float(a))


def _record(name, handles, value, c=0.0, aux=None):
    """Append one array row for op ``name`` of ``handles`` (Var, Array, or
    None for a constant) with its already computed value; return a Var for
    a scalar value, an Array otherwise. With no tracked argument nothing is
    recorded: the plain value comes back. A variadic op (concatenate,
    stack) has a = b = -1 and keeps its argument rows in aux[0]."""
    if not any(_tracked(h) for h in handles):
        return value if np.ndim(value) else float(value)
    tape = _tape_of([h for h in handles if _tracked(h)])
    rows = [_row_of(tape, h) for h in handles]
    if ops.BY_NAME[name].arity == -1:
        a = b = -1
        aux = (rows, aux)
    else:
        a, b = (rows + [-1, -1])[:2]
    is_array = np.ndim(value) > 0
    value = _frozen(value) if is_array else float(value)
    tape.has_arrays = True
    i = tape.append(_CODE[name], a, b, float(c), value)
    tape.aux[i] = aux  # (None is a parameter too: the index of a[None])
    return Array._node(tape, i) if is_array else Var._node(tape, i)


def _row_of(tape, h):
    """The row of a handle on ``tape`` (an input row for a leaf); -1 for a
    constant."""
    if h is None:
        return -1
    return tape.input_row(h) if h._tape is None else h._index


# -- elementwise: one `map` row, the scalar op's code in c --------------------

# The NumPy ufunc that computes each scalar op's value elementwise. Ops NumPy
# lacks (erf, sigmoid, relu) apply the scalar FORWARD rule element by element.
_NUMPY_UFUNC = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
    "power": np.power, "neg": np.negative, "square": np.square, "sqrt": np.sqrt,
    "cbrt": np.cbrt, "exp": np.exp, "expm1": np.expm1, "log": np.log,
    "log1p": np.log1p, "log2": np.log2, "log10": np.log10, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos,
    "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "abs": np.abs, "sign": np.sign, "maximum": np.maximum, "minimum": np.minimum,
    "arctan2": np.arctan2, "hypot": np.hypot,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal,
}


def _elementwise(fn, nout, *arrays):
    """Apply a scalar Python function to every element (with broadcasting);
    float64 result(s)."""
    out = np.frompyfunc(fn, len(arrays), nout)(*arrays)
    if nout == 1:
        return np.asarray(out, dtype=np.float64)
    return tuple(np.asarray(o, dtype=np.float64) for o in out)


def _map(name, *args):
    """Scalar op ``name`` applied elementwise with broadcasting: one ``map``
    row, ``c`` = the op's code, aux = the constant arguments' values (None
    in the slots of tracked ones)."""
    pairs = [_operand(v) for v in args]
    values = [v for _, v in pairs]
    ufunc = _NUMPY_UFUNC.get(name)
    with np.errstate(all="ignore"):  # IEEE results, as the scalar ops give
        if ufunc is not None:
            value = ufunc(*values)
        else:
            value = _elementwise(FORWARD[name], 1, *values)
    value = np.asarray(value, dtype=np.float64)
    constants = tuple(None if h is not None else v for h, v in pairs)
    return _record("map", [h for h, _ in pairs], value, _CODE[name], constants)


# -- linear algebra ---------------------------------------------------------

def _matmul(x, y):
    """x @ y with np.matmul's rules (1-d operands, stacks of matrices):
    one ``matmul`` row, aux = the constant operands."""
    (hx, vx), (hy, vy) = _operand(x), _operand(y)
    if np.ndim(vx) == 0 or np.ndim(vy) == 0:
        raise ValueError("matmul: an operand is a scalar; use * to scale")
    value = np.matmul(vx, vy)
    return _record("matmul", [hx, hy], value, 0.0,
                   (vx if hx is None else None, vy if hy is None else None))


def _dot(x, y):
    """np.dot for scalars, vectors and matrices."""
    nx, ny = np.ndim(_operand(x)[1]), np.ndim(_operand(y)[1])
    if nx > 2 or ny > 2:
        raise TypeError("the reference's dot takes 1-d and 2-d arrays; use matmul or einsum")
    if nx == 0 or ny == 0:
        return _map("mul", x, y)
    return _matmul(x, y)


def _outer(x, y):
    """np.outer: a column times a row."""
    return _map("mul", _reshape(x, (-1, 1)), _reshape(y, (1, -1)))


def _einsum_subscripts(subscripts, ndim_x, ndim_y):
    """(x's, y's, output's) index letters of a two-operand einsum."""
    s = subscripts.replace(" ", "")
    if "." in s:
        raise TypeError("the reference's einsum does not take ellipses (...)")
    inputs, arrow, out = s.partition("->")
    parts = inputs.split(",")
    if len(parts) != 2:
        raise ValueError(f"einsum subscripts {subscripts!r} do not name two operands")
    xs, ys = parts
    if len(xs) != ndim_x or len(ys) != ndim_y:
        raise ValueError(f"einsum subscripts {subscripts!r} do not fit operands of "
                         f"{ndim_x} and {ndim_y} dimensions")
    if len(set(xs)) != len(xs) or len(set(ys)) != len(ys):
        raise TypeError("the reference's einsum does not take an index repeated "
                        "within one operand (a diagonal)")
    if not arrow:  # implicit output: the indices used once, alphabetically
        out = "".join(sorted(ch for ch in set(xs + ys) if (xs + ys).count(ch) == 1))
    return xs, ys, out


def _einsum(subscripts, *operands):
    """np.einsum of one or two operands (one: einsum("ij->j", x) is
    einsum("ij,->j", x, 1.0)). aux = (xs, ys, out, constant operands)."""
    if len(operands) == 1:
        if "->" in subscripts:
            subscripts = subscripts.replace("->", ",->", 1)
        else:
            subscripts = subscripts + ","
        operands = (operands[0], 1.0)
    if len(operands) != 2:
        raise TypeError("the reference's einsum takes one or two operands")
    (hx, vx), (hy, vy) = _operand(operands[0]), _operand(operands[1])
    xs, ys, out = _einsum_subscripts(subscripts, np.ndim(vx), np.ndim(vy))
    value = np.einsum(f"{xs},{ys}->{out}", vx, vy)
    return _record("einsum", [hx, hy], value, 0.0,
                   (xs, ys, out, vx if hx is None else None, vy if hy is None else None))


# -- reductions -------------------------------------------------------------

def _axes(axis, ndim):
    """``axis`` (None, an int or a tuple) as a sorted tuple of axes >= 0."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of bounds for an array of {ndim} dimensions")
    out = tuple(sorted(int(ax) % ndim for ax in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}")
    return out


_REDUCE = {"sum": np.sum, "amax": np.max, "amin": np.min, "prod": np.prod}


def _reduce(name, x, axis=None, keepdims=False):
    """A reduction (sum, amax, amin, prod) over ``axis``: one row, aux =
    (the reduced axes, keepdims). Reducing to one number gives a Var."""
    hx, vx = _operand(x)
    vx = np.asarray(vx, dtype=np.float64)
    axes = _axes(axis, vx.ndim)
    value = _REDUCE[name](vx, axis=axes, keepdims=keepdims)
    return _record(name, [hx], value, 0.0, (axes, keepdims))


def _mean(x, axis=None, keepdims=False):
    """The sum times 1/count (a ``map`` mul row after the ``sum`` row)."""
    total = _reduce("sum", x, axis, keepdims)
    n = np.size(_operand(x)[1]) // max(np.size(_operand(total)[1]), 1)
    return _map("mul", total, 1.0 / n if n else NAN)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over ``axis``, without overflow: the maximum m is
    taken out first, log(sum(exp(x - m))) + m. One ``logsumexp`` row, aux
    = (the reduced axes, keepdims)."""
    hx, shifted, m, axes = _max_out(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(np.sum(np.exp(shifted), axis=axes, keepdims=True)) + m
    if not keepdims:
        value = value.reshape([n for k, n in enumerate(value.shape) if k not in axes])
    return _record("logsumexp", [hx], value, 0.0, (axes, keepdims))


def log_softmax(x, axis=-1):
    """x - logsumexp(x, axis, keepdims=True), computed as (x - m) -
    log(sum(exp(x - m))) with m the maximum: x and logsumexp(x) may both be
    huge, their difference small, and m's subtraction is the exact one.
    One ``log_softmax`` row, aux = the axes."""
    hx, shifted, _, axes = _max_out(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = shifted - np.log(np.sum(np.exp(shifted), axis=axes, keepdims=True))
    return _record("log_softmax", [hx], value, 0.0, axes)


def _max_out(x, axis):
    """(handle, x - m, m, axes): x's values with their maximum m along axes
    taken out, m kept as length-1 axes (0 where the max is not finite)."""
    hx, vx = _operand(x)
    vx = np.asarray(vx, dtype=np.float64)
    axes = _axes(axis, vx.ndim)
    m = np.max(vx, axis=axes, keepdims=True) if vx.size else np.zeros((1,) * vx.ndim)
    m = np.where(np.isfinite(m), m, 0.0)  # all -inf (or an inf): nothing to take out
    return hx, vx - m, m, axes


def softmax(x, axis=-1):
    """exp(log_softmax(x, axis)): entries in [0, 1] summing to 1 along axis."""
    return _map("exp", log_softmax(x, axis))


# -- shapes and indexing ----------------------------------------------------

def _reshape(x, shape, order="C"):
    hx, vx = _operand(x)
    if order == "F":  # column-major = reverse the axes, reshape row-major, reverse back
        shape = np.reshape(vx, shape, order="F").shape
        return _transpose(_reshape(_transpose(x), shape[::-1]))
    if order != "C":
        raise ValueError(f"reshape takes order 'C' or 'F', not {order!r}")
    return _record("reshape", [hx], np.reshape(vx, shape))


def _axis(a, ndim):
    """An axis in range(ndim), negative ones counted from the end."""
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of bounds for an array of dimension {ndim}")
    return int(a) % ndim


def _transpose(x, axes=None):
    """np.transpose: aux = the permutation (None: reverse the axes)."""
    hx, vx = _operand(x)
    if axes is not None:
        axes = tuple(_axis(a, np.ndim(vx)) for a in axes)
    return _record("transpose", [hx], np.transpose(vx, axes), 0.0, axes)


def _swapaxes(x, axis1, axis2):
    ndim = np.ndim(_operand(x)[1])
    axes = list(range(ndim))
    axis1, axis2 = _axis(axis1, ndim), _axis(axis2, ndim)
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return _transpose(x, axes)


def _expand_dims(x, axis):
    return _reshape(x, np.expand_dims(_operand(x)[1], axis).shape)


def _squeeze(x, axis=None):
    return _reshape(x, np.squeeze(_operand(x)[1], axis).shape)


def _elem(x, k):
    """Element ``k`` of x's flattened value: a scalar ``elem`` row, k in c."""
    return _record("elem", [x], float(x.value.reshape(-1)[k]), float(k))


def _getitem(x, key):
    """x[key] (basic or advanced indexing). One element is an ``elem`` row;
    anything else a ``getitem`` row with the key in aux."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(_holds_tracked(k) for k in parts):
        raise TypeError("an index must be made of ints, slices or integer arrays, "
                        "not tracked values")
    # lists and arrays become arrays of the row's own, so a later change to
    # the caller's cannot change the recorded key (NumPy reads lists as
    # advanced indices)
    parts = tuple(np.array(k) if isinstance(k, (list, np.ndarray)) else k for k in parts)
    key = parts if isinstance(key, tuple) else parts[0]
    hx, vx = _operand(x)
    if (isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_))  # a[True] is a mask
            and np.ndim(vx) == 1 and hx is not None):
        n = len(vx)  # a[i] of a vector, the element loop: no index arithmetic
        if not -n <= key < n:
            raise IndexError(f"index {key} is out of bounds for an array of length {n}")
        return _elem(x, int(key) % n)
    value = vx[key]
    if np.ndim(value) == 0 and hx is not None:  # one element: an elem row
        return _elem(x, int(np.arange(vx.size).reshape(vx.shape)[key]))
    return _record("getitem", [hx], value, 0.0, key)


def concatenate(arrays, axis=0):
    """np.concatenate of Arrays, Vars, ndarrays and numbers (a scalar is a
    piece of length 1; axis=None flattens every piece first). One
    ``concatenate`` row; aux = (argument rows, (axis, each piece's shape))."""
    pairs = [_operand(v) for v in arrays]
    if not pairs:
        raise ValueError("concatenate needs at least one array")
    pieces = [np.atleast_1d(v) for _, v in pairs]
    if axis is None:
        pieces = [p.reshape(-1) for p in pieces]
    ax = 0 if axis is None else axis
    value = np.concatenate(pieces, axis=ax)
    ax = ax % value.ndim
    shapes = [np.shape(v) for _, v in pairs]
    return _record("concatenate", [h for h, _ in pairs], value, 0.0,
                   (ax, [p.shape[ax] for p in pieces], shapes))


def stack(values, axis=0):
    """An Array from Vars, Arrays, ndarrays or numbers stacked along a new
    axis, as np.stack: ``stack([x, x * x])``. One ``stack`` row; aux =
    (argument rows, (axis, each piece's shape))."""
    pairs = [_operand(v) for v in values]
    if not pairs:
        raise ValueError("stack needs at least one value")
    value = np.stack([np.asarray(v, dtype=np.float64) for _, v in pairs], axis=axis)
    return _record("stack", [h for h, _ in pairs], value, 0.0,
                   (axis % value.ndim, [np.shape(v) for _, v in pairs]))


def _where(cond, x, y):
    """np.where(cond, x, y): one ``where`` row, aux = the condition (bools;
    a tracked condition counts by value, no guard)."""
    c = np.asarray(cond.value if _tracked(cond) else _operand(cond)[1], dtype=bool)
    (hx, vx), (hy, vy) = _operand(x), _operand(y)
    value = np.where(c, vx, vy).astype(np.float64)
    return _record("where", [hx, hy], value, 0.0, c)


# -- NumPy's protocols ------------------------------------------------------

_UFUNC_NAME = {ufunc: name for name, ufunc in _NUMPY_UFUNC.items()}
_UFUNC_NAME.update({np.divide: "div", np.absolute: "abs", np.fabs: "abs",
                    np.float_power: "power"})  # (not fmax, fmin: they skip a nan, maximum keeps it)


def _object_scalar(v):
    """A Var in a 0-d object array, so that NumPy's object loop calls it."""
    box = np.empty((), dtype=object)
    box[()] = v
    return box


def _numpy_ufunc(ufunc, method, inputs, kwargs):
    """A NumPy ufunc on Vars / Arrays (``__array_ufunc__`` of both): the
    scalar op on numbers and Vars, a ``map`` row with an array among the
    arguments; comparisons compare values."""
    if method != "__call__" or kwargs:
        how = f".{method}" if method != "__call__" else f" with {', '.join(kwargs)}"
        raise TypeError(f"fastad.reference does not implement numpy.{ufunc.__name__}{how} "
                        "on tracked values; apply it to .value if no derivative is needed")
    if ufunc is np.positive:
        return inputs[0]
    if ufunc is np.matmul:
        return _matmul(*inputs)
    name = _UFUNC_NAME.get(ufunc)
    if name is None:
        raise TypeError(f"fastad.reference does not implement numpy.{ufunc.__name__} on "
                        "tracked values; apply it to .value if no derivative is needed")
    if all(isinstance(v, (Var, numbers.Real)) for v in inputs):  # scalars
        if name in ops.GUARDS:
            return _operator(name, *inputs)
        return power(*inputs) if name == "power" else _apply(name, *inputs)
    if any(isinstance(v, np.ndarray) and v.dtype == object for v in inputs) and not any(
            isinstance(v, Array) for v in inputs):
        # an object array of Vars: NumPy's own semantics, element by element
        fn = np.frompyfunc(lambda *xs: ufunc(*xs), len(inputs), 1)
        return fn(*[_object_scalar(v) if isinstance(v, Var) else v for v in inputs])
    if name in ops.GUARDS:
        return ufunc(*[_operand(v)[1] for v in inputs])
    return _map(name, *inputs)


def _unsupported(fn, **kwargs):
    """NumPy keyword arguments the reference does not take (out=, dtype=,
    where= ...) must be left unset."""
    for key, value in kwargs.items():
        if value is not None and value is not np._NoValue:
            raise TypeError(f"fastad.reference: numpy.{fn}() with {key}= is not "
                            "supported on tracked values")


def _np_reduction(name):
    def reduction(a, axis=None, dtype=None, out=None, keepdims=False, **rest):
        _unsupported(name, dtype=dtype, out=out, **rest)
        return _reduce(name, a, axis, bool(keepdims))
    return reduction


def _np_mean(a, axis=None, dtype=None, out=None, keepdims=False, **rest):
    _unsupported("mean", dtype=dtype, out=out, **rest)
    return _mean(a, axis, bool(keepdims))


def _np_reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    return _reshape(a, shape if shape is not None else newshape, order)


def _np_clip(a, a_min=None, a_max=None, out=None, **kwargs):
    _unsupported("clip", out=out)
    lo, hi = (None if v is np._NoValue else v for v in (kwargs.get("min", a_min), kwargs.get("max", a_max)))
    return clip(a, lo, hi)


# The NumPy functions the reference implements on tracked values.
_NUMPY_FUNCTIONS = {
    np.sum: _np_reduction("sum"), np.max: _np_reduction("amax"),
    np.amax: _np_reduction("amax"), np.min: _np_reduction("amin"),
    np.amin: _np_reduction("amin"), np.prod: _np_reduction("prod"), np.mean: _np_mean,
    np.reshape: _np_reshape,
    np.transpose: lambda a, axes=None: _transpose(a, axes),
    np.swapaxes: _swapaxes,
    np.expand_dims: _expand_dims,
    np.squeeze: lambda a, axis=None: _squeeze(a, axis),
    np.ravel: lambda a, order="C": _reshape(a, (-1,), order),
    np.concatenate: lambda arrays, axis=0, out=None, **k: (_unsupported("concatenate", out=out, **k),
                                                          concatenate(arrays, axis))[1],
    np.stack: lambda arrays, axis=0, out=None, **k: (_unsupported("stack", out=out, **k),
                                                    stack(arrays, axis))[1],
    np.where: lambda cond, x, y: where(cond, x, y),
    np.clip: _np_clip,
    np.outer: lambda a, b, out=None: (_unsupported("outer", out=out), _outer(a, b))[1],
    np.einsum: lambda subscripts, *operands, optimize=False, **k: (_unsupported("einsum", **k),
                                                                  _einsum(subscripts, *operands))[1],
    np.dot: lambda a, b, out=None: (_unsupported("dot", out=out), _dot(a, b))[1],
    np.shape: lambda a: np.shape(_operand(a)[1]),
    np.ndim: lambda a: np.ndim(_operand(a)[1]),
    np.size: lambda a, axis=None: np.size(_operand(a)[1], axis),
}


# ---------------------------------------------------------------------------
# The derivatives of the array ops
# ---------------------------------------------------------------------------
#
# Each rule receives the tape, the row i, its adjoint g (an ndarray of the
# row's shape, or a float for a scalar-valued row), and the adjoint list; it
# adds g times the row's Jacobian, a vector-Jacobian product, into each
# tracked argument's adjoint (``_pass``). Everything is written from the
# definitions; nothing is shared with the compiled core's rules.

def _value(tape, row, constant):
    """An argument's value: its row's value, or the constant kept in aux."""
    return tape.val[row] if row >= 0 else constant


def _pass(tape, adj, row, d):
    """Add ``d`` into the adjoint of ``row`` (nothing for a constant, -1):
    a float for a scalar row, an ndarray of the row's shape otherwise."""
    if row < 0:
        return
    if isinstance(tape.val[row], np.ndarray):
        if not isinstance(adj[row], np.ndarray):  # first contribution
            adj[row] = np.zeros(tape.val[row].shape)
        adj[row] += d
    else:
        adj[row] += float(d)


def _unbroadcast(d, shape):
    """Sum ``d`` down to ``shape``: where NumPy broadcast an argument (new
    leading axes, axes of length 1), its adjoint is the sum over the copies."""
    d = np.asarray(d, dtype=np.float64)
    while d.ndim > len(shape):
        d = d.sum(axis=0)
    for k, n in enumerate(shape):
        if n == 1 and d.shape[k] != 1:
            d = d.sum(axis=k, keepdims=True)
    return d.reshape(shape)


def _times(g, d):
    """g * d elementwise, with 0 wherever g is 0: an elementwise op is one
    scalar op per element, and each obeys the absolute-zero rule."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.asarray(g) == 0.0, 0.0, np.multiply(g, d))


def _d_elem(tape, i, g, adj):
    """w = x.flat[k]: dx.flat[k] += g."""
    x = tape.a[i]
    if not isinstance(adj[x], np.ndarray):
        adj[x] = np.zeros(tape.val[x].shape)
    adj[x].reshape(-1)[int(tape.c[i])] += g


def _d_map(tape, i, g, adj):
    """w = f(x, y) elementwise: dx = g * df/dx, dy = g * df/dy, each summed
    back to its argument's shape. The partials are the scalar op's own
    (DERIVATIVES), applied element by element."""
    name = _NAME[int(tape.c[i])]
    rows = [tape.a[i], tape.b[i]][:_ARITY[int(tape.c[i])]]
    values = [_value(tape, r, k) for r, k in zip(rows, tape.aux[i])]
    rule = DERIVATIVES[name]
    if len(rows) == 1:
        partials = [_elementwise(lambda x, f: rule(x, None, f), 1, values[0], tape.val[i])]
    else:
        partials = _elementwise(rule, 2, values[0], values[1], tape.val[i])
    for r, v, d in zip(rows, values, partials):
        if r >= 0:
            _pass(tape, adj, r, _unbroadcast(_times(g, d), np.shape(v)))


def _d_matmul(tape, i, g, adj):
    """W = X @ Y: dX = G @ Y^T, dY = X^T @ G (per matrix of a stack; batch
    axes summed back). A 1-d X is a row (1, n) and a 1-d Y a column (n, 1),
    as np.matmul treats them; their unit axis is added to G and dropped
    from the result."""
    cx, cy = tape.aux[i]
    X, Y = _value(tape, tape.a[i], cx), _value(tape, tape.b[i], cy)
    G = np.asarray(g, dtype=np.float64)
    X2 = X[np.newaxis, :] if X.ndim == 1 else X
    Y2 = Y[:, np.newaxis] if Y.ndim == 1 else Y
    if Y.ndim == 1:  # (first: for vector @ vector, G is 0-d)
        G = np.expand_dims(G, -1)
    if X.ndim == 1:
        G = np.expand_dims(G, -2)
    dX = G @ np.swapaxes(Y2, -1, -2)
    dY = np.swapaxes(X2, -1, -2) @ G
    if X.ndim == 1:
        dX = dX[..., 0, :]
    if Y.ndim == 1:
        dY = dY[..., :, 0]
    _pass(tape, adj, tape.a[i], _unbroadcast(dX, X.shape))
    _pass(tape, adj, tape.b[i], _unbroadcast(dY, Y.shape))


def _d_einsum(tape, i, g, adj):
    """w[out] = sum x[xs] y[ys]: dx[xs] = sum g[out] y[ys] over the indices
    not in xs, itself an einsum; an index of xs found nowhere else was
    summed by the forward einsum, so dx is the same along it (broadcast).
    Likewise for y."""
    xs, ys, out, cx, cy = tape.aux[i]
    X, Y = _value(tape, tape.a[i], cx), _value(tape, tape.b[i], cy)
    G = np.asarray(g, dtype=np.float64)
    for row, mine, me, other_subs, other in ((tape.a[i], xs, X, ys, Y),
                                             (tape.b[i], ys, Y, xs, X)):
        if row < 0:
            continue
        have = "".join(ch for ch in mine if ch in out or ch in other_subs)
        d = np.einsum(f"{out},{other_subs}->{have}", G, other)
        d = d.reshape([d.shape[have.index(ch)] if ch in have else 1 for ch in mine])
        # an index of size 1 in me that einsum broadcast against the other's: summed back
        ones = tuple(k for k, (n, m) in enumerate(zip(np.shape(me), d.shape)) if n == 1 and m != 1)
        d = np.sum(d, axis=ones, keepdims=True) if ones else d
        _pass(tape, adj, row, np.broadcast_to(d, np.shape(me)))


def _kept(g, axes, keepdims):
    """A reduction's output (or adjoint) with the reduced axes kept as
    length 1, so that it broadcasts against the input."""
    g = np.asarray(g, dtype=np.float64)
    return g if keepdims else np.expand_dims(g, axes)


def _d_sum(tape, i, g, adj):
    """w = sum x over axes: every x in a sum gets the sum's adjoint."""
    axes, keepdims = tape.aux[i]
    x = tape.a[i]
    _pass(tape, adj, x, np.broadcast_to(_kept(g, axes, keepdims), np.shape(tape.val[x])))


def _d_extremum(tape, i, g, adj):
    """w = max (or min) x over axes: the adjoint goes to the elements equal
    to the result; k tied elements get 1/k of it each (a nan result: the
    nans share it)."""
    axes, keepdims = tape.aux[i]
    x = tape.a[i]
    X = tape.val[x]
    f = _kept(tape.val[i], axes, keepdims)
    winners = (X == f) | (np.isnan(X) & np.isnan(f))
    count = winners.sum(axis=axes, keepdims=True)
    _pass(tape, adj, x, np.where(winners, _kept(g, axes, keepdims) / count, 0.0))


def _product_of_others(X, axes):
    """For each element x_j, the product of the other elements of its
    reduction, without dividing (exact when some x are 0): the product of
    those before j times the product of those after j."""
    keep = [k for k in range(X.ndim) if k not in axes]
    order = keep + list(axes)
    moved = np.transpose(X, order)
    flat = moved.reshape(moved.shape[:len(keep)] + (-1,))
    if flat.shape[-1] == 0:
        return np.zeros(X.shape)
    ones = np.ones(flat.shape[:-1] + (1,))
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    others = (before * after).reshape(moved.shape)
    return np.transpose(others, np.argsort(order))


def _d_prod(tape, i, g, adj):
    """w = prod x over axes: dw/dx_j = the product of the other x."""
    axes, keepdims = tape.aux[i]
    x = tape.a[i]
    _pass(tape, adj, x, _kept(g, axes, keepdims) * _product_of_others(tape.val[x], axes))


def _d_logsumexp(tape, i, g, adj):
    """w = log sum exp x over axes: dw/dx_j = exp(x_j - w), the softmax."""
    axes, keepdims = tape.aux[i]
    x = tape.a[i]
    softmax_x = np.exp(tape.val[x] - _kept(tape.val[i], axes, keepdims))
    _pass(tape, adj, x, _kept(g, axes, keepdims) * softmax_x)


def _d_log_softmax(tape, i, g, adj):
    """w = x - logsumexp(x) over axes: dw_k/dx_j = [j = k] - softmax(x)_j,
    so the adjoint is g - softmax(x) * sum(g), with softmax(x) = exp(w)."""
    axes = tape.aux[i]
    g = np.asarray(g, dtype=np.float64)
    _pass(tape, adj, tape.a[i], g - np.exp(tape.val[i]) * np.sum(g, axis=axes, keepdims=True))


def _d_reshape(tape, i, g, adj):
    """Same elements, another shape: the adjoint reshaped back."""
    x = tape.a[i]
    _pass(tape, adj, x, np.reshape(g, np.shape(tape.val[x])))


def _d_transpose(tape, i, g, adj):
    """w = x with axes permuted by p: the adjoint permuted back by p^-1."""
    axes = tape.aux[i]  # None: the axes were reversed
    inverse = None if axes is None else np.argsort(axes)
    _pass(tape, adj, tape.a[i], np.transpose(g, inverse))


def _d_getitem(tape, i, g, adj):
    """w = x[key]: the adjoint scattered back into x's shape; an element
    picked twice gets both adjoints (np.add.at does not overwrite)."""
    x = tape.a[i]
    d = np.zeros(np.shape(tape.val[x]))
    np.add.at(d, tape.aux[i], g)
    _pass(tape, adj, x, d)


def _d_concatenate(tape, i, g, adj):
    """The adjoint cut back into the pieces, each in its own shape."""
    rows, (axis, lengths, shapes) = tape.aux[i]
    cuts = np.cumsum(lengths)[:-1]
    for row, piece, shape in zip(rows, np.split(np.asarray(g), cuts, axis=axis), shapes):
        _pass(tape, adj, row, piece.reshape(shape))


def _d_stack(tape, i, g, adj):
    """The adjoint taken apart along the stacking axis."""
    rows, (axis, shapes) = tape.aux[i]
    pieces = np.moveaxis(np.asarray(g), axis, 0)
    for row, piece, shape in zip(rows, pieces, shapes):
        _pass(tape, adj, row, piece.reshape(shape))


def _d_where(tape, i, g, adj):
    """w = cond ? x : y elementwise: the adjoint goes to x where cond holds,
    to y elsewhere (each summed back to its shape)."""
    cond = tape.aux[i]
    for row, chosen in ((tape.a[i], cond), (tape.b[i], ~cond)):
        if row >= 0:
            d = np.where(chosen, g, 0.0)
            _pass(tape, adj, row, _unbroadcast(d, np.shape(tape.val[row])))


# The rule of every array op, indexed by op code (None: no rule to apply).
_ARRAY_RULES = [None] * len(ops.OPS)
for _name, _rule in {
        "elem": _d_elem, "map": _d_map, "matmul": _d_matmul, "sum": _d_sum,
        "amax": _d_extremum, "amin": _d_extremum, "prod": _d_prod,
        "reshape": _d_reshape, "transpose": _d_transpose, "getitem": _d_getitem,
        "concatenate": _d_concatenate, "stack": _d_stack, "where": _d_where,
        "einsum": _d_einsum, "logsumexp": _d_logsumexp, "log_softmax": _d_log_softmax}.items():
    _ARRAY_RULES[_CODE[_name]] = _rule

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
    """A float becomes a Var leaf, an ndarray an Array leaf."""
    if isinstance(x, (Var, Array)):
        raise TypeError("the reference grad() takes floats and ndarrays, not Vars or "
                        "Arrays (it does not nest grad)")
    if isinstance(x, np.ndarray):
        return Array(x)  # raises TypeError for a non-real dtype
    if not isinstance(x, numbers.Real):
        raise TypeError(f"grad() arguments must be floats, ndarrays or nested lists / "
                        f"tuples / dicts of them, got {type(x).__name__}")
    return Var(x)


def value_and_grad(f, argnums=0):
    """``value_and_grad(f)(*args)`` -> (f(*args), df/dargs[argnums])."""
    single = isinstance(argnums, numbers.Integral) and not isinstance(argnums, (bool, np.bool_))
    nums = (argnums,) if single else tuple(argnums) if isinstance(argnums, (tuple, list, range)) else ()
    if not nums or any(not isinstance(n, numbers.Integral) or isinstance(n, (bool, np.bool_)) for n in nums):
        raise ValueError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")

    def wrapped(*args, **kwargs):
        for n in nums:
            if not -len(args) <= n < len(args):
                raise ValueError(f"argnums {n} is out of range for {len(args)} arguments")
        nums_here = tuple(int(n) % len(args) for n in nums)  # -1 and 1 of two: one argument
        args = list(args)
        leaves = {n: _tree_map(_make_leaf, args[n]) for n in nums_here}
        for n in nums_here:
            args[n] = leaves[n]
        with Tape():
            out = _scalar_output(f(*args, **kwargs))
        if isinstance(out, Var) and out._tape is not None:
            out._tape.check_usable()
            adj = out._tape.sweep(out._index)  # no side effect on other leaves
            row_of = out._tape._row_of_leaf

            def adjoint(leaf):  # an unused argument has no input row: 0
                row = row_of.get(id(leaf))
                return adj[row] if row is not None else 0.0
        else:  # a leaf or a constant: 1 for that very leaf, 0 otherwise
            def adjoint(leaf):
                return 1.0 if leaf is out else 0.0

        def gradient(leaf):  # a float for a Var, an ndarray for an Array
            g = adjoint(leaf)
            if isinstance(leaf, Array):
                return np.array(np.broadcast_to(g, leaf.shape), dtype=np.float64)
            return float(g)
        grads = tuple(_tree_map(gradient, leaves[n]) for n in nums_here)
        return float(out), grads[0] if single else grads
    return wrapped


def grad(f, argnums=0):
    """``grad(f)(*args)`` -> df/dargs[argnums], shaped like the arguments."""
    vg = value_and_grad(f, argnums)

    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]
    return wrapped


def _scalar_output(out):
    """The output of f under grad: a Var or a number (a one-element Array
    counts as its single element)."""
    if isinstance(out, (bool, np.bool_)):
        raise ValueError("grad needs a function with a scalar output, but it returned a bool")
    if isinstance(out, (Var, numbers.Real)):
        return out
    if isinstance(out, Array):
        if out.size != 1:
            raise ValueError(f"grad needs a function with a scalar output, got an Array "
                             f"of shape {out.shape}; for a vector output use jacobian (or vjp)")
        return out.item()
    if isinstance(out, np.ndarray) and out.size == 1:
        return _scalar_output(out.reshape(-1)[0])
    if isinstance(out, (list, tuple, np.ndarray)):
        raise ValueError("grad needs a function with a scalar output; for a "
                         "vector output use jacobian (or vjp)")
    raise TypeError(f"grad needs a function returning a scalar, got {type(out).__name__}")

"""Var: a handle on a row (or a leaf holding its own value and grad); the
recording of scalar ops (``_apply``); the math functions, which take
numbers, Vars, Arrays and ndarrays."""
import copy
import math
import numbers
import sys

import numpy as np

from .. import ops
from .._numpy_casts import CAST_REFUSED, numpy_is_casting
from .scalar_math import _FORWARD, _NAME
from .tape import FastADError, _current_stack, _reached, _tape_for_leaves


def _caller_of_float():
    """The Python frame that called float(v) (None from C)."""
    try:
        return sys._getframe(2)
    except ValueError:
        return None


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

    # copy.copy / copy.deepcopy: a recorded value never changes, so its copy
    # is itself, still on the graph, and so is the copy of grad's argument;
    # a user's leaf's is a new leaf (its value and grad).
    def __copy__(self):
        if self._tape is not None or getattr(self, "_made", False):
            return self
        leaf = type(self).__new__(type(self))
        leaf._tape = leaf._index = None
        leaf._value, leaf._grad = self._value, copy.copy(self._grad)  # (an Array's grad: an array)
        return leaf

    def __deepcopy__(self, memo):
        return self.__copy__()


class Var(_Handle):
    """A scalar: a leaf ``Var(2.0)``, or a handle on a row of a tape."""

    __slots__ = ("_tape", "_index", "_value", "_grad", "_made", "__weakref__")

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
        if self._differentiated() and numpy_is_casting(_caller_of_float()):
            raise TypeError(CAST_REFUSED)
        return float(self.value)

    def _differentiated(self):
        """Whether grad is differentiating this value now: recorded on its
        tape, or its argument, while that grad runs (see
        fastad/_numpy_casts.py)."""
        open_tapes = _current_stack()
        if self._tape is not None:
            return self._tape.made and not self._tape.consumed and any(self._tape is t for t in open_tapes)
        return getattr(self, "_made", False) and any(t.made for t in open_tapes)

    def __int__(self):
        return int(self.value)

    def __round__(self, ndigits=None):
        return round(self.value, ndigits)

    def __trunc__(self):
        return int(self.value)

    def __floor__(self):
        return math.floor(self.value)

    def __ceil__(self):
        return math.ceil(self.value)

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
    def arctan2(self, x): return _apply("arctan2", self, x)  # np.arctan2(ys, xs): ys[i].arctan2(xs[i])
    def hypot(self, y): return _apply("hypot", self, y)

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


# Built on this module, imported once its names exist (see the package
# docstring): an op with an array among its arguments records an array row.
from .array import _NUMPY_UFUNC, Array, _map, _operand  # noqa: E402
from .array_ops import _where  # noqa: E402
from .numpy_protocols import _numpy_ufunc, _unsupported  # noqa: E402

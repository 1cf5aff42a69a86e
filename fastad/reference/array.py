"""Array: a handle on an array row (or a leaf holding its own ndarray and
grad); the recording of array rows (``_operand``, ``_record``); the
elementwise ops, one ``map`` row each."""
import numbers

import numpy as np

from .. import ops
from .scalar_math import _CODE, _NAME, FORWARD, _elementwise
from .tape import FastADError
from .var import Var, _backward, _Handle, _tape_of, clip, power


def _frozen(value):
    """A read-only float64 copy: a tape's values never change under it."""
    a = np.array(value, dtype=np.float64)
    a.flags.writeable = False
    return a


class Array(_Handle):
    """A float64 array: a leaf ``Array(ndarray)``, or a handle on an array
    row of a tape. Operators and NumPy functions on it record rows, with
    NumPy's broadcasting."""

    __slots__ = ("_tape", "_index", "_value", "_grad", "_made", "__weakref__")
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


# Built on this module, imported once its names exist (see the package
# docstring): an Array's methods and NumPy's protocols record these ops.
from .array_ops import (  # noqa: E402
    _dot, _elem, _getitem, _matmul, _mean, _reduce, _reshape, _squeeze, _swapaxes,
    _transpose, stack,
)
from .numpy_protocols import _NUMPY_FUNCTIONS, _numpy_ufunc  # noqa: E402

"""NumPy on the tape: the front end of fad.Array.

Each function computes its value with NumPy and appends one array row
(`record_array`); the row's backward rule lives in fastad/array_rules.py.
Python numbers and plain ndarrays are constants (kept in the row's aux),
Vars are scalar rows, Arrays are array rows, and all mix in one graph.
Elementwise ops are one `map` row whose `c` is the scalar op code, so they
share their derivatives with the scalar core (map_vjp).
"""
import functools
from numbers import Real

import numpy as np

from fastad import _scalarized, _tree, ops as _ops
from fastad._core import Array, Var, clip, elem, record_array, map_value, where as _scalar_where

CODE = {s.name: s.code for s in _ops.OPS}
_NUMPY = {  # scalar op code -> the NumPy ufunc that computes its value
    CODE["add"]: np.add, CODE["sub"]: np.subtract, CODE["mul"]: np.multiply,
    CODE["div"]: np.true_divide, CODE["power"]: np.power, CODE["neg"]: np.negative,
    CODE["square"]: np.square, CODE["sqrt"]: np.sqrt, CODE["cbrt"]: np.cbrt, CODE["exp"]: np.exp,
    CODE["expm1"]: np.expm1, CODE["log"]: np.log, CODE["log1p"]: np.log1p, CODE["log2"]: np.log2,
    CODE["log10"]: np.log10, CODE["sin"]: np.sin, CODE["cos"]: np.cos, CODE["tan"]: np.tan,
    CODE["arcsin"]: np.arcsin, CODE["arccos"]: np.arccos, CODE["arctan"]: np.arctan,
    CODE["sinh"]: np.sinh, CODE["cosh"]: np.cosh, CODE["tanh"]: np.tanh, CODE["abs"]: np.abs,
    CODE["sign"]: np.sign, CODE["maximum"]: np.maximum, CODE["minimum"]: np.minimum,
    CODE["arctan2"]: np.arctan2, CODE["hypot"]: np.hypot,
}
_UFUNC_CODE = {ufunc: code for code, ufunc in _NUMPY.items()}
_UFUNC_CODE.update({np.divide: CODE["div"], np.absolute: CODE["abs"], np.fabs: CODE["abs"],
                    np.float_power: CODE["power"]})  # (not fmax, fmin: they skip a nan, maximum keeps it)
_COMPARISONS = (np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal)
_COMPARE_UFUNC = {CODE[name]: ufunc for name, ufunc in zip(("lt", "le", "gt", "ge", "eq", "ne"), _COMPARISONS)}
_COMPARE_CODE = {ufunc: code for code, ufunc in _COMPARE_UFUNC.items()}


def _tracked(v):
    return type(v) is Array or type(v) is Var


def operand(v):
    """(handle, value): handle is the Var/Array, or None for a constant."""
    if type(v) is Array or type(v) is Var:  # (_tracked, inlined: every op asks, twice)
        return v, v.value
    if isinstance(v, np.ndarray) and v.dtype == object:  # Vars in an object array: an Array row
        if _scalarized.active():  # (not in the twin: the caller does the op on object arrays)
            raise _scalarized.ObjectOperand("an object array of Vars met a fad.Array in a scalarized "
                                            "recording")
        return operand(_stack(list(v.reshape(-1)), 0).reshape(v.shape) if v.size else np.zeros(v.shape))
    if isinstance(v, (list, tuple)) and any(_tracked(e) for e in np.ravel(np.array(v, dtype=object))):
        return operand(np.array(v, dtype=object))
    if type(v) is float:
        return None, v
    if type(v) is not np.ndarray and isinstance(v, Real):  # one number (a Fraction too, which
        try:                                                # NumPy would hold as an object)
            return None, float(v)
        except OverflowError:  # (API.md's error types)
            raise ValueError(f"{type(v).__name__} {v:.6g} is beyond float64's range") from None
    _tree.refuse_masked(v, "an operand")
    a = np.asarray(v)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"fastad arrays take real numbers, got {type(v).__name__}"
                        + (f" of dtype {a.dtype}" if isinstance(v, np.ndarray) else ""))
    return None, a.astype(np.float64) if a.ndim else float(a)


def value_of(v):
    return operand(v)[1]


def _record(op, handles, value, c=0.0, aux=None):
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = float(value)  # one number: a scalar row (a Var), whatever made it
    for h in handles:  # (operand's handles: a Var, an Array or None; not == None, which records)
        if h is not None:
            return record_array(op, tuple(handles), value, c, aux)
    return value  # constants only: plain NumPy


# -- elementwise: one `map` row, the scalar op code in c --

def _map_value(code, *values):
    """Scalar op `code` elementwise: its NumPy ufunc, else the core's C rule."""
    ufunc = _NUMPY.get(code)
    value = ufunc(*values) if ufunc is not None else map_value(code, *values)
    return np.asarray(value, np.float64) if np.ndim(value) else float(value)


def unary(code, x):
    hx, vx = operand(x)
    return _record(CODE["map"], (hx,), _map_value(code, vx), code, None)


def binary(code, x, y):
    try:
        hx, vx = operand(x)
        hy, vy = operand(y)
    except _scalarized.ObjectOperand:  # C * x in the twin: element by element (and below)
        return _scalarized.ufunc(_NUMPY[code], x, y)
    return _record(CODE["map"], (hx, hy), _map_value(code, vx, vy), code,
                   (None if hx is not None else vx, None if hy is not None else vy))


def power(x, y):
    if isinstance(y, (int, float)) and y == 2:
        return unary(CODE["square"], x)
    return binary(CODE["power"], x, y)


def compare(code, x, y):
    """x < y (code: the scalar guard's, lt ... ne) elementwise: NumPy's bool
    array, which Python code branches on or hands to where. A `compare` row
    remembers it, so a compiled replay whose inputs flip an element re-records."""
    try:
        (hx, vx), (hy, vy) = operand(x), operand(y)
    except _scalarized.ObjectOperand:
        return _scalarized.ufunc(_COMPARE_UFUNC[code], x, y)
    # a swept graph's value is a constant now: the guard goes on the live side, if any
    hx, hy = (None if _tracked(h) and h.tape is not None and h.tape.consumed else h for h in (hx, hy))
    value = _COMPARE_UFUNC[code](vx, vy)
    if _tracked(hx) or _tracked(hy):
        record_array(CODE["compare"], (hx, hy), np.asarray(value, np.float64) if np.ndim(value) else float(value),
                     code, (None if hx is not None else vx, None if hy is not None else vy))
    return value


# -- linear algebra --

def matmul(x, y):
    try:
        hx, vx = operand(x)
        hy, vy = operand(y)
    except _scalarized.ObjectOperand:
        return np.matmul(*_scalarized.elements((x, y)))
    if np.ndim(vx) == 0 or np.ndim(vy) == 0:
        raise ValueError("matmul: an operand is a scalar; use * for scaling")
    return _record(CODE["matmul"], (hx, hy), np.matmul(vx, vy), 0.0,
                   (None if hx is not None else vx, None if hy is not None else vy))


def dot(x, y):
    try:
        nx, ny = np.ndim(value_of(x)), np.ndim(value_of(y))
    except _scalarized.ObjectOperand:
        return np.dot(*_scalarized.elements((x, y)))
    if nx > 2 or ny > 2:
        raise TypeError("fastad's dot takes 1-d and 2-d arrays; use matmul or einsum for more")
    if nx == 0 or ny == 0:
        return binary(CODE["mul"], x, y)
    return matmul(x, y)


def outer(x, y):
    # both operands read before a row is recorded (reshape's row, inline):
    # in the twin, an object array raises ObjectOperand here, not after x's
    # reshape row, which would be left dead on the tape (an Array row there)
    (hx, vx), (hy, vy) = operand(x), operand(y)
    return binary(CODE["mul"], _record(CODE["reshape"], (hx,), np.reshape(vx, (-1, 1)), 0.0, None),
                  _record(CODE["reshape"], (hy,), np.reshape(vy, (1, -1)), 0.0, None))


def einsum(subscripts, *operands):
    if len(operands) != 2:
        if len(operands) == 1:
            return einsum(subscripts.replace("->", ",->", 1) if "->" in subscripts else subscripts + ",",
                          operands[0], 1.0)
        raise TypeError("fastad's einsum takes one or two operands")
    (hx, vx), (hy, vy) = operand(operands[0]), operand(operands[1])
    spec = _einsum_spec(subscripts, np.ndim(vx), np.ndim(vy))
    value = np.einsum(f"{spec[0]},{spec[1]}->{spec[2]}", vx, vy)
    return _record(CODE["einsum"], (hx, hy), value, 0.0,
                   (spec, None if hx is not None else vx, None if hy is not None else vy))


def _einsum_spec(subscripts, ndim_x, ndim_y):
    s = subscripts.replace(" ", "")
    if "." in s:
        raise TypeError("fastad's einsum does not take ellipses")
    ins, _, out = s.partition("->")
    parts = ins.split(",")
    if len(parts) != 2:
        raise ValueError(f"einsum subscripts {subscripts!r} do not name two operands")
    xs, ys = parts
    if len(xs) != ndim_x or len(ys) != ndim_y:
        raise ValueError(f"einsum subscripts {subscripts!r} do not match operands of {ndim_x} and {ndim_y} dims")
    if len(set(xs)) != len(xs) or len(set(ys)) != len(ys):
        raise TypeError("fastad's einsum does not take a repeated index within one operand (diagonals)")
    if "->" not in s:
        out = "".join(sorted(ch for ch in set(xs + ys) if (xs + ys).count(ch) == 1))
    return xs, ys, out


# -- reductions --

_AxisError = getattr(np, "exceptions", np).AxisError


def _axis(axis, ndim):
    """axis (None, int or tuple) as a tuple of non-negative axes, checked as NumPy does."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= int(a) < ndim:
            raise _AxisError(int(a), ndim)
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError("repeated axis")
    return tuple(out)


# The ufunc reductions that np.sum, np.max, np.min and np.prod call, called
# directly: the same numbers, without their Python wrapper (about 1 us).
_REDUCE = {"sum": np.add.reduce, "amax": np.maximum.reduce, "amin": np.minimum.reduce,
           "prod": np.multiply.reduce}


def _reduce(name, x, axis, keepdims):
    hx, vx = operand(x)
    ax = _axis(axis, np.ndim(vx))
    value = _REDUCE[name](vx, axis=ax, keepdims=keepdims)
    return _record(CODE[name], (hx,), value, 0.0, (ax, keepdims))


def sum(x, axis=None, keepdims=False):
    return _reduce("sum", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    total = sum(x, axis, keepdims)
    count = np.size(value_of(x)) / max(np.size(value_of(total)), 1)
    return total * (1.0 / count if count else np.nan)  # a scalar row when total is a Var


def amax(x, axis=None, keepdims=False):
    return _reduce("amax", x, axis, keepdims)


def amin(x, axis=None, keepdims=False):
    return _reduce("amin", x, axis, keepdims)


def prod(x, axis=None, keepdims=False):
    return _reduce("prod", x, axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) without overflow (the max is taken out first).

    >>> import fastad as fad, numpy as np
    >>> fad.logsumexp(np.array([1000.0, 1000.0]))
    1000.6931471805599
    """
    if _scalarized.active() and type(x) is not Array:
        return _scalarized.logsumexp(x, _axis(axis, np.ndim(x)), keepdims)
    hx, vx = operand(x)
    ax = _axis(axis, np.ndim(vx))
    return _record(CODE["logsumexp"], (hx,), _logsumexp_value(vx, ax, keepdims), 0.0, (ax, keepdims))


def _logsumexp_value(vx, ax, keepdims):
    if np.size(vx):
        m = np.maximum.reduce(vx, axis=ax, keepdims=True)
        if np.isfinite(m).all():  # the common case: each sum holds its max's exp(0) = 1, no log(0)
            value = np.log(np.add.reduce(np.exp(vx - m), axis=ax, keepdims=True)) + m
            return value if keepdims else (np.squeeze(value, axis=ax) if ax is not None else value.reshape(()))
    else:
        m = np.zeros(np.sum(vx, axis=ax, keepdims=True).shape)
    m = np.where(np.isfinite(m), m, 0.0)  # an infinite or nan max: shift by 0 instead
    with np.errstate(divide="ignore"):  # log(0) = -inf: an empty sum's logsumexp
        value = np.log(np.add.reduce(np.exp(vx - m), axis=ax, keepdims=True)) + m
    return value if keepdims else (np.squeeze(value, axis=ax) if ax is not None else value.reshape(()))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, without overflow.

    >>> import fastad as fad, numpy as np
    >>> fad.softmax(np.array([0.0, 0.0]))
    array([0.5, 0.5])
    """
    if _scalarized.active() and type(x) is not Array:
        return _scalarized.softmax(x, _axis(axis, np.ndim(x)))
    return unary(CODE["exp"], log_softmax(x, axis))


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along axis: log-probabilities, stable at any scale.
    One row of its own: the max m comes out before the difference,
    (x - m) - log(sum(exp(x - m))), where x - logsumexp(x) would subtract
    two large numbers (logits of 1e14: probabilities summing to 1.0026).

    >>> import fastad as fad, numpy as np
    >>> fad.log_softmax(np.array([1000.0, 1000.0]))
    array([-0.69314718, -0.69314718])
    """
    if _scalarized.active() and type(x) is not Array:
        return _scalarized.log_softmax(x, _axis(axis, np.ndim(x)))
    hx, vx = operand(x)
    ax = _axis(axis, np.ndim(vx))
    return _record(CODE["log_softmax"], (hx,), _log_softmax_value(vx, ax), 0.0, ax)


def _log_softmax_value(vx, ax):
    vx = np.asarray(vx, np.float64)
    if not vx.size:
        return vx.copy()
    m = np.maximum.reduce(vx, axis=ax, keepdims=True)
    if not np.isfinite(m).all():  # an infinite or nan max: shift by 0 there (as logsumexp)
        m = np.where(np.isfinite(m), m, 0.0)
    shifted = vx - m
    with np.errstate(divide="ignore", invalid="ignore"):  # a row of -inf: log(0); an inf: inf - inf
        return shifted - np.log(np.add.reduce(np.exp(shifted), axis=ax, keepdims=True))


# -- shape --

def reshape(x, shape, order="C"):
    hx, vx = operand(x)
    if order == "F":  # column-major: the reversed axes read in row-major order
        shape = np.reshape(vx, shape, order="F").shape
        return transpose(reshape(transpose(x), shape[::-1]))
    if order != "C":
        raise ValueError(f"fastad reshapes in order 'C' or 'F', not {order!r}")
    return _record(CODE["reshape"], (hx,), np.reshape(vx, shape), 0.0, None)


def transpose(x, axes=None):
    hx, vx = operand(x)
    axes = _axis(axes, np.ndim(vx))
    return _record(CODE["transpose"], (hx,), np.transpose(vx, axes), 0.0, axes)


def swapaxes(x, a1, a2):
    ndim = np.ndim(value_of(x))
    axes = list(range(ndim))
    (a1,), (a2,) = _axis(a1, ndim), _axis(a2, ndim)
    axes[a1], axes[a2] = axes[a2], axes[a1]
    return transpose(x, axes)


def expand_dims(x, axis):
    return reshape(x, np.expand_dims(value_of(x), axis).shape)


def squeeze(x, axis=None):
    return reshape(x, np.squeeze(value_of(x), axis).shape)


def ravel(x, order="C"):
    return reshape(x, (-1,), order)


def _own(k):
    """An index array (or list) as an array of the row's own: the backward
    rule reads it later, after the caller may have changed theirs."""
    return k.copy() if isinstance(k, np.ndarray) else np.array(k) if isinstance(k, list) else k


def getitem(x, key):
    if any(_tracked(k) for k in (key if isinstance(key, tuple) else (key,))):
        raise TypeError("an index must be made of ints, slices or integer arrays, not fastad values")
    key = tuple(_own(k) for k in key) if isinstance(key, tuple) else _own(key)
    hx, vx = operand(x)
    value = vx[key]
    if np.ndim(value) == 0 and hx is not None:  # one element: the scalar-speed elem row
        return elem(hx, int(np.arange(vx.size).reshape(vx.shape)[key]))
    return _record(CODE["getitem"], (hx,), np.array(value, np.float64), 0.0, key)


def concatenate(arrays, axis=0):
    """Arrays (tracked or not) joined along an axis, as np.concatenate.

    >>> import fastad as fad, numpy as np
    >>> fad.concatenate([fad.Array(np.ones(2)), np.zeros(1)]).value
    array([1., 1., 0.])
    """
    if _scalarized.active() and not any(type(a) is Array for a in arrays):
        return _scalarized.concatenate(arrays, axis)
    try:
        pairs = [operand(a) for a in arrays]
    except _scalarized.ObjectOperand:
        return _scalarized.concatenate(_scalarized.elements(arrays), axis)
    values = _joined([v for _, v in pairs], axis is None)
    aux = (0 if axis is None else axis, [v.shape for v in values],
           [None if h is not None else v for h, v in pairs], axis is None)
    return _record(CODE["concatenate"], [h for h, _ in pairs], np.concatenate(values, axis=aux[0]), 0.0, aux)


def _joined(values, flat):
    """concatenate's operands: numbers as 1-element arrays, all flattened if flat."""
    values = [np.atleast_1d(v) if np.ndim(v) == 0 else v for v in values]
    return [np.ravel(v) for v in values] if flat else values


def stack(values, axis=0):
    """An Array from Vars, Arrays or numbers: fad.stack([v1, v2]).

    >>> import fastad as fad
    >>> x = fad.Var(2.0)
    >>> fad.stack([x, x * x]).value
    array([2., 4.])
    """
    if _scalarized.active() and not any(type(v) is Array for v in values):
        return _scalarized.stack(values, axis)
    try:
        return _stack(values, axis)
    except _scalarized.ObjectOperand:
        return _scalarized.stack(_scalarized.elements(values), axis)


def _stack(values, axis):
    """stack's Array row (operand's too: an object array of Vars that meets
    an Array becomes one, also in a scalarized recording)."""
    pairs = [operand(v) for v in values]
    if not pairs:
        raise ValueError("stack needs at least one value")
    value = np.stack([np.asarray(v, np.float64) for _, v in pairs], axis=axis)
    aux = (axis, [None if h is not None else v for h, v in pairs])
    return _record(CODE["stack"], [h for h, _ in pairs], value, 0.0, aux)


def where(cond, x, y):
    # A tracked condition (an Array or Var, true where nonzero) is read
    # through a comparison, so its row guards a compiled replay: the mask is
    # kept as a constant, and a replay whose mask differs must re-record.
    c = np.array(compare(CODE["ne"], cond, 0.0) if _tracked(cond) else cond, bool)  # a copy of its own
    try:
        (hx, vx), (hy, vy) = operand(x), operand(y)
    except _scalarized.ObjectOperand:
        return _scalarized.elementwise(_scalar_where, _scalarized.elements((c, x, y)))
    value = np.where(c, vx, vy).astype(np.float64)
    return _record(CODE["where"], (hx, hy), value, 0.0,
                   (c, None if hx is not None else vx, None if hy is not None else vy))


# -- the NumPy protocols --

def array_ufunc(ufunc, method, inputs, kwargs):
    if method != "__call__" or kwargs:
        if _scalarized.active():  # np.multiply.outer(C, x) in the twin: as with x first (Scalarized's)
            return getattr(ufunc, method)(*_scalarized.elements(inputs), **_scalarized.elements(kwargs))
        raise TypeError(f"fastad does not implement numpy.{ufunc.__name__}.{method} "
                        f"{'with ' + ', '.join(kwargs) if kwargs else ''} on tracked values; use .value")
    if ufunc in _COMPARE_CODE:
        return compare(_COMPARE_CODE[ufunc], *inputs)
    if ufunc is np.matmul:
        return matmul(*inputs)
    if ufunc is np.positive:
        return inputs[0]
    code = _UFUNC_CODE.get(ufunc)
    if code is None:
        if _scalarized.active():
            return ufunc(*_scalarized.elements(inputs))
        raise TypeError(f"fastad does not implement numpy.{ufunc.__name__} on tracked values; "
                        "apply it to .value if no derivative is needed")
    return unary(code, inputs[0]) if ufunc.nin == 1 else binary(code, *inputs)


def _plain(name, out=None, dtype=None, **rest):
    """NumPy's keywords that a recorded result cannot honour are refused,
    not ignored: an `out` array left as it was, a `where=` mask skipped."""
    if out is not None:
        raise TypeError(f"numpy.{name} on tracked values returns a new value; out= is not supported")
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"numpy.{name} on tracked values computes in float64, not {np.dtype(dtype)}")
    if rest:
        raise TypeError(f"numpy.{name} on tracked values does not support {', '.join(map(repr, rest))}")


def _fn_einsum(subscripts, *operands, out=None, dtype=None, optimize=False, **kw):
    _plain("einsum", out, dtype, **kw)  # (optimize: one contraction of two operands has no path to pick)
    return einsum(subscripts, *operands)


def _fn_dot(a, b, out=None):
    _plain("dot", out)
    return dot(a, b)


def _fn_sum(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    _plain("sum", out, dtype, **kw)
    return sum(a, axis, keepdims)


def _fn_mean(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    _plain("mean", out, dtype, **kw)
    return mean(a, axis, keepdims)


def _fn_max(a, axis=None, out=None, keepdims=False, **kw):
    _plain("max", out, **kw)
    return amax(a, axis, keepdims)


def _fn_min(a, axis=None, out=None, keepdims=False, **kw):
    _plain("min", out, **kw)
    return amin(a, axis, keepdims)


def _fn_prod(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    _plain("prod", out, dtype, **kw)
    return prod(a, axis, keepdims)


def _fn_concatenate(arrays, axis=0, out=None, dtype=None, **kw):
    _plain("concatenate", out, dtype, **{k: v for k, v in kw.items() if k != "casting"})
    return concatenate(arrays, axis)


def _fn_stack(arrays, axis=0, out=None, dtype=None, **kw):
    _plain("stack", out, dtype, **{k: v for k, v in kw.items() if k != "casting"})
    return stack(arrays, axis)


def _fn_reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    return reshape(a, shape if shape is not None else newshape, order)


def _fn_clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None, **kw):
    # NumPy 2 names the bounds min and max too; NumPy passes np._NoValue for those not given
    _plain("clip", out, **kw)
    lo, hi = (None if v is np._NoValue else v for v in (a_min, a_max))
    lo = lo if min is None or min is np._NoValue else min
    hi = hi if max is None or max is np._NoValue else max
    return clip(a, lo, hi)


_FUNCTIONS = {
    np.sum: _fn_sum, np.mean: _fn_mean, np.max: _fn_max, np.amax: _fn_max, np.min: _fn_min,
    np.amin: _fn_min, np.prod: _fn_prod, np.reshape: _fn_reshape,
    np.transpose: lambda a, axes=None: transpose(a, axes), np.swapaxes: swapaxes,
    np.expand_dims: expand_dims, np.squeeze: lambda a, axis=None: squeeze(a, axis),
    np.ravel: ravel, np.concatenate: _fn_concatenate,
    np.stack: _fn_stack, np.where: where, np.clip: _fn_clip, np.outer: outer, np.einsum: _fn_einsum,
    np.dot: _fn_dot, np.matmul: matmul, np.shape: lambda a: np.shape(value_of(a)),
    np.ndim: lambda a: np.ndim(value_of(a)), np.size: lambda a, axis=None: np.size(value_of(a), axis),
}


def array_function(func, types, args, kwargs):
    impl = _FUNCTIONS.get(func)
    if impl is None:
        if _scalarized.active():  # np.hstack([C, x]) in the twin: as np.hstack([x, C]) (Scalarized's)
            return func(*_scalarized.elements(args), **_scalarized.elements(kwargs))
        raise TypeError(f"fastad does not implement numpy.{func.__name__} on tracked values "
                        "(the value would lose its derivative); apply it to .value if no "
                        "derivative is needed")
    try:
        return impl(*args, **kwargs)
    except _scalarized.ObjectOperand:  # np.einsum(.., C, x), np.outer(C, x) ... in the twin
        return func(*_scalarized.elements(args), **_scalarized.elements(kwargs))


# -- replays: a recorded row's value again, from new argument values --

def kernel(op, c, aux, shape):
    """The function that computes a recorded array row's value (op, c, aux
    as on the tape; `shape` the recorded value's) from new values of its
    arguments, which it takes positionally: one per argument slot (a, or a
    and b: `kernel_slots` says how many; None where the row took a constant,
    which aux keeps), or one per row of a variadic row. fad.compile makes
    one per row of a trace, so a replay pays no dispatch: where it can, the
    kernel is the NumPy function itself. Each computes as the function above
    that recorded the row (the same NumPy call, or the same helper), so a
    replay repeats the recording bit for bit; the values are the replay's
    own (nothing to copy). A one-number result may come back as a NumPy
    scalar."""
    return _KERNELS[_ops.OPS[op].name](int(c), aux, shape)


def kernel_slots(op, c):
    """How many values a row's kernel takes: 1 or 2, or -1 for one per row
    of a variadic row."""
    name = _ops.OPS[op].name
    if name == "map":
        return _ops.OPS[int(c)].arity
    return _ops.OPS[op].arity


def _k_binary(fn, aux):
    cx, cy = aux if aux is not None else (None, None)
    if cx is None and cy is None:
        return fn
    if cy is None:
        return lambda x, y: fn(cx, y)
    if cx is None:
        return lambda x, y: fn(x, cy)
    return lambda x, y: fn(cx, cy)


def _k_map(code, aux, shape):
    fn = _NUMPY.get(code)
    if fn is None:  # no ufunc: the core's C rule
        fn = functools.partial(map_value, code)
    return fn if _ops.OPS[code].arity == 1 else _k_binary(fn, aux)


def _k_reduction(name):
    fn = _REDUCE[name]
    return lambda code, aux, shape: functools.partial(fn, axis=aux[0], keepdims=aux[1])


def _k_getitem(code, key, shape):
    return lambda x: np.array(x[key], np.float64)


def _k_where(code, aux, shape):
    cond, cx, cy = aux
    return _k_binary(lambda x, y: np.where(cond, x, y).astype(np.float64), (cx, cy))


def _k_einsum(code, aux, shape):
    (xs, ys, out), cx, cy = aux
    return _k_binary(functools.partial(np.einsum, f"{xs},{ys}->{out}"), (cx, cy))


def _k_concatenate(code, aux, shape):
    rows, (axis, shapes, consts, flat) = aux
    return lambda *args: np.concatenate(
        _joined([k if v is None else v for v, k in zip(args, consts)], flat), axis=axis)


def _k_stack(code, aux, shape):
    rows, (axis, consts) = aux
    return lambda *args: np.stack(
        [np.asarray(k if v is None else v, np.float64) for v, k in zip(args, consts)], axis=axis)


_KERNELS = {
    "map": _k_map,
    "matmul": lambda code, aux, shape: _k_binary(np.matmul, aux),
    "compare": lambda code, aux, shape: _k_binary(_COMPARE_UFUNC[code], aux),
    "sum": _k_reduction("sum"), "amax": _k_reduction("amax"), "amin": _k_reduction("amin"),
    "prod": _k_reduction("prod"),
    "logsumexp": lambda code, aux, shape: lambda x: _logsumexp_value(x, *aux),
    "log_softmax": lambda code, axes, shape: lambda x: _log_softmax_value(x, axes),
    "reshape": lambda code, aux, shape: lambda x: np.reshape(x, () if shape is None else shape),  # None: to one number
    "transpose": lambda code, axes, shape: lambda x: np.transpose(x, axes),
    "getitem": _k_getitem, "where": _k_where, "einsum": _k_einsum,
    "concatenate": _k_concatenate, "stack": _k_stack,
}

"""The array ops beyond elementwise, one row each (a mean: two): linear
algebra (matmul, dot, outer, einsum), reductions (sum, max, min, prod,
mean, logsumexp, log_softmax, softmax), shapes and indexing (reshape,
transpose, getitem ...), concatenate, stack and where."""
import numbers

import numpy as np

from .array import _holds_tracked, _map, _operand, _record, _tracked
from .scalar_math import NAN


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

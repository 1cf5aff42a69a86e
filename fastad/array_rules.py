"""The backward rule of every array op, one function each (autograd style).

The compiled sweep stops at an array row that something reached and calls
its rule, `RULES[op](tape, i, a, b, c, aux, g)` with the row's columns and
adjoint g; the rule reads its arguments' values and adds one contribution
into each argument's adjoint.
Elementwise rows (`map`) take their partials from the scalar core's own
rules (map_vjp), so each scalar op's derivative is written once.
"""
import numpy as np

from fastad import ops as _ops
from fastad._core import map_vjp


def unbroadcast(g, shape):
    """Sum g down to `shape`, undoing NumPy broadcasting; () gives a float."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for k, n in enumerate(shape):
        if n == 1 and g.shape[k] != 1:
            g = g.sum(axis=k, keepdims=True)
    return float(g) if shape == () else g


def _kept(g, x_shape, axis, keepdims):
    """A reduction's adjoint with the reduced axes put back as length 1, so
    that it broadcasts against the reduced array (axis is normalised: a
    tuple or None). NumPy broadcasts it where it is used: np.broadcast_to
    costs about 3 us a call, more than a small array's whole rule."""
    g = np.asarray(g, np.float64)
    if keepdims:
        return g
    return g.reshape([1 if axis is None or k in axis else n for k, n in enumerate(x_shape)])


def _args(tape, a, b, aux_x=None, aux_y=None):
    x = tape._value(a) if a >= 0 else aux_x
    y = tape._value(b) if b >= 0 else aux_y
    return x, y


def _add(tape, row, g, fresh=False):
    """Add g into row's adjoint (g has the row's shape, or broadcasts to it);
    fresh: g is a new array this rule made, which the tape may keep without
    a copy."""
    if row >= 0:
        tape._add_adjoint(row, g, fresh)


def _map(tape, i, a, b, c, aux, g):
    consts = aux if aux is not None else (None, None)
    x, y = _args(tape, a, b, *consts)
    gx, gy = map_vjp(int(c), x, y if b >= 0 or aux is not None and aux[1] is not None else None,
                     tape._value(i), g)
    if a >= 0:
        _add(tape, a, unbroadcast(gx, np.shape(x)), fresh=True)
    if b >= 0:
        _add(tape, b, unbroadcast(gy, np.shape(y)), fresh=True)


def _matmul(tape, i, a, b, c, aux, g):
    x, y = _args(tape, a, b, *aux)
    if x.ndim == 1 and y.ndim == 1:  # an inner product: a scalar row
        _add(tape, a, g * y)
        _add(tape, b, g * x)
        return
    x2 = x[None, :] if x.ndim == 1 else x
    y2 = y[:, None] if y.ndim == 1 else y
    g2 = np.asarray(g, np.float64)
    if x.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if y.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    if a >= 0:
        gx = g2 @ np.swapaxes(y2, -1, -2)
        gx = gx[..., 0, :] if x.ndim == 1 else gx
        _add(tape, a, unbroadcast(gx, x.shape), fresh=True)
    if b >= 0:
        gy = np.swapaxes(x2, -1, -2) @ g2
        gy = gy[..., 0] if y.ndim == 1 else gy
        _add(tape, b, unbroadcast(gy, y.shape), fresh=True)


def _sum(tape, i, a, b, c, aux, g):
    x = tape._value(a)
    _add(tape, a, _kept(g, x.shape, *aux))  # broadcast into the adjoint's own array by _add_adjoint


def _extremum(tape, i, a, b, c, aux, g):
    # Ties split the adjoint evenly among the maxima (as maximum's 0.5 / 0.5);
    # a nan result (NumPy's max of data with a nan) is the nans' to share.
    x = tape._value(a)
    axis, keepdims = aux
    f = _kept(tape._value(i), x.shape, axis, keepdims)
    hit = x == f
    if np.isnan(f).any():  # (checked on the result, which is small: no nan pass over x otherwise)
        hit |= np.isnan(x) & np.isnan(f)
    count = hit.sum(axis=axis, keepdims=True)
    _add(tape, a, np.where(hit, _kept(g, x.shape, axis, keepdims) / count, 0.0), fresh=True)


def _prod(tape, i, a, b, c, aux, g):
    x = tape._value(a)
    axis, keepdims = aux
    _add(tape, a, _kept(g, x.shape, axis, keepdims) * _others_product(x, axis), fresh=True)


def _others_product(x, axis):
    """For each x_j, the product of the other factors of its reduction: the
    product of those before it times the product of those after it. No
    division, so exact at zeros, and no inf / inf or 0 * inf where the
    whole product overflows (f / x_j did both)."""
    axes = list(range(x.ndim)) if axis is None else list(axis)
    order = [k for k in range(x.ndim) if k not in axes] + axes  # the reduced axes last, as one
    moved = np.transpose(x, order)
    kept = moved.shape[:x.ndim - len(axes)]
    flat = moved.reshape(kept + (int(np.prod(moved.shape[len(kept):])),))  # (-1 is ambiguous when empty)
    before, after = np.ones_like(flat), np.ones_like(flat)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and nan are the IEEE answer
        before[..., 1:] = np.cumprod(flat[..., :-1], axis=-1)
        after[..., :-1] = np.cumprod(flat[..., :0:-1], axis=-1)[..., ::-1]
        others = before * after
    return np.transpose(others.reshape(moved.shape), np.argsort(order))


def _reshape(tape, i, a, b, c, aux, g):
    _add(tape, a, np.reshape(g, tape._value(a).shape))


def _transpose(tape, i, a, b, c, aux, g):
    _add(tape, a, np.transpose(g, None if aux is None else np.argsort(aux)))


def _getitem(tape, i, a, b, c, aux, g):
    gx = np.zeros(tape._value(a).shape)
    np.add.at(gx, aux, g)  # repeated indices accumulate
    _add(tape, a, gx, fresh=True)


def _concatenate(tape, i, a, b, c, aux, g):
    rows, (axis, shapes, consts, flat) = aux
    cuts = np.cumsum([s[axis] for s in shapes])[:-1]
    for row, piece, shape in zip(rows, np.split(np.asarray(g), cuts, axis=axis), shapes):
        if row >= 0:
            orig = np.shape(tape._value(row))
            _add(tape, row, piece.reshape(orig) if orig else float(piece.reshape(())))


def _stack(tape, i, a, b, c, aux, g):
    rows, (axis, consts) = aux
    g = np.asarray(g)
    for k, row in enumerate(rows):
        if row >= 0:
            piece = np.take(g, k, axis=axis)
            _add(tape, row, float(piece) if np.ndim(tape._value(row)) == 0 else piece)


def _where(tape, i, a, b, c, aux, g):
    cond, cx, cy = aux
    x, y = _args(tape, a, b, cx, cy)
    g = np.asarray(g)
    if a >= 0:
        _add(tape, a, unbroadcast(np.where(cond, g, 0.0), np.shape(x)))
    if b >= 0:
        _add(tape, b, unbroadcast(np.where(cond, 0.0, g), np.shape(y)))


def _einsum(tape, i, a, b, c, aux, g):
    (xs, ys, out), cx, cy = aux
    x, y = _args(tape, a, b, cx, cy)
    if a >= 0:
        _add(tape, a, _einsum_grad(g, out, y, ys, xs, np.shape(x)))
    if b >= 0:
        _add(tape, b, _einsum_grad(g, out, x, xs, ys, np.shape(y)))


def _einsum_grad(g, out, other, os_, target, shape):
    """d/d(target operand) of einsum: contract g with the other operand; an
    index only the target has (summed away) is broadcast back."""
    kept = "".join(ch for ch in target if ch in out or ch in os_)
    part = np.einsum(f"{out},{os_}->{kept}", g, other)
    full = part.reshape([part.shape[kept.index(ch)] if ch in kept else 1 for ch in target])
    # an index of size 1 here that einsum broadcast against the other operand's: summed back
    stretched = tuple(d for d, (n, m) in enumerate(zip(shape, full.shape)) if n == 1 and m != 1)
    if stretched:
        full = full.sum(axis=stretched, keepdims=True)
    return np.broadcast_to(full, shape).copy()


def _logsumexp(tape, i, a, b, c, aux, g):
    x = np.asarray(tape._value(a))  # (a Var's: a float)
    axis, keepdims = aux
    f = _kept(tape._value(i), x.shape, axis, keepdims)
    _add(tape, a, _kept(g, x.shape, axis, keepdims) * np.exp(x - f), fresh=True)


def _log_softmax(tape, i, a, b, c, axes, g):
    """y = x - logsumexp(x) along axes: d/dx = g - softmax(x) * sum(g), with
    softmax(x) = exp(y)."""
    g = np.asarray(g, np.float64)
    total = np.add.reduce(g, axis=axes, keepdims=True) if g.ndim else g
    _add(tape, a, g - np.exp(tape._value(i)) * total, fresh=True)


def _compare(tape, i, a, b, c, aux, g):
    """A guard (its bool array steered Python): no derivative, nothing to pass on."""


RULES = {_ops.BY_NAME[name].code: rule for name, rule in (
    ("map", _map), ("matmul", _matmul), ("sum", _sum), ("amax", _extremum), ("amin", _extremum),
    ("prod", _prod), ("reshape", _reshape), ("transpose", _transpose), ("getitem", _getitem),
    ("concatenate", _concatenate), ("stack", _stack), ("where", _where), ("einsum", _einsum),
    ("logsumexp", _logsumexp), ("log_softmax", _log_softmax), ("compare", _compare))}

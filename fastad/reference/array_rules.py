"""The derivatives of the array ops.

Each rule receives the tape, the row i, its adjoint g (an ndarray of the
row's shape, or a float for a scalar-valued row), and the adjoint list; it
adds g times the row's Jacobian, a vector-Jacobian product, into each
tracked argument's adjoint (``_pass``). Everything is written from the
definitions; nothing is shared with the compiled core's rules.
"""
import numpy as np

from .. import ops
from .scalar_math import _ARITY, _CODE, _NAME, DERIVATIVES, _elementwise


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

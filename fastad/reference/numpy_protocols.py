"""NumPy's protocols on Vars and Arrays: ``__array_ufunc__`` (``np.sin(v)``,
``ndarray * Array``) and ``__array_function__`` (``np.sum``, ``np.reshape``,
``np.where`` ...), dispatched to the reference's own ops."""
import numbers

import numpy as np

from .. import ops
from .array import _NUMPY_UFUNC, Array, _map, _operand
from .array_ops import (
    _dot, _einsum, _expand_dims, _matmul, _mean, _outer, _reduce, _reshape, _squeeze,
    _swapaxes, _transpose, concatenate, stack,
)
from .var import Var, _apply, _operator, clip, power, where


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

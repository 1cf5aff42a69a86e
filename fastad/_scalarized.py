"""One Var per number: the recordings that forward mode and second order replay.

For jvp, hvp, hessian and jacobian(mode="fwd"), compile records an array
function a second time (its scalarized twin: compiled.record(...,
scalarize=True)). Each ndarray argument arrives as a Scalarized array, an
object array of Vars, so every number is a scalar row and the trace sweeps
in C, where every op has its tangent and second-order rules. NumPy code
runs on such arrays element by element. fastad's own array builders would
make Array rows of their Vars instead (fad.stack, fad.concatenate, and
logsumexp, softmax and log_softmax, which stack object arrays): while a
scalarized recording runs (`recording`), fastad.array sends them here
(unless an operand is an Array of the function's own making), where they
build object arrays of scalar rows. A fad.Array f closes over that meets
those object arrays (C * x, np.dot(C, x)) is read element by element
(`elements`): scalar rows that compile makes constants of the trace.
"""
import contextlib
import threading

import numpy as np

from fastad import _tree
from fastad._core import _UFUNCS, Array, Var, _object_scalar, clip, elem, exp, log


class Scalarized(np.ndarray):
    """An object array of Vars that a recording hands to f in place of a
    float array. NumPy ufuncs on it go through fastad's scalar functions
    element by element (np.maximum splits ties 0.5 / 0.5 as fad.maximum
    does, instead of NumPy's own object comparison), and what NumPy
    functions make of it (np.concatenate, np.dot ...) is Scalarized too."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(type(v) is Array for v in inputs):  # x * C: C read element by element (`elements`)
            inputs = elements(inputs)
        if kwargs.get("dtype") is not None and np.dtype(kwargs["dtype"]).kind == "f":
            del kwargs["dtype"]  # np.sum(x, dtype=float): in Vars, as an Array's sum takes it
        if (method == "reduce" and ufunc in (np.maximum, np.minimum) and kwargs.get("out") is None
                and kwargs.get("dtype") is None and kwargs.get("initial", np._NoValue) is np._NoValue
                and kwargs.get("where", True) is True):
            return extremum(inputs[0], kwargs.get("axis", 0), kwargs.get("keepdims", False),
                            ufunc is np.maximum)  # np.max, a.max(axis) ...
        fn = _SCALAR_UFUNCS.get(ufunc) or _SCALAR_UFUNCS.get(ufunc.__name__)
        out = kwargs.pop("out", None)  # NumPy's own code passes it (np.mean's division; y += 1)
        if fn is not None and method == "__call__" and set(kwargs) <= {"casting", "subok"}:
            result = elementwise(fn, inputs)
        else:
            if out is not None:
                kwargs["out"] = tuple(_plain(out))
            result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
            if isinstance(result, np.ndarray) and result.dtype == object:
                result = result.view(Scalarized)
        if out is None:
            return result
        out[0].view(np.ndarray)[...] = result
        return out[0]

    def __array_function__(self, func, types, args, kwargs):
        # NumPy's own function, on the operands as they are (the ufuncs it
        # calls come back to __array_ufunc__: np.max's ties split). What it
        # makes (np.concatenate, np.stack, np.dot, np.where ...) is a plain
        # object array, on which the next ufunc would run NumPy's object loop
        # (elem.tanh(), a float's tanh, no Var.hypot, np.maximum's tie given
        # to one side): it is viewed as Scalarized again. One that fills a
        # float array from the Vars (np.gradient) is refused by their
        # float(): this module counts as NumPy's (fastad/_numpy_casts.py).
        if Array in types:  # np.dot(x, C): C read element by element (`elements`)
            return func(*elements(args), **elements(kwargs))
        return _scalarized_result(super().__array_function__(func, types, args, kwargs))

    def astype(self, dtype, *args, **kwargs):
        """As ndarray.astype; to a float dtype refused by the Vars' float()
        (called from this module: NumPy's), as fad.Array has no astype."""
        return super().astype(dtype, *args, **kwargs)

    @property
    def value(self):
        """The numbers, as an Array's .value: read, not recorded."""
        return _numbers(self.view(np.ndarray)).astype(np.float64)


def _scalarized_result(result):
    """A NumPy function's result, its object arrays (also those in a tuple
    or list: np.broadcast_arrays, np.split) as Scalarized arrays; other
    results (bools, indices, shapes, NotImplemented) as they are."""
    if type(result) is np.ndarray and result.dtype == object:
        return result.view(Scalarized)
    if type(result) is tuple or type(result) is list:
        return type(result)(_scalarized_result(r) for r in result)
    return result


def _plain(inputs):
    """Operands as NumPy sees them without asking fastad again: Scalarized
    arrays as plain object arrays, a Var in a 0-d object array."""
    return [v.view(np.ndarray) if isinstance(v, Scalarized) else _object_scalar(v) for v in inputs]


def elementwise(fn, inputs):
    """fn (a fastad function of numbers and Vars) over operands with
    broadcasting, element by element: a Scalarized array, or NumPy's bools
    for a comparison (a mask indexes). What NumPy code on Scalarized arrays
    makes, and also, while a scalarized recording runs (the core asks
    here), a Var with a float array, where a recording of its own would make
    one Array row, and fad.exp, fad.maximum ... of an object array, which
    would make a plain one."""
    with np.errstate(all="ignore"):  # IEEE results (nan, inf) are the answer, not a warning
        out = np.frompyfunc(fn, len(inputs), 1)(*_plain(inputs))
    if not (isinstance(out, np.ndarray) and out.dtype == object):
        return out
    return out.astype(bool) if fn in _COMPARISONS else out.view(Scalarized)


class ObjectOperand(TypeError):
    """fastad.array.operand raises it while a scalarized recording runs, for
    an object array of Vars beside a fad.Array (C * x, np.dot(C, x), C @ x
    for an Array C that f closes over): there it would stack the Vars into
    an Array row, which a scalar trace cannot hold. The front end's entry
    points catch it and do the op on object arrays instead, C read element
    by element (`elements`), as NumPy does when x comes first."""


def elements(v):
    """v (an operand, or a list, tuple or dict of them) as the twin computes
    on it: a fad.Array as a Scalarized array of its elements, each read as a
    scalar row (C[k]: compile makes those of an Array that f closes over
    constants of the trace, and a grad nested in f differentiates its own
    Array argument through them); an object array as a Scalarized one."""
    if type(v) is Array:
        out = np.empty(v.shape, dtype=object)
        out.ravel()[:] = [elem(v, k) for k in range(v.size)] if v.size else []
        return out.view(Scalarized)
    if isinstance(v, np.ndarray) and v.dtype == object:
        return v.view(Scalarized)
    if type(v) is list or type(v) is tuple:
        return type(v)(elements(e) for e in v)
    if type(v) is dict:  # a NumPy function's keyword arguments
        return {k: elements(e) for k, e in v.items()}
    return v


def ufunc(u, *inputs):
    """The ufunc u (one fastad has a scalar function for) on operands where
    an object array met a fad.Array (ObjectOperand), element by element."""
    return elementwise(_SCALAR_UFUNCS[u], elements(inputs))


_numbers = np.frompyfunc(lambda v: v.value if isinstance(v, Var) else v, 1, 1)


def extremum(x, axis, keepdims, largest):
    """max (largest) or min of x over axis, as the Array rule differentiates
    it: tied extremes (or the nans, where there are nans) share the
    derivative evenly, where NumPy's object max would hand it all to one
    (forward mode then disagreed with reverse mode at a tie)."""
    from fastad.array import _axis  # (fastad.array imports this module)
    x = _objects(x)
    axes = tuple(range(x.ndim)) if axis is None else _axis(axis, x.ndim)
    rest = [d for d in range(x.ndim) if d not in axes]
    moved = np.transpose(x, rest + list(axes)).reshape([x.shape[d] for d in rest] + [-1])
    out = np.empty(moved.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = _pick(list(moved[idx]), largest)
    if keepdims:
        out = out.reshape([1 if d in axes else n for d, n in enumerate(x.shape)])
    return out.item() if out.ndim == 0 else out.view(Scalarized)


def _pick(elems, largest):
    """The extreme of one reduction: its first tied extreme t plus, for each
    other one, (x_i - t) / k: exactly t, and 1/k to each of the k (up to an
    ulp). The comparisons that find them are recorded as guards, so a replay
    where another element leads, a tie breaks or a nan comes or goes
    re-records."""
    if not elems:
        raise ValueError(f"zero-size array to reduction operation {'maximum' if largest else 'minimum'} "
                         "which has no identity")
    values = [e.value if isinstance(e, Var) else float(e) for e in elems]
    has_nan = any(v != v for v in values)
    if has_nan:  # NumPy's max is nan: the nans share it
        tied = [i for i, e in enumerate(elems) if e != e]  # (on the elements: a guard each)
    else:
        best = max(values) if largest else min(values)
        tied = [i for i, v in enumerate(values) if v == best]
    t = elems[tied[0]]
    if not has_nan:  # the comparisons that found the extreme, each a guard
        ties = set(tied[1:])
        for i, e in enumerate(elems):
            if i in ties:
                e == t
            elif i != tied[0]:
                e < t if largest else e > t
    for i in tied[1:]:
        t = t + (elems[i] - elems[tied[0]]) / len(tied)
    return t


_SCALAR_UFUNCS = dict(_UFUNCS, clip=clip)  # the ufunc -> fastad function table of Var; np.clip's ufunc
_COMPARISONS = {_UFUNCS[u] for u in (np.less, np.less_equal, np.greater, np.greater_equal,
                                     np.equal, np.not_equal)}


def scalarized(treedef, leaves):
    """The arguments with one Var per number, arrays as Scalarized arrays."""
    it = iter(leaves)

    def leaf(td):
        if td == "f":
            return next(it)
        out = np.empty(td[1], dtype=object)
        out.ravel()[:] = [next(it) for _ in range(out.size)] if out.size else []
        return out.view(Scalarized)

    return _tree.rebuild(treedef, leaf)


_state = threading.local()


@contextlib.contextmanager
def recording(on=True):
    """While f runs for a scalarized recording (on), fastad.array's
    builders come here."""
    before = getattr(_state, "on", False)
    _state.on = on
    try:
        yield
    finally:
        _state.on = before


def active():
    return getattr(_state, "on", False)


def _objects(v):
    """v as an object array: a Var or a number is 0-d."""
    return np.asarray(v.view(np.ndarray) if isinstance(v, Scalarized) else v, dtype=object)


def stack(values, axis=0):
    if not len(values):
        raise ValueError("stack needs at least one value")
    return np.stack([_objects(v) for v in values], axis=axis).view(Scalarized)


def concatenate(arrays, axis=0):
    parts = [np.atleast_1d(_objects(a)) for a in arrays]
    if axis is None:
        parts = [p.ravel() for p in parts]
    return np.concatenate(parts, axis=0 if axis is None else axis).view(Scalarized)


_exp, _log = np.frompyfunc(exp, 1, 1), np.frompyfunc(log, 1, 1)


def _finite_or_zero(v):
    # compared, not converted: a replay whose max turns infinite re-records
    return v if -np.inf < v < np.inf else 0.0


def logsumexp(x, ax, keepdims):
    """fastad.array.logsumexp, element by element (ax: the resolved axes).
    The max taken out first is one of x's Vars (NumPy's object max compares
    them: guarded), so the recording holds for inputs whose maximum sits at
    the same place; the value and its derivatives do not depend on it."""
    x = _objects(x)
    if x.ndim == 0:  # one number: itself, as log(exp(x - x)) + x is (exactly, inf and nan too)
        return x[()]
    m = _max_out(x, ax)
    with np.errstate(divide="ignore"):  # log(0) = -inf: an empty sum's logsumexp
        value = _log(np.sum(_exp(x - m), axis=ax, keepdims=True)) + m
    if keepdims:
        return value.view(Scalarized)
    value = np.squeeze(value, axis=ax) if ax is not None else value.reshape(())
    return value.item() if value.ndim == 0 else value.view(Scalarized)


def _max_out(x, ax):
    """The max logsumexp and log_softmax take out of x (object array) first."""
    if not x.size:
        return np.zeros(np.sum(x, axis=ax, keepdims=True).shape)
    return np.frompyfunc(_finite_or_zero, 1, 1)(np.max(x, axis=ax, keepdims=True))


def log_softmax(x, ax):
    """fastad.array.log_softmax, element by element: (x - m) - log(sum(exp(x - m)))."""
    x = _objects(x)
    if x.ndim == 0:  # one number: x - x (0, or nan for an inf or a nan, as the array op gives)
        return x[()] - x[()]
    shifted = x - _max_out(x, ax)
    with np.errstate(divide="ignore"):
        return (shifted - _log(np.sum(_exp(shifted), axis=ax, keepdims=True))).view(Scalarized)


def softmax(x, ax):
    if np.ndim(x) == 0:  # one number: exp(x - x)
        return exp(log_softmax(x, ax))
    return _exp(_objects(log_softmax(x, ax))).view(Scalarized)

"""Scalar math with IEEE semantics: domain errors give nan, poles and
overflows give +-inf. The ``math`` module raises instead, so we wrap it.

``FORWARD`` gives the value of every op, ``DERIVATIVES`` its partial
derivatives, both keyed by op name; the lists after them hold the same by
op code, for the sweep. ``_elementwise`` applies a scalar rule to every
element of arrays (a ``map`` row's value where NumPy has no ufunc, and its
partials).
"""
import math

import numpy as np

from .. import ops

INF = math.inf
NAN = math.nan
_builtin_abs = abs  # the builtin (the package's own ``abs``, in var.py, records an op)


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
# entry here: their rules are _ARRAY_RULES, in array_rules.py.
_NAME = [spec.name for spec in ops.OPS]
_ARITY = [spec.arity for spec in ops.OPS]
_FORWARD = [FORWARD.get(spec.name) for spec in ops.OPS]
_PARTIALS = [DERIVATIVES.get(spec.name) if spec.kind != "array" else None
             for spec in ops.OPS]
_CODE = {spec.name: spec.code for spec in ops.OPS}
_INPUT = _CODE["input"]
_ARRAY_INPUT = _CODE["array_input"]


def _elementwise(fn, nout, *arrays):
    """Apply a scalar Python function to every element (with broadcasting);
    float64 result(s)."""
    out = np.frompyfunc(fn, len(arrays), nout)(*arrays)
    if nout == 1:
        return np.asarray(out, dtype=np.float64)
    return tuple(np.asarray(o, dtype=np.float64) for o in out)

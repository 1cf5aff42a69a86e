# Part of fastad/_core.pyx (included there).
# The math functions of API.md, on Vars, Arrays and plain numbers.

# ==== the math functions =====================================================

cdef object elementwise(op_t op, tuple args, str name):
    """An op over ndarrays (args: its one or two operands): float arrays in a
    C loop (map_value, the same rule as for Vars), object arrays (of Vars)
    element by element."""
    for v in args:
        refuse_masked(v, f"fad.{name}()")
    arrays = [np.asarray(v) for v in args]
    if any(a.dtype == object for a in arrays):
        if all(a.ndim == 0 for a in arrays):  # one element each: the op once, on the elements
            items = [float(v) if isinstance(v, np.bool_) else v for v in (a[()] for a in arrays)]  # as NumPy reads a bool
            if not all(type(v) is Var or is_number(v) for v in items):  # None, a str ...
                raise TypeError(f"fad.{name}() takes real numbers, Vars or arrays of them, got "
                                + " and ".join(type(v).__name__ for v in items))
            return unary(op, items[0]) if len(items) == 1 else binary(op, items[0], items[1])
        fn = (lambda u: unary(op, u)) if len(args) == 1 else (lambda u, v: binary(op, u, v))
        if front()._scalarized.active():  # compile's twin: its arrays stay Scalarized (np.maximum's ties next)
            return front()._scalarized.elementwise(fn, arrays)
        return np.frompyfunc(fn, len(args), 1)(*arrays)
    for v, a in zip(args, arrays):
        if a.dtype.kind not in "fiub":
            raise TypeError(f"fad.{name}() takes real numbers, Vars or arrays of them, got {type(v).__name__}"
                            + (f" of dtype {a.dtype}" if isinstance(v, np.ndarray) else ""))
    out = map_value(op, *arrays)
    if _debug_nans:  # as plain_value does for a number
        array_nan_check(op, (), out, 0.0, tuple(a.astype(np.float64) for a in arrays))
    return float(out) if out.ndim == 0 else out  # numbers in (np.bool_, 0-d arrays): a number out


cdef double plain_value(op_t op, double x, double y) except? -1.0:
    """op on plain numbers: a float, checked by debug_nans as a Var's op is."""
    cdef double v = op_value(op, x, y)
    if _debug_nans and v != v and x == x and y == y:
        args = (x, y)[:_ops_table.OPS[op].arity]
        raise NanError(f"fastad: op '{_ops_table.OPS[op].name}' made nan from inputs with no nan {args}")
    return v


cdef object unary(op_t op, object x):
    if type(x) is Var:
        return unop(op, <Var>x)
    if type(x) is Array:
        return array_unary(op, x)
    if is_number(x):
        return plain_value(op, number(x), 0.0)
    return elementwise(op, (x,), _ops_table.OPS[op].name)


cdef object binary(op_t op, object x, object y):
    cdef object r = NotImplemented
    if type(x) is Array or type(y) is Array:
        return array_binary(op, x, y)
    if type(x) is Var:
        r = binop(op, <Var>x, y)
    elif type(y) is Var:
        r = rbinop(op, <Var>y, x)
    elif is_number(x) and is_number(y):
        return plain_value(op, number(x), number(y))
    if r is NotImplemented:
        if var_with_float_array(x, y):
            if front()._scalarized.active():  # compile's twin: one scalar row per element
                return front()._scalarized.elementwise(lambda u, v: binary(op, u, v), (x, y))
            return array_binary(op, x, y)  # an Array, as np.maximum(v, a) and v * a give
        return elementwise(op, (x, y), _ops_table.OPS[op].name)
    return r


cdef bint var_with_float_array(object x, object y):
    """Whether one of x, y is a Var and the other a numeric ndarray of one
    or more dimensions: their op is one array row, not an object array of
    one Var per element."""
    if type(x) is not Var and type(y) is not Var:
        return False
    return any(isinstance(v, np.ndarray) and v.ndim and v.dtype.kind in "fiub" for v in (x, y))


def sqrt(x):
    """Square root; sqrt'(0) = inf.

    >>> fad.sqrt(4.0)
    2.0
    """
    return unary(OP_SQRT, x)

def cbrt(x):
    """Cube root.

    >>> fad.cbrt(8.0)
    2.0
    """
    return unary(OP_CBRT, x)

def square(x):
    """x*x.

    >>> fad.square(3.0)
    9.0
    """
    return unary(OP_SQUARE, x)

def exp(x):
    """e**x.

    >>> fad.exp(0.0)
    1.0
    """
    return unary(OP_EXP, x)

def expm1(x):
    """e**x - 1, accurate near 0.

    >>> fad.expm1(0.0)
    0.0
    """
    return unary(OP_EXPM1, x)

def log(x):
    """Natural log; log(0) = -inf, log(-1) = nan.

    >>> fad.log(1.0)
    0.0
    """
    return unary(OP_LOG, x)

def log1p(x):
    """log(1 + x), accurate near 0.

    >>> fad.log1p(0.0)
    0.0
    """
    return unary(OP_LOG1P, x)

def log2(x):
    """Base-2 log.

    >>> fad.log2(8.0)
    3.0
    """
    return unary(OP_LOG2, x)

def log10(x):
    """Base-10 log.

    >>> fad.log10(100.0)
    2.0
    """
    return unary(OP_LOG10, x)

def sin(x):
    """Sine.

    >>> fad.sin(0.0)
    0.0
    """
    return unary(OP_SIN, x)

def cos(x):
    """Cosine.

    >>> fad.cos(0.0)
    1.0
    """
    return unary(OP_COS, x)

def tan(x):
    """Tangent.

    >>> fad.tan(0.0)
    0.0
    """
    return unary(OP_TAN, x)

def arcsin(x):
    """Inverse sine.

    >>> fad.arcsin(0.0)
    0.0
    """
    return unary(OP_ARCSIN, x)

def arccos(x):
    """Inverse cosine.

    >>> fad.arccos(1.0)
    0.0
    """
    return unary(OP_ARCCOS, x)

def arctan(x):
    """Inverse tangent.

    >>> fad.arctan(0.0)
    0.0
    """
    return unary(OP_ARCTAN, x)

def sinh(x):
    """Hyperbolic sine.

    >>> fad.sinh(0.0)
    0.0
    """
    return unary(OP_SINH, x)

def cosh(x):
    """Hyperbolic cosine.

    >>> fad.cosh(0.0)
    1.0
    """
    return unary(OP_COSH, x)

def tanh(x):
    """Hyperbolic tangent.

    >>> fad.tanh(0.0)
    0.0
    """
    return unary(OP_TANH, x)

def erf(x):
    """The error function.

    >>> fad.erf(0.0)
    0.0
    """
    return unary(OP_ERF, x)

def sigmoid(x):
    """1 / (1 + e**-x), computed without overflow.

    >>> fad.sigmoid(0.0)
    0.5
    """
    return unary(OP_SIGMOID, x)

def relu(x):
    """max(x, 0); relu'(0) = 0.

    >>> fad.relu(-2.0)
    0.0
    """
    return unary(OP_RELU, x)

def abs(x):
    """|x|; abs'(0) = 0.

    >>> fad.abs(-2.0)
    2.0
    """
    return unary(OP_ABS, x)

def sign(x):
    """-1, 0 or 1 (nan for nan); its derivative is 0.

    >>> fad.sign(-2.0)
    -1.0
    """
    return unary(OP_SIGN, x)

def maximum(x, y):
    """The larger of x and y; a tie splits the adjoint 0.5 / 0.5.

    >>> fad.maximum(1.0, 2.0)
    2.0
    """
    return binary(OP_MAXIMUM, x, y)

def minimum(x, y):
    """The smaller of x and y; a tie splits the adjoint 0.5 / 0.5.

    >>> fad.minimum(1.0, 2.0)
    1.0
    """
    return binary(OP_MINIMUM, x, y)

def arctan2(y, x):
    """The angle of the point (x, y), as np.arctan2(y, x).

    >>> fad.arctan2(0.0, 1.0)
    0.0
    """
    return binary(OP_ARCTAN2, y, x)

def hypot(x, y):
    """sqrt(x*x + y*y) without overflow; partials are 0 at the origin.

    >>> fad.hypot(3.0, 4.0)
    5.0
    """
    return binary(OP_HYPOT, x, y)

def power(x, y):
    """x ** y; power(x, 2) records a square.

    >>> fad.power(2.0, 3.0)
    8.0
    """
    if type(x) is Var:
        return (<Var>x).__pow__(y, None) if is_number(y) else binary(OP_POWER, x, y)
    if type(x) is Array:
        return front().power(x, y)
    return binary(OP_POWER, x, y)

def where(cond, x, y):
    """x where cond is true, else y. On a Var condition the choice is
    recorded as a guard.

    >>> fad.where(fad.Var(2.0) > 1.0, 1.0, 2.0)
    1.0
    """
    if any(type(v) is Array for v in (cond, x, y)):
        return front().where(cond, x, y)
    if isinstance(cond, np.ndarray) and cond.ndim:
        if cond.dtype == object or any(isinstance(v, np.ndarray) and v.dtype == object for v in (x, y)):
            return np.frompyfunc(where, 3, 1)(cond, x, y)
        if type(x) is Var or type(y) is Var:  # a Var with a float array
            if front()._scalarized.active():  # compile's twin: one scalar row per element
                return front()._scalarized.elementwise(where, (cond, x, y))
            return front().where(cond, x, y)  # one Array row, as in the reference
        return np.where(cond, x, y)
    return x if cond else y

def clip(x, lo, hi):
    """minimum(maximum(x, lo), hi); a None bound is no bound, as in np.clip.

    >>> fad.clip(5.0, 0.0, 1.0)
    1.0
    """
    if lo is None and hi is None:
        raise ValueError("clip needs a lower or an upper bound (or both)")
    if lo is not None:
        x = maximum(x, lo)
    return x if hi is None else minimum(x, hi)


_UFUNCS = {
    np.add: lambda x, y: x + y, np.subtract: lambda x, y: x - y,
    np.multiply: lambda x, y: x * y, np.true_divide: lambda x, y: x / y,
    np.power: power, np.float_power: power, np.negative: lambda x: -x, np.positive: lambda x: x,
    np.absolute: abs, np.fabs: abs, np.sqrt: sqrt, np.cbrt: cbrt, np.square: square,
    np.exp: exp, np.expm1: expm1, np.log: log, np.log1p: log1p, np.log2: log2, np.log10: log10,
    np.sin: sin, np.cos: cos, np.tan: tan, np.arcsin: arcsin, np.arccos: arccos, np.arctan: arctan,
    np.sinh: sinh, np.cosh: cosh, np.tanh: tanh, np.sign: sign,
    np.maximum: maximum, np.minimum: minimum,  # (not fmax, fmin: they skip a nan, maximum keeps it)
    np.arctan2: arctan2, np.hypot: hypot,
    np.less: lambda x, y: x < y, np.less_equal: lambda x, y: x <= y,
    np.greater: lambda x, y: x > y, np.greater_equal: lambda x, y: x >= y,
    np.equal: lambda x, y: x == y, np.not_equal: lambda x, y: x != y,
}

# The op table as the core sees it: tests check it against fastad/ops.py.
OP_CODES = dict((("input", OP_INPUT), ("add", OP_ADD), ("sub", OP_SUB), ("mul", OP_MUL), ("div", OP_DIV), ("power", OP_POWER), ("neg", OP_NEG), ("square", OP_SQUARE), ("sqrt", OP_SQRT), ("cbrt", OP_CBRT), ("exp", OP_EXP), ("expm1", OP_EXPM1), ("log", OP_LOG), ("log1p", OP_LOG1P), ("log2", OP_LOG2), ("log10", OP_LOG10), ("sin", OP_SIN), ("cos", OP_COS), ("tan", OP_TAN), ("arcsin", OP_ARCSIN), ("arccos", OP_ARCCOS), ("arctan", OP_ARCTAN), ("sinh", OP_SINH), ("cosh", OP_COSH), ("tanh", OP_TANH), ("erf", OP_ERF), ("sigmoid", OP_SIGMOID), ("relu", OP_RELU), ("abs", OP_ABS), ("sign", OP_SIGN), ("maximum", OP_MAXIMUM), ("minimum", OP_MINIMUM), ("arctan2", OP_ARCTAN2), ("hypot", OP_HYPOT), ("lt", OP_LT), ("le", OP_LE), ("gt", OP_GT), ("ge", OP_GE), ("eq", OP_EQ), ("ne", OP_NE), ("array_input", OP_ARRAY_INPUT), ("elem", OP_ELEM), ("map", OP_MAP), ("matmul", OP_MATMUL), ("sum", OP_SUM), ("amax", OP_AMAX), ("amin", OP_AMIN), ("prod", OP_PROD), ("reshape", OP_RESHAPE), ("transpose", OP_TRANSPOSE), ("getitem", OP_GETITEM), ("concatenate", OP_CONCATENATE), ("stack", OP_STACK), ("where", OP_WHERE), ("einsum", OP_EINSUM), ("logsumexp", OP_LOGSUMEXP), ("compare", OP_COMPARE), ("log_softmax", OP_LOG_SOFTMAX),))
N_OP_CODES = N_OPS


def op_piecewise_py(int op):
    """Whether the core tells pieces of op apart (for tests)."""
    return 0 <= op < N_OPS and op_piecewise(<op_t>op)


def op_value_py(int op, double x, double y=0.0):
    """The core's value rule for one op (for tests and printers)."""
    if not 0 <= op < N_OPS:
        raise ValueError(f"no op code {op}")
    return op_value(<op_t>op, x, y)


def op_partials_py(int op, double x, double y=0.0):
    """The core's partials (d/dx, d/dy) for one op at (x, y) (for tests and printers)."""
    if not 0 <= op < N_OPS:
        raise ValueError(f"no op code {op}")
    cdef Partials d = op_partials(<op_t>op, x, y, op_value(<op_t>op, x, y), True)
    return d.dx, d.dy

# cython: language_level=3
"""Every op's value and partial derivatives, side by side, in code order.

This is the only place in the core that names an op's mathematics (CasADi's
fcn/der). The sweeps call these two functions and only multiply partials by
adjoints. Arguments: x, y are the op's argument values (a constant argument
arrives as its value c); f is the op's own output, already on the tape, so
rules reuse it (exp' = f, tanh' = 1 - f*f). Unary ops ignore y.

All arithmetic is C double arithmetic: a domain error gives the IEEE result
(nan, inf), never an exception.
"""
from libc.math cimport (sin, cos, tan, asin, acos, atan, sinh, cosh, tanh, exp,
                        expm1, log, log1p, log2, log10, sqrt, cbrt, erf, atan2,
                        hypot, pow, fabs)
from fastad._ops cimport *

cdef extern from *:
    """
    #if defined(__GLIBC__)
    #define fastad_sincos(x, s, c) sincos((x), (s), (c))
    #else
    #define fastad_sincos(x, s, c) (*(s) = sin(x), *(c) = cos(x))
    #endif
    #define FASTAD_LN2 0.6931471805599453
    #define FASTAD_LN10 2.302585092994046
    #define FASTAD_2_SQRTPI 1.1283791670955126
    """
    double FASTAD_LN2, FASTAD_LN10, FASTAD_2_SQRTPI
    void fastad_sincos(double x, double* s, double* c) noexcept nogil


cdef inline double sigmoid_value(double x) noexcept nogil:
    # Two branches so that exp never overflows: 1/(1+e^-x) for x >= 0,
    # e^x/(1+e^x) below (nan falls through to the second and stays nan).
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef inline bint op_arith(op_t op) noexcept nogil:
    """Whether op is one of the arithmetic ops (add, sub, mul, div, neg,
    square): most rows, and the ones a replay specializes by argument shape
    (fastad/_sweeps.pxd, SHAPES)."""
    return OP_ADD <= op <= OP_SQUARE and op != OP_POWER


cdef inline double arith_value(op_t op, double x, double y) noexcept nogil:
    """op_value of an arithmetic op. Small, so every call with a constant op
    inlines to the one operation."""
    if op == OP_ADD:
        return x + y
    elif op == OP_SUB:
        return x - y
    elif op == OP_MUL:
        return x * y
    elif op == OP_DIV:
        return x / y
    elif op == OP_NEG:
        return -x
    return x * x  # OP_SQUARE


cdef inline double op_value(op_t op, double x, double y) noexcept nogil:
    """f = op(x, y). The arithmetic ops are small, so the compiler inlines
    this into every sweep (most rows are arithmetic). The others are in
    elementary_value, which it keeps out of line, one big function with two
    callers (here and op_branch): each of them calls libm anyway. As one
    function of all ops, this was itself out of line, a call on every row
    of a replay's forward sweep: 260 us against 142 inlined, on Rosenbrock
    10k."""
    if op_arith(op):
        return arith_value(op, x, y)
    return elementary_value(op, x, y)


cdef inline double elementary_value(op_t op, double x, double y) noexcept nogil:
    """op_value of every op but the arithmetic ones."""
    if op == OP_POWER:
        return pow(x, y)
    elif op == OP_SQRT:
        return sqrt(x)
    elif op == OP_CBRT:
        return cbrt(x)
    elif op == OP_EXP:
        return exp(x)
    elif op == OP_EXPM1:
        return expm1(x)
    elif op == OP_LOG:
        return log(x)
    elif op == OP_LOG1P:
        return log1p(x)
    elif op == OP_LOG2:
        return log2(x)
    elif op == OP_LOG10:
        return log10(x)
    elif op == OP_SIN:
        return sin(x)
    elif op == OP_COS:
        return cos(x)
    elif op == OP_TAN:
        return tan(x)
    elif op == OP_ARCSIN:
        return asin(x)
    elif op == OP_ARCCOS:
        return acos(x)
    elif op == OP_ARCTAN:
        return atan(x)
    elif op == OP_SINH:
        return sinh(x)
    elif op == OP_COSH:
        return cosh(x)
    elif op == OP_TANH:
        return tanh(x)
    elif op == OP_ERF:
        return erf(x)
    elif op == OP_SIGMOID:
        return sigmoid_value(x)
    elif op == OP_RELU:
        return x if not (x <= 0.0) else 0.0  # nan stays nan, as np.maximum(nan, 0)
    elif op == OP_ABS:
        return fabs(x)
    elif op == OP_SIGN:
        if x > 0.0:
            return 1.0
        elif x < 0.0:
            return -1.0
        return 0.0 if x == 0.0 else x  # +0.0 for either zero, nan for nan: as np.sign
    elif op == OP_MAXIMUM:
        if x > y:
            return x
        elif y > x:
            return y
        return x + y if x != x or y != y else x  # nan propagates, as np.maximum
    elif op == OP_MINIMUM:
        if x < y:
            return x
        elif y < x:
            return y
        return x + y if x != x or y != y else x
    elif op == OP_ARCTAN2:
        return atan2(x, y)
    elif op == OP_HYPOT:
        return hypot(x, y)
    elif op == OP_LT:
        return 1.0 if x < y else 0.0
    elif op == OP_LE:
        return 1.0 if x <= y else 0.0
    elif op == OP_GT:
        return 1.0 if x > y else 0.0
    elif op == OP_GE:
        return 1.0 if x >= y else 0.0
    elif op == OP_EQ:
        return 1.0 if x == y else 0.0
    elif op == OP_NE:
        return 1.0 if x != y else 0.0
    return 0.0  # OP_INPUT: its value is set by whoever pushes it


cdef struct Partials:
    double dx  # df/dx
    double dy  # df/dy


cdef inline Partials arith_partials(op_t op, double x, double y, double f) noexcept nogil:
    """op_partials of an arithmetic op (op_arith), small like arith_value."""
    cdef Partials d
    d.dy = 0.0
    if op == OP_ADD:
        d.dx = 1.0
        d.dy = 1.0
    elif op == OP_SUB:
        d.dx = 1.0
        d.dy = -1.0
    elif op == OP_MUL:
        d.dx = y
        d.dy = x
    elif op == OP_DIV:
        d.dx = 1.0 / y
        d.dy = -f / y
    elif op == OP_NEG:
        d.dx = -1.0
    else:  # OP_SQUARE
        d.dx = 2.0 * x
    return d


cdef inline Partials op_partials(op_t op, double x, double y, double f, bint need_dy) noexcept nogil:
    """(df/dx, df/dy). need_dy is false when y is a folded constant, so an
    expensive partial nobody reads (power's log) is skipped."""
    cdef double r
    cdef Partials d
    if op_arith(op):
        return arith_partials(op, x, y, f)
    d.dx = 0.0
    d.dy = 0.0
    if op == OP_POWER:
        # y x^(y-1) is 0 * inf = nan at x = 0, y = 0, where x^0 = 1 is flat;
        # f log x is 0 * -inf at x = 0, where 0^y is flat in y (autograd's
        # and JAX's convention; CasADi issue #104 is the same trap).
        d.dx = y * pow(x, y - 1.0) if y != 0.0 else 0.0
        if need_dy:
            d.dy = f * log(x) if x != 0.0 else 0.0
    elif op == OP_SQRT:
        d.dx = 0.5 / fabs(f)  # inf at 0; fabs: sqrt(-0.0) is -0.0, and 0.5 / -0.0 -inf
    elif op == OP_CBRT:
        d.dx = 1.0 / (3.0 * f * f)  # inf at 0
    elif op == OP_EXP:
        d.dx = f
    elif op == OP_EXPM1:
        d.dx = f + 1.0
    elif op == OP_LOG:
        d.dx = 1.0 / x
    elif op == OP_LOG1P:
        d.dx = 1.0 / (1.0 + x)
    elif op == OP_LOG2:
        d.dx = 1.0 / (x * FASTAD_LN2)
    elif op == OP_LOG10:
        d.dx = 1.0 / (x * FASTAD_LN10)
    elif op == OP_SIN:
        d.dx = cos(x)
    elif op == OP_COS:
        d.dx = -sin(x)
    elif op == OP_TAN:
        d.dx = 1.0 + f * f
    elif op == OP_ARCSIN:
        d.dx = 1.0 / sqrt(1.0 - x * x)
    elif op == OP_ARCCOS:
        d.dx = -1.0 / sqrt(1.0 - x * x)
    elif op == OP_ARCTAN:
        d.dx = 1.0 / (1.0 + x * x)
    elif op == OP_SINH:
        d.dx = cosh(x)
    elif op == OP_COSH:
        d.dx = sinh(x)
    elif op == OP_TANH:
        d.dx = 1.0 - f * f
    elif op == OP_ERF:
        d.dx = FASTAD_2_SQRTPI * exp(-x * x)
    elif op == OP_SIGMOID:
        d.dx = f * (1.0 - f)
    elif op == OP_RELU:
        d.dx = 1.0 if x > 0.0 else 0.0  # relu'(0) = 0
    elif op == OP_ABS:
        d.dx = 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)  # abs'(0) = 0; nan at nan, sign(nan)
    elif op == OP_MAXIMUM or op == OP_MINIMUM:
        # The adjoint goes to the argument that was chosen; a tie splits it.
        if x == y:
            d.dx = 0.5
            d.dy = 0.5
        elif (x > y) == (op == OP_MAXIMUM) and x == x and y == y:
            d.dx = 1.0
        else:  # y chosen, or a nan: y takes it (maximum and minimum alike)
            d.dy = 1.0
    elif op == OP_ARCTAN2:
        r = x * x + y * y  # f = atan2(x, y): x is the numerator
        d.dx = y / r
        d.dy = -x / r
    elif op == OP_HYPOT:
        if f == 0.0:  # hypot(x, 0) = |x| and abs'(0) = 0
            d.dx = 0.0
        else:
            d.dx = x / f
            d.dy = y / f
    # sign, guards and inputs: no derivative (both partials stay 0)
    return d


cdef inline double op_record(op_t op, double x, double y, bint need_dy, Partials* d) noexcept nogil:
    """f = op_value(op, x, y), and op_partials into d: what recording a row
    needs. sin and cos take both from one sincos call: their arguments are
    reduced once instead of twice (recording sin(2.0) with a separate cos
    cost 45 ns more; glibc's sincos gives sin's and cos's bits)."""
    cdef double s, co
    if op == OP_SIN or op == OP_COS:
        fastad_sincos(x, &s, &co)
        d.dy = 0.0
        if op == OP_SIN:
            d.dx = co
            return s
        d.dx = -s
        return co
    cdef double f = op_value(op, x, y)
    d[0] = op_partials(op, x, y, f, need_dy)
    return f


cdef struct Second:
    double dxx  # d2f/dx2
    double dxy  # d2f/dxdy
    double dyy  # d2f/dy2


cdef inline Second arith_second(op_t op, double x, double y, double f) noexcept nogil:
    """op_second of an arithmetic op (op_arith), small like arith_partials."""
    cdef Second s
    s.dxx = 0.0
    s.dxy = 0.0
    s.dyy = 0.0
    if op == OP_MUL:
        s.dxy = 1.0
    elif op == OP_DIV:
        s.dxy = -1.0 / (y * y)
        s.dyy = 2.0 * f / (y * y)
    elif op == OP_SQUARE:
        s.dxx = 2.0
    return s  # add, sub, neg: linear


cdef inline Second op_second(op_t op, double x, double y, double f) noexcept nogil:
    """Second partials, for Hessian-vector products (forward over reverse).
    Flat pieces (kinks, guards, linear ops) are 0."""
    cdef Second s
    cdef double r, t
    if op_arith(op):
        return arith_second(op, x, y, f)
    s.dxx = 0.0
    s.dxy = 0.0
    s.dyy = 0.0
    if op == OP_POWER:
        # The same flat cases as the first partials: y(y-1) = 0 and x = 0.
        s.dxx = y * (y - 1.0) * pow(x, y - 2.0) if y * (y - 1.0) != 0.0 else 0.0
        if x != 0.0:
            t = log(x)
            s.dxy = pow(x, y - 1.0) * (1.0 + y * t)
            s.dyy = f * t * t
    elif op == OP_SQRT:
        s.dxx = -0.25 / (f * f * fabs(f))  # -inf at 0, -0.0 too (as the first partial)
    elif op == OP_CBRT:
        s.dxx = -2.0 / (9.0 * f * f * f * f * f)
    elif op == OP_EXP:
        s.dxx = f
    elif op == OP_EXPM1:
        s.dxx = f + 1.0
    elif op == OP_LOG:
        s.dxx = -1.0 / (x * x)
    elif op == OP_LOG1P:
        s.dxx = -1.0 / ((1.0 + x) * (1.0 + x))
    elif op == OP_LOG2:
        s.dxx = -1.0 / (x * x * FASTAD_LN2)
    elif op == OP_LOG10:
        s.dxx = -1.0 / (x * x * FASTAD_LN10)
    elif op == OP_SIN or op == OP_COS:
        s.dxx = -f
    elif op == OP_TAN:
        s.dxx = 2.0 * f * (1.0 + f * f)
    elif op == OP_ARCSIN:
        t = 1.0 - x * x
        s.dxx = x / (t * sqrt(t))
    elif op == OP_ARCCOS:
        t = 1.0 - x * x
        s.dxx = -x / (t * sqrt(t))
    elif op == OP_ARCTAN:
        t = 1.0 + x * x
        s.dxx = -2.0 * x / (t * t)
    elif op == OP_SINH or op == OP_COSH:
        s.dxx = f
    elif op == OP_TANH:
        s.dxx = -2.0 * f * (1.0 - f * f)
    elif op == OP_ERF:
        s.dxx = -2.0 * x * FASTAD_2_SQRTPI * exp(-x * x)
    elif op == OP_SIGMOID:
        s.dxx = f * (1.0 - f) * (1.0 - 2.0 * f)
    elif op == OP_ARCTAN2:
        r = x * x + y * y
        s.dxx = -2.0 * x * y / (r * r)
        s.dxy = (x * x - y * y) / (r * r)
        s.dyy = 2.0 * x * y / (r * r)
    elif op == OP_HYPOT:
        if f != 0.0:
            t = f * f * f
            s.dxx = y * y / t
            s.dxy = -x * y / t
            s.dyy = x * x / t
    return s


cdef inline bint op_piecewise(op_t op) noexcept nogil:
    """Whether op_branch tells pieces of op apart: the kinks and guards of
    fastad/ops.py (tests/test_ops.py checks the two agree)."""
    return (op == OP_RELU or op == OP_ABS or op == OP_SIGN or op == OP_MAXIMUM
            or op == OP_MINIMUM or OP_LT <= op <= OP_NE)


cdef inline int op_branch(op_t op, double x, double y) noexcept nogil:
    """Which piece (0, 1, 2 ...) of a piecewise op (x, y) falls on: a replay
    whose inputs land on another piece than the recording did must not
    reuse the tape. Smooth ops have one piece (0)."""
    if op == OP_RELU:
        return x > 0.0
    elif op == OP_ABS or op == OP_SIGN:  # 0: below, 1: at, 2: above the kink, 3: nan
        return 1 + (x > 0.0) - (x < 0.0) + 2 * (x != x)
    elif op == OP_MAXIMUM or op == OP_MINIMUM:
        return 1 + (x > y) - (x < y) + 2 * (x != x or y != y)
    elif OP_LT <= op <= OP_NE:
        return elementary_value(op, x, y) != 0.0
    return 0

# Part of fastad/_core.pyx (included there).
# Elementwise ops on arrays in C: the map rule over whole arrays, and the C route that records and sweeps the common cases.

# ==== elementwise ops on arrays, in C ========================================
# An elementwise op on arrays is one `map` row whose c is the scalar op code,
# so its derivative is the scalar rule of fastad/_rules.pxd, applied per
# element. Two routes reach it:
#
# * the C route (map_record, map_backward), for the common cases: operands
#   that are Python numbers, or Arrays and real ndarrays of the result's
#   shape, of its last axes (a bias row: (n,) against (m, n)) or of a run of
#   its axes with 1s around (a column: (m, 1) against (m, n), as a keepdims
#   reduction makes; see repeat_in).
#   The value still comes from NumPy's ufunc (NumPy's numbers, NumPy's
#   warnings), the row is pushed directly, and the backward pass adds into
#   the arguments' adjoints in place, in one C loop (map_adjoints).
# * the general route (fastad/array.py, array_rules._map): any other
#   broadcasting, Vars, 0-d arrays, no_grad and debug_nans. It calls
#   map_value and map_vjp below and sums adjoints back to shape with NumPy.
#
# Both give the same numbers (tests/test_array.py runs each against the
# reference and proves which one ran).

def map_value(int op, x, y=None):
    """op (a scalar op code) applied elementwise with broadcasting, by the
    same C rule as for Vars: float64 result (the loop is map_values)."""
    xs = np.asarray(x, np.float64)
    ys = xs if y is None else np.asarray(y, np.float64)
    xb, yb = [np.asarray(v, order="C") for v in np.broadcast_arrays(xs, ys)]  # 0-d stays 0-d
    return map_values(<op_t>op, xb, xb, yb)


cdef object _as_shape(object v, tuple shape):
    """v as a C-contiguous float64 array of `shape` (broadcast); no copy
    when it already is one, the common case of same-shape operands."""
    if is_doubles(v) and (<object>v).shape == shape:
        return v
    out = np.empty(shape)
    out[...] = v  # broadcast by assignment: np.broadcast_to costs about 3 us a call
    return out


def map_vjp(int op, x, y, f, g):
    """(g * df/dx, g * df/dy) elementwise, broadcast to f's shape: an array
    row's backward pass, by the same C rules as the scalar sweep and with its
    absolute-zero rule per element (a zero adjoint passes exactly 0). The
    loop is map_adjoints, adding into zeros."""
    shape = np.shape(f)
    xb, yb, fb, gb = [_as_shape(v, shape) for v in (x, x if y is None else y, f, g)]
    gx = np.zeros(shape)
    gy = np.zeros(shape)
    map_adjoints(<op_t>op, gx.size, <const double*>cnp.PyArray_DATA(xb), gx.size,
                 <const double*>cnp.PyArray_DATA(yb), gx.size, <const double*>cnp.PyArray_DATA(fb),
                 <const double*>cnp.PyArray_DATA(gb), <double*>cnp.PyArray_DATA(gx),
                 <double*>cnp.PyArray_DATA(gy) if y is not None else NULL)
    return gx, gy


cdef signed char _arity[256]  # scalar op code -> 1 or 2 (map rows: unary or binary)
for _spec in _ops_table.OPS:
    _arity[_spec.code] = _spec.arity

cdef bint _fast = True  # tests switch the C route off to compare it with the general one
cdef list _map_ufunc = None   # scalar op code -> NumPy ufunc computing it, or None
cdef dict _ufunc_code = None  # NumPy ufunc -> scalar op code (np.sin -> OP_SIN)


def _fast_elementwise(bint on):
    """Switch the C route on or off (for tests: both routes must agree)."""
    global _fast
    _fast = on


cdef int load_ufuncs() except -1:
    global _map_ufunc, _ufunc_code
    _map_ufunc = [front()._NUMPY.get(k) for k in range(FIRST_ARRAY_OP)]
    _ufunc_code = front()._UFUNC_CODE
    return 0


cdef inline bint is_plain_number(object v):
    return type(v) is float or type(v) is int


cdef inline bint same_shape(object x, object y):
    """Whether two ndarrays have one shape (without building shape tuples)."""
    cdef int k, nd = cnp.PyArray_NDIM(x)
    if nd != cnp.PyArray_NDIM(y):
        return False
    cdef cnp.npy_intp* dx = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp* dy = cnp.PyArray_DIMS(y)
    for k in range(nd):
        if dx[k] != dy[k]:
            return False
    return True


cdef inline bint is_doubles(object v):
    """v is a C-contiguous float64 ndarray in this machine's byte order (the
    C loops read its memory as doubles: a big-endian '>f8' array is float64
    to NumPy, but not to them)."""
    return (type(v) is cnp.ndarray and cnp.PyArray_TYPE(v) == cnp.NPY_DOUBLE
            and cnp.PyArray_IS_C_CONTIGUOUS(v) and cnp.PyArray_ISNOTSWAPPED(v))


cdef inline bint is_buffer_like(object v, object like):
    """v is a C-contiguous float64 ndarray of like's shape."""
    return is_doubles(v) and same_shape(v, like)


cdef inline bint is_adjoint_buffer(object v, object like):
    """v is an adjoint array map_backward can add into in place."""
    return is_buffer_like(v, like) and cnp.PyArray_ISWRITEABLE(v)


cdef object map_record(op_t code, object x, object y, bint binary):
    """op(x) or op(x, y) by the C route, or None where it does not apply."""
    if _map_ufunc is None:
        load_ufuncs()
    if not _fast or _debug_nans or _no_grad_threads:
        return None
    # Operands: Python numbers, and Arrays or plain real ndarrays (constants,
    # copied as the general route does) of the result's shape, or that
    # broadcast against it as repeat_in walks (a bias row: (n,) or (1, n)
    # against (m, n); a column: (m, 1)).
    shape = array_of(x)  # then the operand whose shape the result has
    wy = array_of(y) if binary else None
    if wy is not None and (shape is None or cnp.PyArray_SIZE(wy) > cnp.PyArray_SIZE(shape)):
        shape = wy
    if shape is None or cnp.PyArray_NDIM(shape) == 0:
        return None
    vx = map_constant(x, shape)
    vy = map_constant(y, shape) if binary else None
    if vx is None or (binary and vy is None) or not (type(x) is Array or type(y) is Array):
        return None
    ufunc = _map_ufunc[code]
    if ufunc is not None:
        value = ufunc(vx, vy) if binary else ufunc(vx)
    elif repeat_of(vx, shape) == 1 and (not binary or repeat_of(vy, shape) == 1):
        # sigmoid, relu, erf: no NumPy ufunc, the value by the C rule. Its
        # loop walks periods only; all three are unary (their operand has the
        # result's shape), the test is for a binary one to come.
        value = map_values(code, shape, vx, vy if binary else vx)
    else:
        return None
    if not is_buffer_like(value, shape):
        return None  # not expected of a ufunc on float64 arrays, but never assumed
    cnp.PyArray_CLEARFLAGS(value, cnp.NPY_ARRAY_WRITEABLE)
    cdef Tape t = usable_tape(join_tapes(handle_tape(x), handle_tape(y)))
    cdef node_t ia = row_of(t, x)
    cdef node_t ib = row_of(t, y) if binary else -1
    cdef node_t i = t.push(OP_MAP, ia, ib, NAN, code)
    t.has_arrays = True
    if ia < 0 or (binary and ib < 0):  # a constant operand: the backward pass reads it here
        t.aux[i] = (vx if ia < 0 else None, vy if binary and ib < 0 else None)
    t.obj[i] = value
    return new_array_node(t, i, value)


cdef inline object array_of(object v):
    """An Array's value, a plain ndarray itself, None for anything else."""
    if type(v) is Array:
        return (<Array>v).value
    return v if type(v) is cnp.ndarray else None


cdef object map_values(op_t code, object shape, object x, object y):
    """op(x, y) elementwise by the C rule: x, y are floats or C-contiguous
    float64 arrays that fit `shape` (see fits); the result has its shape."""
    out = zeros_like(shape)
    cdef double cx, cy
    cdef const double* xp = &cx
    cdef const double* yp = &cy
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out), px = 1, py = 1
    if type(x) is float:
        cx = x
    else:
        xp, px = <const double*>cnp.PyArray_DATA(x), cnp.PyArray_SIZE(x)
    if type(y) is float:
        cy = y
    else:
        yp, py = <const double*>cnp.PyArray_DATA(y), cnp.PyArray_SIZE(y)
    cdef double* o = <double*>cnp.PyArray_DATA(out)
    if n > 4096:  # as in map_adjoints: the GIL goes for a big array only
        with nogil:
            map_values_loop(code, n, xp, px, yp, py, o)
    else:
        map_values_loop(code, n, xp, px, yp, py, o)
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void map_values_loop(op_t code, Py_ssize_t n, const double* xp, Py_ssize_t px,
                          const double* yp, Py_ssize_t py, double* o) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):  # a period p < n repeats: element k meets x[k % p]
        o[k] = op_value(code, xp[k if px == n else k % px], yp[k if py == n else k % py])


cdef object map_constant(object v, object shape):
    """A map_record operand's value: an Array's ndarray or a real ndarray (a
    float64 copy) of `shape` or of a trailing part of it, a Python number as
    a float; None for anything else."""
    if type(v) is Array:
        w = (<Array>v).value
        return w if w is shape or fits(w, shape) else None
    if is_plain_number(v):
        return number(v)
    if type(v) is cnp.ndarray and (<cnp.ndarray>v).dtype.kind in "fiub" and fits(v, shape):
        v = np.array(v, dtype=np.float64, order="C")
        cnp.PyArray_CLEARFLAGS(v, cnp.NPY_ARRAY_WRITEABLE)
        return v
    return None


cdef Py_ssize_t repeat_in(object v, object f):
    """How ndarray v meets f's elements when broadcast against it, or -1
    where the loops here cannot walk it. v's axes that are not 1 must be a
    run of f's axes, of the same lengths, with only 1s around them: a bias
    row ((n,) or (1, n) against (m, n)), a column ((m, 1) against (m, n): a
    keepdims reduction, as in log_softmax), f's own shape. Then f's element
    k meets v's element (k // r) % v.size, and this returns r, the size of
    f's axes after the run (1 when the run ends f: v repeats with period
    v.size)."""
    cdef int nv = cnp.PyArray_NDIM(v), nf = cnp.PyArray_NDIM(f), off, m, lo = -1, hi = -1
    cdef cnp.npy_intp* dv = cnp.PyArray_DIMS(v)
    cdef cnp.npy_intp* df = cnp.PyArray_DIMS(f)
    cdef Py_ssize_t r = 1
    if nv > nf:
        return -1
    if nv == nf and same_shape(v, f):  # the common case, without the walk
        return 1
    off = nf - nv
    for m in range(nv):
        if dv[m] != 1:
            if lo < 0:
                lo = m
            hi = m
    if lo < 0:
        return 1  # one element: it meets every element of f
    for m in range(lo, hi + 1):
        if dv[m] != df[off + m]:
            return -1
    for m in range(off + hi + 1, nf):
        r *= df[m]
    return r


cdef inline bint fits(object v, object f):
    """Whether ndarray v broadcasts against f in a way the loops here walk (repeat_in)."""
    return repeat_in(v, f) >= 0


cdef object map_operand(Tape t, node_t row, object key, object const, object f):
    """A map row's argument for map_backward: its ndarray (C-contiguous,
    fitting f), a float constant, or None where the fast route does not apply."""
    v = const if row < 0 else t.obj.get(key)
    if type(v) is float:
        return v
    return v if is_doubles(v) and fits(v, f) else None


cdef inline Py_ssize_t repeat_of(object v, object f):
    """repeat_in for a map operand: 1 for a float."""
    return 1 if type(v) is float else repeat_in(v, f)


cdef object zeros_like(object f):
    return cnp.PyArray_ZEROS(cnp.PyArray_NDIM(f), cnp.PyArray_DIMS(f), cnp.NPY_DOUBLE, 0)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint map_backward(Tape t, node_t i) except -1:
    """Row i, a `map` row, swept in C when its operands fit its shape (see
    map_record): False leaves it to the NumPy rule (array_rules._map).
    Dicts are keyed by row: each row number is boxed once."""
    if not _fast:
        return False
    key = i
    f = t.obj.get(key)
    if f is None:
        return False  # a scalar result (of a 0-d array): the NumPy rule
    g = t.arr_adj.get(key)
    if g is None:
        return True  # nothing reached this row
    cdef node_t ia = t.a[i], ib = t.b[i]
    cdef op_t code = <op_t>t.db[i]
    cdef bint binary = _arity[code] == 2
    ka = ia
    kb = ib
    cx = cy = None
    if ia < 0 or (ib < 0 and binary):  # a constant operand, kept in aux
        cx, cy = t.aux[key]
    x = map_operand(t, ia, ka, cx, f)
    y = map_operand(t, ib, kb, cy, f) if binary else x
    if x is None or y is None or not is_buffer_like(g, f):
        return False
    cdef Py_ssize_t n = cnp.PyArray_SIZE(f)
    cdef Py_ssize_t px = 1 if type(x) is float else cnp.PyArray_SIZE(x)
    cdef Py_ssize_t py = 1 if type(y) is float else cnp.PyArray_SIZE(y)
    cdef Py_ssize_t rx = repeat_of(x, f), ry = repeat_of(y, f)
    gx = t.arr_adj.get(ka) if ia >= 0 else None
    gy = t.arr_adj.get(kb) if ib >= 0 and ib != ia else None
    if (gx is not None and not is_adjoint_buffer(gx, x)) or \
            (gy is not None and not is_adjoint_buffer(gy, y)):
        return False
    # Checks done: from here on this row is swept here.
    if ia >= 0 and gx is None:  # the first contribution to that argument
        gx = zeros_like(x)
        t.arr_adj[ka] = gx
    if ib >= 0 and gy is None:
        if ib == ia:
            gy = gx  # x * x: one buffer takes both contributions
        else:
            gy = zeros_like(y)
            t.arr_adj[kb] = gy

    cdef double cx_, cy_
    cdef const double* xp
    cdef const double* yp
    if type(x) is float:
        cx_ = x
        xp = &cx_
    else:
        xp = <const double*>cnp.PyArray_DATA(x)
    if type(y) is float:
        cy_ = y
        yp = &cy_
    else:
        yp = <const double*>cnp.PyArray_DATA(y)
    cdef const double* fp = <const double*>cnp.PyArray_DATA(f)
    cdef const double* gp = <const double*>cnp.PyArray_DATA(g)
    cdef double* dxp = <double*>cnp.PyArray_DATA(gx) if ia >= 0 else NULL
    cdef double* dyp = <double*>cnp.PyArray_DATA(gy) if ib >= 0 else NULL
    if rx == 1 and ry == 1 and not (1 < px < n and 1 < py < n and px != py):
        map_adjoints(code, n, xp, px, yp, py, fp, gp, dxp, dyp)
    elif n > 4096:
        with nogil:
            map_adjoints_walk(code, n, xp, rx, px, yp, ry, py, fp, gp, dxp, dyp)
    else:
        map_adjoints_walk(code, n, xp, rx, px, yp, ry, py, fp, gp, dxp, dyp)
    return True


cdef void map_adjoints(op_t code, Py_ssize_t n, const double* xp, Py_ssize_t px,
                       const double* yp, Py_ssize_t py, const double* fp, const double* gp,
                       double* dxp, double* dyp) noexcept:
    """dx += g * df/dx, dy += g * df/dy over f's n elements, by the scalar
    rules. An argument of period p (its size: n, 1 for a constant or a
    one-element array, or a bias row's length) meets f's element k at its
    k % p, and its adjoint takes that element's contribution there. A NULL
    target is a constant argument. Called with the GIL, which it lets go of
    for a big array only: for a small one, releasing it costs more."""
    cdef Py_ssize_t block = n
    if 1 < px < n:
        block = px
    elif 1 < py < n:
        block = py
    if n > 4096:
        with nogil:
            map_blocks(code, n, block, xp, px, yp, py, fp, gp, dxp, dyp)
    else:
        map_blocks(code, n, block, xp, px, yp, py, fp, gp, dxp, dyp)


cdef void map_blocks(op_t code, Py_ssize_t n, Py_ssize_t block, const double* xp, Py_ssize_t px,
                     const double* yp, Py_ssize_t py, const double* fp, const double* gp,
                     double* dxp, double* dyp) noexcept nogil:
    """f in blocks of one period: a full argument moves along with f, a
    periodic one starts again at each block, a constant stays put."""
    cdef Py_ssize_t base = 0, ox, oy
    while base < n:
        ox = base if px == n else 0
        oy = base if py == n else 0
        map_adjoints_loop(code, block, xp + ox, px != 1, yp + oy, py != 1, fp + base, gp + base,
                          dxp + ox if dxp != NULL else NULL, dyp + oy if dyp != NULL else NULL)
        base += block


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void map_adjoints_loop(op_t code, Py_ssize_t n, const double* xp, Py_ssize_t sx,
                            const double* yp, Py_ssize_t sy, const double* fp, const double* gp,
                            double* dxp, double* dyp) noexcept nogil:
    """One block: element k reads x[k * sx], y[k * sy] and adds into dx, dy at the same place."""
    cdef Py_ssize_t k
    cdef double gk
    cdef Partials d
    for k in range(n):
        gk = gp[k]
        if gk == 0.0:
            continue  # the absolute-zero rule, as in the scalar sweep
        d = op_partials(code, xp[k * sx], yp[k * sy], fp[k], dyp != NULL)
        if dxp != NULL:
            dxp[k * sx] += gk * d.dx
        if dyp != NULL:
            dyp[k * sy] += gk * d.dy


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void map_adjoints_walk(op_t code, Py_ssize_t n, const double* xp, Py_ssize_t rx, Py_ssize_t px,
                            const double* yp, Py_ssize_t ry, Py_ssize_t py, const double* fp,
                            const double* gp, double* dxp, double* dyp) noexcept nogil:
    """map_adjoints for any operands repeat_in walks: f's element k meets
    x's element (k // rx) % px (and y's likewise), counted along without a
    division. The blocks of map_adjoints are faster where they apply."""
    cdef Py_ssize_t k, ix = 0, iy = 0, cx = 0, cy = 0
    cdef double gk
    cdef Partials d
    for k in range(n):
        gk = gp[k]
        if gk != 0.0:  # the absolute-zero rule, as in the scalar sweep
            d = op_partials(code, xp[ix], yp[iy], fp[k], dyp != NULL)
            if dxp != NULL:
                dxp[ix] += gk * d.dx
            if dyp != NULL:
                dyp[iy] += gk * d.dy
        cx += 1
        if cx == rx:
            cx = 0
            ix += 1
            if ix == px:
                ix = 0
        cy += 1
        if cy == ry:
            cy = 0
            iy += 1
            if iy == py:
                iy = 0

# cython: language_level=3
"""The loop sweeps of a one-direction Hessian-vector product (ONE DIRECTION
in _sweeps.pxd): tangent_sweep_1 and reverse_hvp_sweep_1 over one loop,
scheduled as _loop_sweeps.pxd schedules the value and gradient sweeps.

A tangent depends only on its row's arguments, so the tangents may come in
any order that follows the rows' dependencies, the forward schedule's. The
backward pass adds an adjoint tangent's terms into the same targets, from
the same rows, as the adjoint's, so the reverse schedule, which
fastad/loops.py checked adds every adjoint's terms in the recording's
order, adds every adjoint tangent's in it too: bit for bit the sweeps' row
by row. Serial rows run as those sweeps run them, one row at a time; a
running sum's (CHAINS in _loop_sweeps.pxd) without dispatch.
"""
cimport cython
from fastad._ops cimport *
from fastad._rules cimport op_second, arith_partials, arith_second, op_arith, Partials, Second
from fastad._sweeps cimport azmul, tangent_sweep_1, reverse_hvp_sweep_1
from fastad._loop_sweeps cimport (
    L_START, L_PERIOD, L_ITERATIONS, L_CHUNK, L_VEC_LO, L_VEC_HI, L_SER_LO, L_SER_HI, L_CHAIN,
    V_OFFSET, V_CODE, V_A, V_A_STRIDE, V_B, V_B_STRIDE, V_A_SLOT, V_B_SLOT, VECTOR_WIDTH,
    S_OFFSET, S_OTHER, S_OTHER_STRIDE, S_OTHER_SLOT, SERIAL_WIDTH, SLOT_INTERNAL, SLOT_CONST,
    LOOP_SCRATCH, LOW_BITS, NONE, ADDED, STORED, OP_ADD, OP_SUB, arg_values, adjoint_target,
    mode_of, add_deferred, partials)


# -- tangents --

cdef inline void tangent_step(op_t op, Py_ssize_t t, Py_ssize_t period, const double* out,
                              double* out_tan, unsigned char* out_reached,
                              const double* x, const double* tx, const unsigned char* rx, Py_ssize_t sx,
                              bint has_x, const double* y, const double* ty, const unsigned char* ry,
                              Py_ssize_t sy, bint has_y) noexcept nogil:
    """A vector row's tangent in iteration t, as tangent_sweep_1's row (has_x:
    the first argument is a row, not a constant)."""
    cdef bint r = (has_x and rx[t * sx]) or (has_y and ry[t * sy])
    cdef Partials d
    out_reached[t * period] = r
    if not r:
        out_tan[t * period] = 0.0
        return
    d = partials(op, x[t * sx], y[t * sy], out[t * period], has_y)
    if has_x and has_y:
        out_tan[t * period] = azmul(d.dx, tx[t * sx]) + azmul(d.dy, ty[t * sy])
    elif has_x:
        out_tan[t * period] = azmul(d.dx, tx[t * sx])
    else:
        out_tan[t * period] = azmul(d.dy, ty[t * sy])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void vector_tangents(const node_t* v, Py_ssize_t start, Py_ssize_t period, const double* pool,
                                 const double* val, double* tan, unsigned char* reached,
                                 Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """A case per arithmetic op, as vector_values."""
    cdef op_t op = v[V_CODE] & LOW_BITS
    cdef Py_ssize_t o = start + v[V_OFFSET], sx = v[V_A_STRIDE], sy = v[V_B_STRIDE], t
    cdef bint hx = v[V_A_SLOT] != SLOT_CONST, hy = v[V_B_SLOT] != SLOT_CONST
    cdef const double* x = arg_values(v[V_A], val, pool)
    cdef const double* y = arg_values(v[V_B], val, pool)
    cdef const double* tx = tan + v[V_A] if hx else NULL
    cdef const double* ty = tan + v[V_B] if hy else NULL
    cdef const unsigned char* rx = reached + v[V_A] if hx else NULL
    cdef const unsigned char* ry = reached + v[V_B] if hy else NULL
    if op == OP_ADD:
        for t in range(t0, t1):
            tangent_step(OP_ADD, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    elif op == OP_SUB:
        for t in range(t0, t1):
            tangent_step(OP_SUB, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    elif op == OP_MUL:
        for t in range(t0, t1):
            tangent_step(OP_MUL, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    elif op == OP_DIV:
        for t in range(t0, t1):
            tangent_step(OP_DIV, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    elif op == OP_NEG:
        for t in range(t0, t1):
            tangent_step(OP_NEG, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    elif op == OP_SQUARE:
        for t in range(t0, t1):
            tangent_step(OP_SQUARE, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)
    else:
        for t in range(t0, t1):
            tangent_step(op, t, period, val + o, tan + o, reached + o, x, tx, rx, sx, hx, y, ty, ry, sy, hy)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void loop_tangents(const node_t* loop, const node_t* vec, const node_t* ser,
                               const unsigned char* code, const node_t* a, const node_t* b,
                               const double* pool, const double* val, double* tan,
                               unsigned char* reached) noexcept nogil:
    """Every tangent of the loop's rows (its inputs' already set), chunk by
    chunk: the vector rows, then the serial rows in order."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], k = loop[L_ITERATIONS]
    cdef Py_ssize_t chunk = loop[L_CHUNK], t0 = 0, t1, t, v, s
    cdef node_t i
    while t0 < k:
        t1 = t0 + chunk if t0 + chunk < k else k
        for v in range(loop[L_VEC_LO], loop[L_VEC_HI]):
            vector_tangents(vec + v * VECTOR_WIDTH, start, period, pool, val, tan, reached, t0, t1)
        for t in range(t0, t1):
            for s in range(loop[L_SER_LO], loop[L_SER_HI]):
                i = <node_t>(start + t * period + ser[s * SERIAL_WIDTH + S_OFFSET])
                tangent_sweep_1(i, i + 1, code, a, b, pool, val, tan, reached)
        t0 = t1


# -- the backward pass: adjoints and adjoint tangents --

cdef inline void hvp_step(op_t op, Py_ssize_t t, Py_ssize_t period, const double* out,
                          const double* adj_out, const double* adj_tan_out,
                          const double* x, const double* tx, const unsigned char* rx, Py_ssize_t sx,
                          int mode_x, double* to_x, double* tan_to_x,
                          const double* y, const double* ty, const unsigned char* ry, Py_ssize_t sy,
                          int mode_y, double* to_y, double* tan_to_y) noexcept nogil:
    """A vector row's step of reverse_hvp_sweep_1 in iteration t: its
    adjoint's and its adjoint tangent's terms, each by its argument's mode
    (adjoint_step). A row whose adjoint and adjoint tangent are 0 passes on
    zeros (the sweep passes nothing: the same, as adjoint_step says): its
    products are 0 * partial, which would be nan for an infinite partial, so
    0 by the select and azmul."""
    cdef double g = adj_out[t * period], gt = adj_tan_out[t * period]
    cdef double xv = x[t * sx], yv = y[t * sy], f = out[t * period], hx = 0.0, hy = 0.0, vx, vy
    cdef Partials d = partials(op, xv, yv, f, mode_y != NONE)
    cdef Second s
    if g != 0.0 and ((mode_x != NONE and rx[t * sx]) or (mode_y != NONE and ry[t * sy])):
        s = arith_second(op, xv, yv, f) if op_arith(op) else op_second(op, xv, yv, f)  # (see partials)
        vx = tx[t * sx] if mode_x != NONE else 0.0
        vy = ty[t * sy] if mode_y != NONE else 0.0
        hx = azmul(g, azmul(s.dxx, vx) + azmul(s.dxy, vy))
        hy = azmul(g, azmul(s.dxy, vx) + azmul(s.dyy, vy))
    if mode_x == ADDED:
        to_x[t * sx] += g * d.dx if g != 0.0 else 0.0
        tan_to_x[t * sx] += azmul(gt, d.dx) + hx
    elif mode_x == STORED:
        to_x[t] = g * d.dx if g != 0.0 else 0.0
        tan_to_x[t] = azmul(gt, d.dx) + hx
    if mode_y == ADDED:
        to_y[t * sy] += g * d.dy if g != 0.0 else 0.0
        tan_to_y[t * sy] += azmul(gt, d.dy) + hy
    elif mode_y == STORED:
        to_y[t] = g * d.dy if g != 0.0 else 0.0
        tan_to_y[t] = azmul(gt, d.dy) + hy


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void vector_hvp(const node_t* v, Py_ssize_t start, Py_ssize_t period, Py_ssize_t chunk,
                            const double* pool, const double* val, const double* tan,
                            const unsigned char* reached, double* adj, double* adj_tan,
                            double* scratch, double* scratch_tan, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """A case per arithmetic op, as vector_values."""
    cdef op_t op = v[V_CODE] & LOW_BITS
    cdef Py_ssize_t o = start + v[V_OFFSET], sx = v[V_A_STRIDE], sy = v[V_B_STRIDE], t
    cdef int mx = mode_of(v[V_A_SLOT]), my = mode_of(v[V_B_SLOT])
    cdef const double* x = arg_values(v[V_A], val, pool)
    cdef const double* y = arg_values(v[V_B], val, pool)
    cdef const double* tx = tan + v[V_A] if mx != NONE else NULL
    cdef const double* ty = tan + v[V_B] if my != NONE else NULL
    cdef const unsigned char* rx = reached + v[V_A] if mx != NONE else NULL
    cdef const unsigned char* ry = reached + v[V_B] if my != NONE else NULL
    cdef double* to_x = adjoint_target(v[V_A], v[V_A_SLOT], adj, scratch, chunk, t0)
    cdef double* to_y = adjoint_target(v[V_B], v[V_B_SLOT], adj, scratch, chunk, t0)
    cdef double* tan_to_x = adjoint_target(v[V_A], v[V_A_SLOT], adj_tan, scratch_tan, chunk, t0)
    cdef double* tan_to_y = adjoint_target(v[V_B], v[V_B_SLOT], adj_tan, scratch_tan, chunk, t0)
    if op == OP_ADD:
        for t in range(t0, t1):
            hvp_step(OP_ADD, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    elif op == OP_SUB:
        for t in range(t0, t1):
            hvp_step(OP_SUB, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    elif op == OP_MUL:
        for t in range(t0, t1):
            hvp_step(OP_MUL, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    elif op == OP_DIV:
        for t in range(t0, t1):
            hvp_step(OP_DIV, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    elif op == OP_NEG:
        for t in range(t0, t1):
            hvp_step(OP_NEG, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    elif op == OP_SQUARE:
        for t in range(t0, t1):
            hvp_step(OP_SQUARE, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)
    else:
        for t in range(t0, t1):
            hvp_step(op, t, period, val + o, adj + o, adj_tan + o, x, tx, rx, sx, mx, to_x, tan_to_x,
                     y, ty, ry, sy, my, to_y, tan_to_y)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void chain_hvp_of(op_t op, bint side, const node_t* loop, const node_t* ser,
                              const node_t* a, const node_t* b, double* adj, double* adj_tan,
                              double* scratch, double* scratch_tan, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """chain_adjoints_of (_loop_sweeps.pxd, CHAINS) with the adjoint
    tangents: an add's or a subtraction's second partials are 0, so its
    adjoint tangent passes on as azmul(gt, partial) + 0.0, the sweep's sum."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], chunk = loop[L_CHUNK], t, s, i, j
    cdef Py_ssize_t first = start + t0 * period + ser[loop[L_SER_LO] * SERIAL_WIDTH]
    cdef const node_t* e
    cdef double g, gt, carry = 0.0, carry_tan = 0.0
    cdef Partials d = arith_partials(op, 0.0, 0.0, 0.0)
    cdef double d_sum = d.dy if side else d.dx
    cdef double d_term = d.dx if side else d.dy
    for t in range(t1 - 1, t0 - 1, -1):
        for s in range(loop[L_SER_HI] - 1, loop[L_SER_LO] - 1, -1):
            e = ser + s * SERIAL_WIDTH
            i = start + t * period + e[S_OFFSET]
            g = adj[i] + carry
            adj[i] = g
            gt = adj_tan[i] + carry_tan
            adj_tan[i] = gt
            carry = g * d_sum
            carry_tan = azmul(gt, d_sum) + 0.0
            if e[S_OTHER_SLOT] == SLOT_INTERNAL:
                j = e[S_OTHER] + e[S_OTHER_STRIDE] * t
                adj[j] += g * d_term
                adj_tan[j] += azmul(gt, d_term) + 0.0
            elif e[S_OTHER_SLOT] >= 0:
                j = e[S_OTHER_SLOT] * chunk + t - t0
                scratch[j] = g * d_term
                scratch_tan[j] = azmul(gt, d_term) + 0.0
    i = b[first] if side else a[first]
    adj[i] = adj[i] + carry
    adj_tan[i] = adj_tan[i] + carry_tan


cdef inline void chain_hvp(const node_t* loop, const node_t* ser, const node_t* a, const node_t* b,
                           double* adj, double* adj_tan, double* scratch, double* scratch_tan,
                           Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    cdef node_t link = loop[L_CHAIN]
    if link == OP_ADD * 2:
        chain_hvp_of(OP_ADD, False, loop, ser, a, b, adj, adj_tan, scratch, scratch_tan, t0, t1)
    elif link == OP_ADD * 2 + 1:
        chain_hvp_of(OP_ADD, True, loop, ser, a, b, adj, adj_tan, scratch, scratch_tan, t0, t1)
    elif link == OP_SUB * 2:
        chain_hvp_of(OP_SUB, False, loop, ser, a, b, adj, adj_tan, scratch, scratch_tan, t0, t1)
    else:
        chain_hvp_of(OP_SUB, True, loop, ser, a, b, adj, adj_tan, scratch, scratch_tan, t0, t1)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void loop_reverse_hvp(const node_t* loop, const node_t* vec, const node_t* ser,
                                  const node_t* dfr, const unsigned char* code, const node_t* a,
                                  const node_t* b, const double* pool, const double* val,
                                  const double* tan, const unsigned char* reached, double* adj,
                                  double* adj_tan, double* scratch, double* scratch_tan) noexcept nogil:
    """loop_reverse with the adjoint tangents, chunk by chunk from the top
    (scratch, scratch_tan: LOOP_SCRATCH doubles each)."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], k = loop[L_ITERATIONS]
    cdef Py_ssize_t chunk = loop[L_CHUNK], t0, t1, t, v, s
    cdef node_t i
    t0 = (k - 1) // chunk * chunk
    while t0 >= 0:
        t1 = t0 + chunk if t0 + chunk < k else k
        if loop[L_CHAIN] >= 0:
            chain_hvp(loop, ser, a, b, adj, adj_tan, scratch, scratch_tan, t0, t1)
        else:
            for t in range(t1 - 1, t0 - 1, -1):
                for s in range(loop[L_SER_HI] - 1, loop[L_SER_LO] - 1, -1):
                    i = <node_t>(start + t * period + ser[s * SERIAL_WIDTH + S_OFFSET])
                    reverse_hvp_sweep_1(code, a, b, pool, val, tan, reached, adj, adj_tan, i, i)
        for v in range(loop[L_VEC_HI] - 1, loop[L_VEC_LO] - 1, -1):
            vector_hvp(vec + v * VECTOR_WIDTH, start, period, chunk, pool, val, tan, reached, adj, adj_tan,
                       scratch, scratch_tan, t0, t1)
        add_deferred(loop, dfr, adj, scratch, t0, t1)
        add_deferred(loop, dfr, adj_tan, scratch_tan, t0, t1)
        t0 -= chunk

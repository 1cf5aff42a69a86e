# cython: language_level=3
"""The loop sweeps: a replay's forward and reverse sweeps over one loop of
a lowered trace, as fastad/loops.py found and checked it.

A loop is `iterations` copies of a body of `period` rows from row `start`.
Its vector rows run op-major: for each, one C loop over the iterations of a
chunk, the op a constant (so arith_value and arith_partials inline to the
one operation), its arguments at fixed strides. Its serial rows (values
carried from iteration to iteration) run as the rows they are, in the
recording's order. Per chunk, forward: the vector rows, then the serial
rows; reverse: the serial rows, the vector rows, then the deferred products
(for inputs and rows before the loop), added in the recording's order.
fastad/loops.py checked that this order adds every adjoint's terms as the
row-by-row sweep does: bit for bit the same gradient.

The tables' columns are fastad/loops.py's LOOP_COLUMNS and VECTOR_COLUMNS.
All run without the GIL over tables and indices the core itself wrote.
"""
cimport cython
from fastad._ops cimport *
from fastad._rules cimport op_value, op_partials, op_branch, arith_value, arith_partials, op_arith, Partials
from fastad._sweeps cimport lowered_partials

cdef enum:
    # LOOP_COLUMNS
    L_START = 0
    L_PERIOD = 1
    L_ITERATIONS = 2
    L_CHUNK = 3
    L_VEC_LO = 4
    L_VEC_HI = 5
    L_SER_LO = 6
    L_SER_HI = 7
    L_DEF_LO = 8
    L_DEF_HI = 9
    L_CHAIN = 10
    # VECTOR_COLUMNS
    V_OFFSET = 0
    V_CODE = 1
    V_A = 2
    V_A_STRIDE = 3
    V_B = 4
    V_B_STRIDE = 5
    V_A_SLOT = 6
    V_B_SLOT = 7
    VECTOR_WIDTH = 8
    # DEFERRED_COLUMNS
    D_TARGET = 0
    D_STRIDE = 1
    DEFERRED_WIDTH = 2
    # SERIAL_COLUMNS
    S_OFFSET = 0
    S_OTHER = 1
    S_OTHER_STRIDE = 2
    S_OTHER_SLOT = 3
    SERIAL_WIDTH = 4
    # a slot: no adjoint (a constant), or added straight into adj; >= 0: deferred
    SLOT_CONST = -2
    SLOT_INTERNAL = -1
    LOOP_SCRATCH = 2048  # doubles of deferred products per chunk (fastad/loops.py SCRATCH)
    NONE = 0             # adjoint_step's modes
    ADDED = 1
    STORED = 2
    LOW_BITS = 63        # the op in a lowered code (_sweeps.pxd OP_BITS)
    NO_ROW = -2147483647 - 1  # no row, and no ~k of a constant either


cdef inline node_t loop_end(const node_t* loop) noexcept nogil:
    """The row after the loop's last."""
    return <node_t>(loop[L_START] + loop[L_PERIOD] * loop[L_ITERATIONS])


cdef inline const double* arg_values(node_t first, const double* val, const double* pool) noexcept nogil:
    return val + first if first >= 0 else pool + ~first


cdef inline Partials partials(op_t op, double x, double y, double f, bint need_dy) noexcept nogil:
    """op_partials, whose first branch this is, small enough that GCC
    inlines it into each op's loop (here and in _loop_hvp.pxd), where the op
    is a constant. The big op_partials (or _sweeps.pxd's lowered_partials)
    it left as a call in every iteration: Rosenbrock 10k, Trace.hvp 583 ->
    780 us. The same holds for op_second."""
    if op_arith(op):
        return arith_partials(op, x, y, f)
    return op_partials(op, x, y, f, need_dy)


# -- forward --

@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void values_of(op_t op, double* out, Py_ssize_t period, const double* x, Py_ssize_t sx,
                           const double* y, Py_ssize_t sy, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """One vector row's values over iterations t0..t1-1."""
    cdef Py_ssize_t t
    for t in range(t0, t1):
        out[t * period] = op_value(op, x[t * sx], y[t * sy])


cdef inline void vector_values(const node_t* v, Py_ssize_t start, Py_ssize_t period, const double* pool,
                               double* val, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """A case per arithmetic op, so that each loop has its op a constant."""
    cdef op_t op = v[V_CODE] & LOW_BITS
    cdef double* out = val + start + v[V_OFFSET]
    cdef const double* x = arg_values(v[V_A], val, pool)
    cdef const double* y = arg_values(v[V_B], val, pool)
    cdef Py_ssize_t sx = v[V_A_STRIDE], sy = v[V_B_STRIDE]
    if op == OP_ADD:
        values_of(OP_ADD, out, period, x, sx, y, sy, t0, t1)
    elif op == OP_SUB:
        values_of(OP_SUB, out, period, x, sx, y, sy, t0, t1)
    elif op == OP_MUL:
        values_of(OP_MUL, out, period, x, sx, y, sy, t0, t1)
    elif op == OP_DIV:
        values_of(OP_DIV, out, period, x, sx, y, sy, t0, t1)
    elif op == OP_NEG:
        values_of(OP_NEG, out, period, x, sx, y, sy, t0, t1)
    elif op == OP_SQUARE:
        values_of(OP_SQUARE, out, period, x, sx, y, sy, t0, t1)
    else:
        values_of(op, out, period, x, sx, y, sy, t0, t1)


cdef inline double serial_arg(node_t arg, node_t prev, double f, const double* val,
                              const double* pool) noexcept nogil:
    """A serial row's argument: the previous serial row's value f when it
    is that row (a running sum reads it: from a register, not from val,
    whose store-to-load round trip would be on the loop's critical path),
    else from val, or the pool for a constant."""
    if arg == prev:
        return f
    return val[arg] if arg >= 0 else pool[~arg]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline node_t serial_values(const node_t* loop, const node_t* ser, const unsigned char* code,
                                 const node_t* a, const node_t* b, const double* pool, double* val,
                                 const signed char* branch0, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """The serial rows' values over iterations t0..t1-1, in the recording's
    order, each as forward_sweep computes it; the first row whose piece
    differs from the recording's, or -1."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], t, s
    cdef node_t i, prev = NO_ROW, changed = -1
    cdef double x, y, f = 0.0
    cdef op_t op
    for t in range(t0, t1):
        for s in range(loop[L_SER_LO], loop[L_SER_HI]):
            i = <node_t>(start + t * period + ser[s * SERIAL_WIDTH])
            op = code[i] & LOW_BITS
            x = serial_arg(a[i], prev, f, val, pool)
            y = serial_arg(b[i], prev, f, val, pool)
            f = op_value(op, x, y)
            if branch0[i] >= 0 and changed < 0 and op_branch(op, x, y) != branch0[i]:
                changed = i
            val[i] = f
            prev = i
    return changed


# CHAINS. A loop's serial rows are most often a running sum (total =
# total + term): each an add that reads the one before it. fastad/loops.py
# marks such loops (chain: op * 2 + side, the side the sum comes in on), and
# their serial rows run here with the op a constant and the sum in a
# register, instead of through the interpreter's dispatch (Rosenbrock 10k,
# 20k serial rows: Trace.value_and_grad 242 -> 160 us). The reverse
# passes g on unmultiplied (the partials are 1 and -1), also where g is
# 0: adding 0.0 changes no adjoint (none is -0.0), and the partials are
# finite, so this is what reverse_sweep gives.

@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void chain_values_of(op_t op, bint side, const node_t* loop, const node_t* ser,
                                 const node_t* a, const node_t* b, const double* pool, double* val,
                                 Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], t, s
    cdef Py_ssize_t first = start + t0 * period + ser[loop[L_SER_LO] * SERIAL_WIDTH]
    cdef const node_t* e
    cdef double f = val[b[first] if side else a[first]], o
    for t in range(t0, t1):
        for s in range(loop[L_SER_LO], loop[L_SER_HI]):
            e = ser + s * SERIAL_WIDTH
            o = val[e[S_OTHER] + e[S_OTHER_STRIDE] * t] if e[S_OTHER] >= 0 else pool[~e[S_OTHER]]
            f = arith_value(op, o, f) if side else arith_value(op, f, o)
            val[start + t * period + e[S_OFFSET]] = f


cdef inline void chain_values(const node_t* loop, const node_t* ser, const node_t* a, const node_t* b,
                              const double* pool, double* val, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    cdef node_t link = loop[L_CHAIN]
    if link == OP_ADD * 2:
        chain_values_of(OP_ADD, False, loop, ser, a, b, pool, val, t0, t1)
    elif link == OP_ADD * 2 + 1:
        chain_values_of(OP_ADD, True, loop, ser, a, b, pool, val, t0, t1)
    elif link == OP_SUB * 2:
        chain_values_of(OP_SUB, False, loop, ser, a, b, pool, val, t0, t1)
    else:
        chain_values_of(OP_SUB, True, loop, ser, a, b, pool, val, t0, t1)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline node_t loop_forward(const node_t* loop, const node_t* vec, const node_t* ser,
                                const unsigned char* code, const node_t* a, const node_t* b,
                                const double* pool, double* val, const signed char* branch0) noexcept nogil:
    """Every value of the loop's rows (the inputs among them already in
    val); the first row whose piece differs from the recording's, or -1."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], k = loop[L_ITERATIONS]
    cdef Py_ssize_t chunk = loop[L_CHUNK], t0 = 0, t1, v
    cdef node_t changed = -1, c
    while t0 < k:
        t1 = t0 + chunk if t0 + chunk < k else k
        for v in range(loop[L_VEC_LO], loop[L_VEC_HI]):
            vector_values(vec + v * VECTOR_WIDTH, start, period, pool, val, t0, t1)
        if loop[L_CHAIN] >= 0:
            chain_values(loop, ser, a, b, pool, val, t0, t1)
        else:
            c = serial_values(loop, ser, code, a, b, pool, val, branch0, t0, t1)
            if c >= 0 and changed < 0:
                changed = c
        t0 = t1
    return changed


# -- reverse --

cdef inline void adjoint_step(op_t op, Py_ssize_t t, const double* adj_out, const double* out,
                              Py_ssize_t period, const double* x, Py_ssize_t sx, const double* y,
                              Py_ssize_t sy, double* to_x, Py_ssize_t tx, int mode_x, double* to_y,
                              Py_ssize_t ty, int mode_y) noexcept nogil:
    """A vector row's products g * partial in iteration t, for each argument
    by its mode: ADDED into its adjoint (to_x[t * tx] +=), STORED in the
    scratch (to_x[t] =, a deferred product) or NONE (a constant). A zero
    adjoint passes on 0 (reverse_sweep passes nothing: the same, as an
    adjoint is never -0.0), not g * partial, which may be nan."""
    cdef double g = adj_out[t * period], p
    cdef Partials d = partials(op, x[t * sx], y[t * sy], out[t * period], mode_y != NONE)
    if mode_x != NONE:
        p = g * d.dx if g != 0.0 else 0.0
        if mode_x == ADDED:
            to_x[t * tx] += p
        else:
            to_x[t] = p
    if mode_y != NONE:
        p = g * d.dy if g != 0.0 else 0.0
        if mode_y == ADDED:
            to_y[t * ty] += p
        else:
            to_y[t] = p


cdef inline double* adjoint_target(node_t first, node_t slot, double* adj, double* scratch,
                                   Py_ssize_t chunk, Py_ssize_t t0) noexcept nogil:
    """Where a vector row's products for an argument go (adjoint_step):
    its adjoint, its slot in the scratch, or nowhere (a constant)."""
    if slot == SLOT_INTERNAL:
        return adj + first
    if slot >= 0:
        return scratch + slot * chunk - t0
    return NULL


cdef inline int mode_of(node_t slot) noexcept nogil:
    return ADDED if slot == SLOT_INTERNAL else (STORED if slot >= 0 else NONE)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void vector_adjoints(const node_t* v, Py_ssize_t start, Py_ssize_t period, Py_ssize_t chunk,
                                 const double* pool, const double* val, double* adj, double* scratch,
                                 Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """A case per arithmetic op, as vector_values."""
    cdef op_t op = v[V_CODE] & LOW_BITS
    cdef Py_ssize_t o = start + v[V_OFFSET]
    cdef const double* x = arg_values(v[V_A], val, pool)
    cdef const double* y = arg_values(v[V_B], val, pool)
    cdef double* to_x = adjoint_target(v[V_A], v[V_A_SLOT], adj, scratch, chunk, t0)
    cdef double* to_y = adjoint_target(v[V_B], v[V_B_SLOT], adj, scratch, chunk, t0)
    cdef Py_ssize_t sx = v[V_A_STRIDE], sy = v[V_B_STRIDE]
    cdef int ax = mode_of(v[V_A_SLOT]), ay = mode_of(v[V_B_SLOT])
    cdef Py_ssize_t t
    if op == OP_ADD:
        for t in range(t0, t1):
            adjoint_step(OP_ADD, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    elif op == OP_SUB:
        for t in range(t0, t1):
            adjoint_step(OP_SUB, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    elif op == OP_MUL:
        for t in range(t0, t1):
            adjoint_step(OP_MUL, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    elif op == OP_DIV:
        for t in range(t0, t1):
            adjoint_step(OP_DIV, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    elif op == OP_NEG:
        for t in range(t0, t1):
            adjoint_step(OP_NEG, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    elif op == OP_SQUARE:
        for t in range(t0, t1):
            adjoint_step(OP_SQUARE, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)
    else:
        for t in range(t0, t1):
            adjoint_step(op, t, adj + o, val + o, period, x, sx, y, sy, to_x, sx, ax, to_y, sy, ay)


cdef inline void serial_pass_on(double* adj, node_t arg, node_t nxt, double p, double* carry,
                                bint* carried) noexcept nogil:
    """What a serial row passes to its argument arg: carried when arg is the
    serial row next in the reverse order, else added into its adjoint."""
    if arg < 0:
        return
    if arg == nxt:
        carry[0] = p
        carried[0] = True
    else:
        adj[arg] += p


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void serial_adjoints(const node_t* loop, const node_t* ser, const unsigned char* code,
                                 const node_t* a, const node_t* b, const double* pool,
                                 const double* val, double* adj, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """The serial rows of iterations t1-1 down to t0 pass their adjoints on,
    in the recording's order, each as reverse_sweep does (the arithmetic ops
    inline, so that an add passes g on with no multiply). What a row passes
    to the serial row next in this order is carried (CARRIES in _sweeps.pxd:
    that row gets no term after it) and added into that row's adjoint when
    the loop reaches it, or at the end: (adj + ca) + cb, or fewer terms
    where none was carried (adding 0.0 changes no adjoint: none is -0.0)."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], t, s
    cdef Py_ssize_t lo = loop[L_SER_LO], hi = loop[L_SER_HI]
    cdef node_t i, ia, ib, nxt = NO_ROW
    cdef double g, x, y, ca = 0.0, cb = 0.0
    cdef bint has_a = False, has_b = False
    cdef op_t op
    cdef Partials d
    for t in range(t1 - 1, t0 - 1, -1):
        for s in range(hi - 1, lo - 1, -1):
            i = <node_t>(start + t * period + ser[s * SERIAL_WIDTH])
            g = adj[i]
            if has_a:
                g = g + ca
            if has_b:
                g = g + cb
            adj[i] = g
            has_a = False
            has_b = False
            nxt = <node_t>(i - ser[s * SERIAL_WIDTH] + (ser[(s - 1) * SERIAL_WIDTH] if s > lo
                                                          else ser[(hi - 1) * SERIAL_WIDTH] - period))
            if g == 0.0:
                continue
            ia = a[i]
            ib = b[i]
            op = code[i] & LOW_BITS
            x = val[ia] if ia >= 0 else pool[~ia]
            y = val[ib] if ib >= 0 else pool[~ib]
            d = lowered_partials(op, x, y, val[i], ib >= 0)
            serial_pass_on(adj, ia, nxt, g * d.dx, &ca, &has_a)
            serial_pass_on(adj, ib, nxt, g * d.dy, &cb, &has_b)
    if has_a or has_b:
        g = adj[nxt]
        if has_a:
            g = g + ca
        if has_b:
            g = g + cb
        adj[nxt] = g


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void chain_adjoints_of(op_t op, bint side, const node_t* loop, const node_t* ser,
                                   const node_t* a, const node_t* b, double* adj, double* scratch,
                                   Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], t, s, i
    cdef Py_ssize_t first = start + t0 * period + ser[loop[L_SER_LO] * SERIAL_WIDTH]
    cdef const node_t* e
    cdef double g, carry = 0.0
    cdef Partials d = arith_partials(op, 0.0, 0.0, 0.0)
    cdef double d_sum = d.dy if side else d.dx
    cdef double d_term = d.dx if side else d.dy
    for t in range(t1 - 1, t0 - 1, -1):
        for s in range(loop[L_SER_HI] - 1, loop[L_SER_LO] - 1, -1):
            e = ser + s * SERIAL_WIDTH
            i = start + t * period + e[S_OFFSET]
            g = adj[i] + carry
            adj[i] = g
            carry = g * d_sum
            if e[S_OTHER_SLOT] == SLOT_INTERNAL:
                adj[e[S_OTHER] + e[S_OTHER_STRIDE] * t] += g * d_term
            elif e[S_OTHER_SLOT] >= 0:  # deferred, as a vector row's
                scratch[e[S_OTHER_SLOT] * loop[L_CHUNK] + t - t0] = g * d_term
    i = b[first] if side else a[first]  # the sum coming into iteration t0
    adj[i] = adj[i] + carry


cdef inline void chain_adjoints(const node_t* loop, const node_t* ser, const node_t* a, const node_t* b,
                                double* adj, double* scratch, Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    cdef node_t link = loop[L_CHAIN]
    if link == OP_ADD * 2:
        chain_adjoints_of(OP_ADD, False, loop, ser, a, b, adj, scratch, t0, t1)
    elif link == OP_ADD * 2 + 1:
        chain_adjoints_of(OP_ADD, True, loop, ser, a, b, adj, scratch, t0, t1)
    elif link == OP_SUB * 2:
        chain_adjoints_of(OP_SUB, False, loop, ser, a, b, adj, scratch, t0, t1)
    else:
        chain_adjoints_of(OP_SUB, True, loop, ser, a, b, adj, scratch, t0, t1)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void add_deferred(const node_t* loop, const node_t* dfr, double* adj, const double* scratch,
                              Py_ssize_t t0, Py_ssize_t t1) noexcept nogil:
    """A chunk's deferred products, into their targets' adjoints in the
    recording's order: slot by slot (fastad/loops.py), iterations down."""
    cdef Py_ssize_t chunk = loop[L_CHUNK], t, v, stride
    cdef double* to
    cdef const double* products
    for v in range(loop[L_DEF_LO], loop[L_DEF_HI]):
        to = adj + dfr[v * DEFERRED_WIDTH + D_TARGET]
        stride = dfr[v * DEFERRED_WIDTH + D_STRIDE]
        products = scratch + (v - loop[L_DEF_LO]) * chunk - t0
        for t in range(t1 - 1, t0 - 1, -1):
            to[t * stride] += products[t]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void loop_reverse(const node_t* loop, const node_t* vec, const node_t* ser,
                              const node_t* dfr, const unsigned char* code, const node_t* a, const node_t* b,
                              const double* pool, const double* val, double* adj,
                              double* scratch) noexcept nogil:
    """Pass the adjoints of the loop's rows (final: every later row has
    passed its own on) down to their arguments, chunk by chunk from the top;
    scratch: LOOP_SCRATCH doubles for the deferred products."""
    cdef Py_ssize_t start = loop[L_START], period = loop[L_PERIOD], k = loop[L_ITERATIONS]
    cdef Py_ssize_t chunk = loop[L_CHUNK], t0, t1, v
    t0 = (k - 1) // chunk * chunk
    while t0 >= 0:
        t1 = t0 + chunk if t0 + chunk < k else k
        if loop[L_CHAIN] >= 0:
            chain_adjoints(loop, ser, a, b, adj, scratch, t0, t1)
        else:
            serial_adjoints(loop, ser, code, a, b, pool, val, adj, t0, t1)
        for v in range(loop[L_VEC_HI] - 1, loop[L_VEC_LO] - 1, -1):
            vector_adjoints(vec + v * VECTOR_WIDTH, start, period, chunk, pool, val, adj, scratch, t0, t1)
        add_deferred(loop, dfr, adj, scratch, t0, t1)
        t0 -= chunk

# cython: language_level=3
"""The sweeps: plain loops over a tape's arrays. None writes an op's
mathematics: that is in fastad/_rules.pxd.

A recorded tape's reverse sweep (jacobian_sweep) multiplies the partials
stored with each row. The replays' sweeps read the rows of a trace and call
the rules on new values: forward_sweep, reverse_sweep and the one-direction
sweeps read them lowered (SHAPES, ONE DIRECTION, below), the others as
recorded (op, a, b, c), where a -1 argument is the row's constant c, whose
tangent and adjoint are 0.
All run without the GIL over indices the core itself wrote.
"""
cimport cython
from fastad._ops cimport *
from fastad._rules cimport (op_value, op_partials, op_second, op_branch, op_piecewise, arith_value,
                            arith_partials, Partials, Second)

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FASTAD_PREFETCH(p) __builtin_prefetch((const void*)(p), 1, 1)
    #else
    #define FASTAD_PREFETCH(p) ((void)0)
    #endif
    """
    void FASTAD_PREFETCH(const void* p) noexcept nogil

# How many rows ahead the reverse sweeps ask for their arguments' cache
# lines: a row's arguments are random rows of a big tape, and their adjoints
# miss the cache; their indices are known this many rows early. Below
# PREFETCH_MIN_ROWS rows the adjoints fit in L2 and prefetching only costs
# (Rosenbrock 10k, 90k rows: 3.65 ns a row without, 3.85 with).
cdef enum:
    PREFETCH_ROWS = 32
    PREFETCH_MIN_ROWS = 1 << 17

# CARRIES. A row's argument is most often the row just before it (x*x, then
# sin of that ...). jacobian_sweep keeps what row i passes to row i - 1
# in registers (ca from its first argument, cb from its second) instead of
# adding it into adj[i - 1] and loading it straight back, a store-to-load
# round trip on every link of such a chain: Rosenbrock 10k, 2.9 ns a row
# -> 1.9 (in C, on this tape). Row i is the last reader of row i - 1 the
# loop meets (the others come later in the tape, so earlier in the loop),
# so (adj + ca) + cb adds the same numbers in the same order as before:
# bit for bit the same adjoints. Every row stores its final adjoint.
# reverse_sweep carries the same way.

# Scratch adjoints below adj[0] that jacobian_sweep adds constants' products
# into (a power of two).
cdef enum:
    SINKS = 8


cdef inline double azmul(double x, double y) noexcept nogil:
    """x * y, but exactly 0 when either is 0 (CppAD's "absolute zero"
    product): a zero partial stops an infinite tangent (sqrt at 0) instead
    of making nan, as a zero adjoint does in the reverse sweep."""
    return 0.0 if x == 0.0 or y == 0.0 else x * y


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline node_t jacobian_sweep(const op_t* op, const node_t* a, const node_t* b,
                                  const double* da, const double* db, double* adj,
                                  node_t hi, double** elem_adj) noexcept nogil:
    """The recorded tape's reverse sweep: propagate adjoints down from row hi
    (the caller seeds the output) through the partials the tape stored when
    it recorded each row (a Jacobian tape, as CoDiPack calls it).

    Creation order is topological: when the loop reaches row i, every row
    that reads it has been visited and its adjoint is final. The loop names
    no op and calls no libm function: a random DAG's op mix mispredicts a
    switch on every other row, and that, not memory, was most of a sweep
    that computes partials from values (an earlier reverse_sweep, below,
    run over this tape: 14 ns a row on the live 1M-node DAG; this loop, 4.5). A -1 argument (a constant, or
    none) adds its product into one of SINKS scratch slots below adj[0]
    (adj[-SINKS] to adj[-1] must be writable) instead of costing a branch:
    a random op mix mispredicts `if b >= 0` too (5.8 ns a row), and a single
    slot would chain every such row's add through one address (Rosenbrock
    10k: 3.75 ns a row, 3.5 with 8 slots).

    A row whose adjoint is exactly zero passes nothing on. That skips the
    rows the output does not reach (no marking pass needed) and makes 0 * inf
    count as 0, CppAD's "absolute zero" product: an infinite partial the
    output does not depend on (sqrt at 0 behind a relu that is off) cannot
    turn the gradient into nan.

    Array rows: `elem` (one element of an array) adds into that array's
    adjoint buffer, elem_adj[array row], at the flat index its db holds, so
    element loops sweep at scalar speed; any other array row stops the loop
    and is returned, for its NumPy rule to run with the GIL before the
    caller resumes below it. Returns -1 when row 0 is done.
    """
    cdef node_t i, ia, ib, sink
    cdef double g, ca = 0.0, cb = 0.0
    cdef bint prefetch = hi >= PREFETCH_MIN_ROWS
    for i in range(hi, -1, -1):
        if prefetch and i >= PREFETCH_ROWS:
            FASTAD_PREFETCH(&adj[a[i - PREFETCH_ROWS]])
            FASTAD_PREFETCH(&adj[b[i - PREFETCH_ROWS]])
        g = (adj[i] + ca) + cb  # see CARRIES
        adj[i] = g
        ca = 0.0
        cb = 0.0
        if op[i] >= FIRST_ARRAY_OP:
            if op[i] != OP_ELEM:
                return i
            if g != 0.0:
                elem_adj[a[i]][<Py_ssize_t>db[i]] += g
            continue
        if g != 0.0:
            sink = -1 - (i & (SINKS - 1))
            ia = a[i]
            ib = b[i]
            if ia == i - 1:
                ca = g * da[i]
            else:
                adj[ia if ia >= 0 else sink] += g * da[i]
            if ib == i - 1:
                cb = g * db[i]
            else:
                adj[ib if ib >= 0 else sink] += g * db[i]
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void value_sweep(Py_ssize_t n, const op_t* op, const node_t* a, const node_t* b,
                             const double* da, const double* db, double* val) noexcept nogil:
    """A recorded tape's values, recomputed from what its rows keep: an
    INPUT, elem or array row keeps its value in da (nan for an array value),
    any other row is op_value of its arguments, a -1 argument being the
    constant in that argument's partial slot. Bit for bit the values the
    rows were recorded with: recording computed them with op_value too."""
    cdef Py_ssize_t i
    cdef node_t ia, ib
    for i in range(n):
        if op[i] == OP_INPUT or op[i] >= FIRST_ARRAY_OP:
            val[i] = da[i]
            continue
        ia = a[i]
        ib = b[i]
        val[i] = op_value(op[i], val[ia] if ia >= 0 else da[i], val[ib] if ib >= 0 else db[i])


# SHAPES. A replay's value and gradient sweeps read the trace lowered
# (Trace._lower in fastad/_replay.pyx): a row's code is its op plus a bit
# for each constant argument, and a constant argument's slot holds ~k, the
# index of its value in a small pool of distinct constants, instead of -1
# with the value in c. So an arithmetic row has a case per argument shape
# (x * y, x * c, c * x ...) that loads only what it uses, every constant
# comes from a pool that stays in cache instead of a stream of 8 bytes a
# row, and each case calls its rule with the op as a constant: the small
# arith_value and arith_partials, which GCC inlines down to the one
# operation at every call (the disassembly has no call left in these
# cases). Through op_partials, every op's rule and a big function, GCC
# left 2 to 4 of the 14 cases as calls, and which ones moved with unrelated
# edits elsewhere in the module (the reverse sweep 200 -> 340 us). Other
# rows take the general case. Inputs have code 0 and are skipped.
# Rosenbrock 10k (90k rows): the replayed value and gradient
# (Trace.value_and_grad) 428 -> 350 us, the forward sweep unchanged.
# The other replay sweeps read the rows as recorded (op, a, b, c): read
# lowered too, the dense Hessian route measured 12% slower (a lowered-only
# trace would have held 18 bytes a row instead of 35).
cdef enum:
    A_CONST = 64   # the first argument is a constant: a holds ~k
    B_CONST = 128  # the second is a constant, or there is none (unary ops)
    OP_BITS = 63
    ADD_XY = OP_ADD
    ADD_XC = OP_ADD | B_CONST
    ADD_CY = OP_ADD | A_CONST
    SUB_XY = OP_SUB
    SUB_XC = OP_SUB | B_CONST
    SUB_CY = OP_SUB | A_CONST
    MUL_XY = OP_MUL
    MUL_XC = OP_MUL | B_CONST
    MUL_CY = OP_MUL | A_CONST
    DIV_XY = OP_DIV
    DIV_XC = OP_DIV | B_CONST
    DIV_CY = OP_DIV | A_CONST
    NEG_X = OP_NEG | B_CONST
    SQUARE_X = OP_SQUARE | B_CONST


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline node_t forward_sweep(node_t lo, node_t hi, const unsigned char* code, const node_t* a, const node_t* b,
                                 const double* pool, double* val, const signed char* branch0) noexcept nogil:
    """Recompute the values of rows lo..hi-1 from the inputs already in val
    (INPUT rows are left as they are), over a lowered trace (SHAPES).
    Returns the first row whose piece (op_branch) differs from the
    recording's, or -1 if the recorded tape holds for these inputs
    (arithmetic rows have one piece)."""
    cdef node_t i, ia, ib
    cdef double x, y
    cdef node_t changed = -1
    cdef unsigned char k
    for i in range(lo, hi):
        k = code[i]
        ia = a[i]
        ib = b[i]
        if k == 0:
            continue
        elif k == ADD_XY:
            val[i] = arith_value(OP_ADD, val[ia], val[ib])
        elif k == ADD_XC:
            val[i] = arith_value(OP_ADD, val[ia], pool[~ib])
        elif k == ADD_CY:
            val[i] = arith_value(OP_ADD, pool[~ia], val[ib])
        elif k == SUB_XY:
            val[i] = arith_value(OP_SUB, val[ia], val[ib])
        elif k == SUB_XC:
            val[i] = arith_value(OP_SUB, val[ia], pool[~ib])
        elif k == SUB_CY:
            val[i] = arith_value(OP_SUB, pool[~ia], val[ib])
        elif k == MUL_XY:
            val[i] = arith_value(OP_MUL, val[ia], val[ib])
        elif k == MUL_XC:
            val[i] = arith_value(OP_MUL, val[ia], pool[~ib])
        elif k == MUL_CY:
            val[i] = arith_value(OP_MUL, pool[~ia], val[ib])
        elif k == DIV_XY:
            val[i] = arith_value(OP_DIV, val[ia], val[ib])
        elif k == DIV_XC:
            val[i] = arith_value(OP_DIV, val[ia], pool[~ib])
        elif k == DIV_CY:
            val[i] = arith_value(OP_DIV, pool[~ia], val[ib])
        elif k == NEG_X:
            val[i] = arith_value(OP_NEG, val[ia], 0.0)
        elif k == SQUARE_X:
            val[i] = arith_value(OP_SQUARE, val[ia], 0.0)
        else:
            x = val[ia] if ia >= 0 else pool[~ia]
            y = val[ib] if ib >= 0 else pool[~ib]
            val[i] = op_value(k & OP_BITS, x, y)
            if branch0[i] >= 0 and changed < 0 and op_branch(k & OP_BITS, x, y) != branch0[i]:
                changed = i
    return changed


cdef inline void pass_on(double* adj, node_t i, node_t arg, double v, double* carry) noexcept nogil:
    """Row i passes v on to its argument row arg: into the carry when arg is
    row i - 1 (see CARRIES), else into its adjoint."""
    if arg == i - 1:
        carry[0] = v
    else:
        adj[arg] += v


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void reverse_sweep(const unsigned char* code, const node_t* a, const node_t* b,
                               const double* pool, const double* val, double* adj,
                               node_t hi, node_t bottom) noexcept nogil:
    """A replay's reverse sweep of rows hi down to bottom, over a lowered
    trace (SHAPES): as jacobian_sweep, with its carries, but a replay has
    new values on every call, so each row's partials come from them here
    (op_partials). Every row down from hi stores its final adjoint
    (hvp_sweep reads them all); what row bottom carries for row bottom - 1
    is added into its adjoint. Scalar rows only: traces have no array rows."""
    cdef node_t i, ia, ib, top = hi, lo, j
    cdef double g, x, y, ca = 0.0, cb = 0.0
    cdef unsigned char k
    cdef Partials d
    cdef bint prefetch = hi >= PREFETCH_MIN_ROWS
    while top >= bottom:
        # Rows top down to lo, PREFETCH_ROWS of them. On a big tape, the
        # prefetches for the next block but one go out first, in a loop of
        # their own: a test on every row cost Rosenbrock 10k, which
        # prefetches nothing, 20 of its 200 us.
        lo = top - PREFETCH_ROWS + 1 if top - bottom >= PREFETCH_ROWS else bottom
        if prefetch and lo >= PREFETCH_ROWS:
            for j in range(lo - 2 * PREFETCH_ROWS if lo >= 2 * PREFETCH_ROWS else 0, lo - PREFETCH_ROWS):
                if a[j] >= 0:
                    FASTAD_PREFETCH(&adj[a[j]])
                    FASTAD_PREFETCH(&val[a[j]])
                if b[j] >= 0:
                    FASTAD_PREFETCH(&adj[b[j]])
                    FASTAD_PREFETCH(&val[b[j]])
        for i in range(top, lo - 1, -1):
            g = (adj[i] + ca) + cb  # see CARRIES
            adj[i] = g
            ca = 0.0
            cb = 0.0
            k = code[i]
            if g == 0.0 or k == 0:  # nothing to pass on, or an input
                continue
            ia = a[i]
            ib = b[i]
            # A case per shape: its partials, passed on to the arguments that are rows.
            if k == ADD_XY:
                d = arith_partials(OP_ADD, 0.0, 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == ADD_XC:
                d = arith_partials(OP_ADD, 0.0, 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
            elif k == ADD_CY:
                d = arith_partials(OP_ADD, 0.0, 0.0, 0.0)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == SUB_XY:
                d = arith_partials(OP_SUB, 0.0, 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == SUB_XC:
                d = arith_partials(OP_SUB, 0.0, 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
            elif k == SUB_CY:
                d = arith_partials(OP_SUB, 0.0, 0.0, 0.0)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == MUL_XY:
                d = arith_partials(OP_MUL, val[ia], val[ib], 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == MUL_XC:
                d = arith_partials(OP_MUL, val[ia], pool[~ib], 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
            elif k == MUL_CY:
                d = arith_partials(OP_MUL, pool[~ia], val[ib], 0.0)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == DIV_XY:
                d = arith_partials(OP_DIV, val[ia], val[ib], val[i])
                pass_on(adj, i, ia, g * d.dx, &ca)
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == DIV_XC:
                d = arith_partials(OP_DIV, val[ia], pool[~ib], val[i])
                pass_on(adj, i, ia, g * d.dx, &ca)
            elif k == DIV_CY:
                d = arith_partials(OP_DIV, pool[~ia], val[ib], val[i])
                pass_on(adj, i, ib, g * d.dy, &cb)
            elif k == NEG_X:
                d = arith_partials(OP_NEG, 0.0, 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
            elif k == SQUARE_X:
                d = arith_partials(OP_SQUARE, val[ia], 0.0, 0.0)
                pass_on(adj, i, ia, g * d.dx, &ca)
            else:
                x = val[ia] if ia >= 0 else pool[~ia]
                y = val[ib] if ib >= 0 else pool[~ib]
                d = op_partials(k & OP_BITS, x, y, val[i], ib >= 0)
                if ia >= 0:
                    pass_on(adj, i, ia, g * d.dx, &ca)
                if ib >= 0:
                    pass_on(adj, i, ib, g * d.dy, &cb)
        top = lo - 1
    if bottom > 0:
        adj[bottom - 1] = (adj[bottom - 1] + ca) + cb


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void branch_sweep(Py_ssize_t n, const op_t* op, const node_t* a, const node_t* b,
                              const double* c, const double* val, signed char* piece) noexcept nogil:
    """piece[i] = the piece (op_branch) scalar row i falls on at the values in
    val, -1 for a smooth row or an array row: what a replay checks its
    inputs against (forward_sweep's branch0)."""
    cdef Py_ssize_t i
    for i in range(n):
        if op[i] < FIRST_ARRAY_OP and op_piecewise(op[i]):
            piece[i] = op_branch(op[i], val[a[i]] if a[i] >= 0 else c[i], val[b[i]] if b[i] >= 0 else c[i])
        else:
            piece[i] = -1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void tangent_sweep(node_t n, const op_t* op, const node_t* a, const node_t* b,
                               const double* c, const double* val, double* tan,
                               unsigned char* reached, Py_ssize_t k) noexcept nogil:
    """Forward mode along k directions at once (vector mode): tan[i * k + j]
    = d row i / d t_j, for the directions already in the INPUT rows'
    tangents, and reached[i] whether any of them reaches row i (the caller
    sets both for INPUT rows; every other row's are written here). Each
    row's partials are worked out once for all k, so a Jacobian by columns
    pays the op's rule (a libm call for tanh') once per k columns; a row no
    direction reaches gets zeros without partials."""
    cdef node_t i, ia, ib
    cdef Py_ssize_t j
    cdef double x, y
    cdef double* t
    cdef const double* ta
    cdef const double* tb
    cdef Partials d
    for i in range(n):
        ia = a[i]
        ib = b[i]
        if ia < 0 and ib < 0:
            continue
        t = tan + i * k
        reached[i] = (ia >= 0 and reached[ia]) or (ib >= 0 and reached[ib])
        if not reached[i]:
            for j in range(k):
                t[j] = 0.0
            continue
        x = val[ia] if ia >= 0 else c[i]
        y = val[ib] if ib >= 0 else c[i]
        d = op_partials(op[i], x, y, val[i], ib >= 0)
        ta = tan + ia * k if ia >= 0 else NULL
        tb = tan + ib * k if ib >= 0 else NULL
        if ia >= 0 and ib >= 0:
            for j in range(k):
                t[j] = azmul(d.dx, ta[j]) + azmul(d.dy, tb[j])
        elif ia >= 0:
            for j in range(k):
                t[j] = azmul(d.dx, ta[j])
        else:
            for j in range(k):
                t[j] = azmul(d.dy, tb[j])


# ONE DIRECTION. cf.hvp(x, v) and a jvp along one direction sweep a single
# tangent. There the sweeps below read the rows lowered (SHAPES), and the
# arithmetic ops, most rows, take their first partials inline with the op a
# constant (lowered_partials, a switch of small cases), where tangent_sweep
# and hvp_sweep call op_partials, a big function, on every row (op_second
# takes the arithmetic ops first, in arith_second); and the reverse sweep and
# the second-order one are one backward pass (reverse_hvp_sweep_1), carrying
# as reverse_sweep does. The same rules and the same sums in the same order: bit for bit the
# gradient of reverse_sweep and the block sweeps' products, but for the sign
# of a nan (x86 keeps the first of two nan operands, and the compiler orders
# the operands of the inlined code its own way). Rosenbrock 10k
# (90k rows): the jvp 547 -> 493 us, the hvp 1,430 -> 1,290 us.
cdef inline Partials lowered_partials(op_t op, double x, double y, double f, bint need_dy) noexcept nogil:
    if op == OP_ADD:
        return arith_partials(OP_ADD, x, y, f)
    elif op == OP_SUB:
        return arith_partials(OP_SUB, x, y, f)
    elif op == OP_MUL:
        return arith_partials(OP_MUL, x, y, f)
    elif op == OP_DIV:
        return arith_partials(OP_DIV, x, y, f)
    elif op == OP_NEG:
        return arith_partials(OP_NEG, x, y, f)
    elif op == OP_SQUARE:
        return arith_partials(OP_SQUARE, x, y, f)
    return op_partials(op, x, y, f, need_dy)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void tangent_sweep_1(node_t lo, node_t hi, const unsigned char* code, const node_t* a,
                                 const node_t* b, const double* pool, const double* val,
                                 double* tan, unsigned char* reached) noexcept nogil:
    """tangent_sweep for one direction, rows lo..hi-1, over a lowered trace
    (ONE DIRECTION)."""
    cdef node_t i, ia, ib
    cdef double x, y
    cdef unsigned char k
    cdef Partials d
    for i in range(lo, hi):
        k = code[i]
        if k == 0:  # an input: the caller set its tangent
            continue
        ia = a[i]
        ib = b[i]
        reached[i] = (ia >= 0 and reached[ia]) or (ib >= 0 and reached[ib])
        if not reached[i]:
            tan[i] = 0.0
            continue
        x = val[ia] if ia >= 0 else pool[~ia]
        y = val[ib] if ib >= 0 else pool[~ib]
        d = lowered_partials(k & OP_BITS, x, y, val[i], ib >= 0)
        if ia >= 0 and ib >= 0:
            tan[i] = azmul(d.dx, tan[ia]) + azmul(d.dy, tan[ib])
        elif ia >= 0:
            tan[i] = azmul(d.dx, tan[ia])
        else:
            tan[i] = azmul(d.dy, tan[ib])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void reverse_hvp_sweep_1(const unsigned char* code, const node_t* a, const node_t* b,
                                     const double* pool, const double* val, const double* tan,
                                     const unsigned char* reached, double* adj, double* adj_tan,
                                     node_t hi, node_t bottom) noexcept nogil:
    """reverse_sweep and hvp_sweep for one direction in one pass, rows hi
    down to bottom, over a lowered trace (ONE DIRECTION): a row's adjoint
    is final when the loop reaches it, so its adjoint tangent's terms can be
    passed on in the same step, from the same partials. The caller seeds
    adj and zeroes adj_tan; both carry as reverse_sweep does (CARRIES), and
    what row bottom carries is added in at the end."""
    cdef node_t i, ia, ib
    cdef double g, gt, x, y, tx, ty, hx, hy, ca = 0.0, cb = 0.0, ta = 0.0, tb = 0.0
    cdef unsigned char k
    cdef Partials d
    cdef Second s
    for i in range(hi, bottom - 1, -1):
        g = (adj[i] + ca) + cb
        adj[i] = g
        gt = (adj_tan[i] + ta) + tb
        adj_tan[i] = gt
        ca = 0.0
        cb = 0.0
        ta = 0.0
        tb = 0.0
        k = code[i]
        if k == 0 or (g == 0.0 and gt == 0.0):
            continue
        ia = a[i]
        ib = b[i]
        x = val[ia] if ia >= 0 else pool[~ia]
        y = val[ib] if ib >= 0 else pool[~ib]
        d = lowered_partials(k & OP_BITS, x, y, val[i], ib >= 0)
        hx = 0.0
        hy = 0.0
        if g != 0.0:
            if ia >= 0:
                pass_on(adj, i, ia, g * d.dx, &ca)
            if ib >= 0:
                pass_on(adj, i, ib, g * d.dy, &cb)
            if (ia >= 0 and reached[ia]) or (ib >= 0 and reached[ib]):
                s = op_second(k & OP_BITS, x, y, val[i])
                tx = tan[ia] if ia >= 0 else 0.0
                ty = tan[ib] if ib >= 0 else 0.0
                hx = azmul(g, azmul(s.dxx, tx) + azmul(s.dxy, ty))
                hy = azmul(g, azmul(s.dxy, tx) + azmul(s.dyy, ty))
        if ia >= 0:
            pass_on(adj_tan, i, ia, azmul(gt, d.dx) + hx, &ta)
        if ib >= 0:
            pass_on(adj_tan, i, ib, azmul(gt, d.dy) + hy, &tb)
    if bottom > 0:
        adj[bottom - 1] = (adj[bottom - 1] + ca) + cb
        adj_tan[bottom - 1] = (adj_tan[bottom - 1] + ta) + tb


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void hvp_sweep(const op_t* op, const node_t* a, const node_t* b,
                           const double* c, const double* val, const double* tan,
                           const unsigned char* reached, const double* adj,
                           double* adj_tan, node_t out, Py_ssize_t k) noexcept nogil:
    """Forward over reverse, along k directions at once: the reverse sweep
    differentiated along the tangents (and reached flags) of a tangent_sweep
    of the same k. adj holds the reverse sweep's adjoints, which do not
    depend on the direction, so they are swept once before, not per
    direction; adj_tan (rows up to out, k each) starts at zero, and of the
    inputs is then the Hessian-vector products H v_j. A row with a zero
    adjoint and zero adjoint tangents passes nothing on (as reverse_sweep)."""
    cdef node_t i, ia, ib
    cdef Py_ssize_t j
    cdef double g, x, y, tx, ty, hx, hy
    cdef double* gt
    cdef bint moving, bent
    cdef Partials d
    cdef Second s
    for i in range(out, -1, -1):
        ia = a[i]
        ib = b[i]
        if ia < 0 and ib < 0:
            continue
        g = adj[i]
        gt = adj_tan + i * k
        moving = g != 0.0
        j = 0
        while not moving and j < k:
            moving = gt[j] != 0.0
            j += 1
        if not moving:
            continue
        x = val[ia] if ia >= 0 else c[i]
        y = val[ib] if ib >= 0 else c[i]
        d = op_partials(op[i], x, y, val[i], ib >= 0)
        # the second-order terms, every product an absolute-zero one: a zero
        # tangent, adjoint or partial contributes exactly 0, so a nan or inf
        # nobody needs (power's log at x < 0 with a constant exponent, sqrt's
        # tangent at 0 behind a flat relu) cannot leak in.
        bent = g != 0.0 and ((ia >= 0 and reached[ia]) or (ib >= 0 and reached[ib]))
        if bent:
            s = op_second(op[i], x, y, val[i])
        for j in range(k):
            hx = 0.0
            hy = 0.0
            if bent:
                tx = tan[ia * k + j] if ia >= 0 else 0.0
                ty = tan[ib * k + j] if ib >= 0 else 0.0
                hx = azmul(g, azmul(s.dxx, tx) + azmul(s.dxy, ty))
                hy = azmul(g, azmul(s.dxy, tx) + azmul(s.dyy, ty))
            if ia >= 0:
                adj_tan[ia * k + j] += azmul(gt[j], d.dx) + hx
            if ib >= 0:
                adj_tan[ib * k + j] += azmul(gt[j], d.dy) + hy

# Part of fastad/_core.pyx (included there).
# The Tape (rows as parallel arrays, growth, sweeps, views) and the current tape of each thread.

# ==== Tape ===================================================================

cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    /* Ask for transparent huge pages on the 2 MiB-aligned interior of a big
       array. A tape's arrays are written once, then read at random by the
       sweep: with 4 KiB pages, a fresh 16 MB adjoint array costs 4,096 page
       faults (about 8 ms on a VM, a third of a 2M-row sweep) and a TLB miss
       per random access. A hint only: nothing changes where it is ignored. */
    static void fastad_advise_huge(void *p, size_t size) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        const size_t huge = (size_t)2 << 20;
        size_t start = ((size_t)p + huge - 1) & ~(huge - 1);
        size_t end = ((size_t)p + size) & ~(huge - 1);
        if (p != NULL && end > start)
            madvise((void *)start, end - start, MADV_HUGEPAGE);
    #endif
    }
    """
    void fastad_advise_huge(void* p, size_t size) nogil

cdef extern from "Python.h":
    int PyList_SetSlice(PyObject* lst, Py_ssize_t low, Py_ssize_t high, PyObject* items) except -1
    const Py_ssize_t PY_SSIZE_T_MAX


cdef struct Storage:  # a tape's arrays, parked between tapes
    op_t* op
    node_t* a
    node_t* b
    double* da
    double* db
    Py_ssize_t cap
    double* adj_mem
    Py_ssize_t adj_cap
    Py_ssize_t adj_dirty
    node_t* in_rows
    Py_ssize_t in_cap

cdef Storage _spare  # zero: empty


cdef class Tape:
    """A recording: rows of (op, a, b, da, db), and adjoints after a sweep.

    Most code never names a tape: ops on leaves record on the current
    thread's tape, and ops on recorded values record on theirs. Use one
    explicitly to collect a computation and look at it:

    >>> import fastad as fad
    >>> x = fad.Var(2.0)
    >>> with fad.Tape() as t:
    ...     y = x * x + 1.0
    >>> len(t)   # INPUT x, square, add
    3
    """

    def __cinit__(self, max_rows=None):
        global _next_serial
        if _spare.cap > 0:  # take the parked arrays
            self.op, self.a, self.b, self.da, self.db = _spare.op, _spare.a, _spare.b, _spare.da, _spare.db
            self.cap = _spare.cap
            self.adj_mem, self.adj_cap, self.in_rows, self.in_cap = _spare.adj_mem, _spare.adj_cap, _spare.in_rows, _spare.in_cap
            self.adj = self.adj_mem + SINKS
            self.adj_dirty = _spare.adj_dirty
            _spare.cap = 0
        else:
            self.op = <op_t*>malloc(FIRST_ROWS * sizeof(op_t))
            self.a = <node_t*>malloc(FIRST_ROWS * sizeof(node_t))
            self.b = <node_t*>malloc(FIRST_ROWS * sizeof(node_t))
            self.da = <double*>malloc(FIRST_ROWS * sizeof(double))
            self.db = <double*>malloc(FIRST_ROWS * sizeof(double))
            self.adj_mem = <double*>calloc(FIRST_ROWS + SINKS, sizeof(double))
            self.cap = FIRST_ROWS
            self.adj_cap = FIRST_ROWS + SINKS
            if not (self.op and self.a and self.b and self.da and self.db and self.adj_mem):
                raise MemoryError("fastad: cannot allocate a tape")
            self.adj = self.adj_mem + SINKS
        self.max_rows = INT32_MAX
        if max_rows is not None:
            if max_rows < 1 or max_rows > INT32_MAX:
                raise ValueError(f"max_rows must be between 1 and {INT32_MAX}, got {max_rows}")
            self.max_rows = max_rows
        self.leaves = []
        self.obj = {}
        self.aux = {}
        self.serial = _next_serial
        _next_serial += 1

    def __dealloc__(self):
        if self.cap <= SPARE_MAX_ROWS and _spare.cap == 0:
            _spare.op, _spare.a, _spare.b, _spare.da, _spare.db = self.op, self.a, self.b, self.da, self.db
            _spare.cap = self.cap
            _spare.adj_mem, _spare.adj_cap, _spare.in_rows, _spare.in_cap = self.adj_mem, self.adj_cap, self.in_rows, self.in_cap
            _spare.adj_dirty = self.adj_dirty
        else:
            free(self.op); free(self.a); free(self.b); free(self.da); free(self.db)
            free(self.adj_mem)
            free(self.in_rows)

    cdef int grow(self) except -1:
        if self.sweeping:  # another thread's sweep reads these arrays: no realloc under it
            raise FastADError(SWEEPING)
        if self.n >= self.max_rows:
            raise FastADError(
                f"the graph has {self.n:,} rows, the most one tape can index "
                f"(max_rows={self.max_rows:,}); record less per tape, or use fad.compile")
        cdef Py_ssize_t new_cap = min(2 * self.cap, <Py_ssize_t>self.max_rows)
        cdef void* p
        # Each array is replaced as soon as its realloc succeeds, so a failure
        # half way leaves every pointer valid (with room for at least cap rows).
        p = realloc(self.op, new_cap * sizeof(op_t))
        if p == NULL: raise MemoryError()
        self.op = <op_t*>p
        p = realloc(self.a, new_cap * sizeof(node_t))
        if p == NULL: raise MemoryError()
        self.a = <node_t*>p
        p = realloc(self.b, new_cap * sizeof(node_t))
        if p == NULL: raise MemoryError()
        self.b = <node_t*>p
        p = realloc(self.da, new_cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self.da = <double*>p
        p = realloc(self.db, new_cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self.db = <double*>p
        p = realloc(self.adj_mem, (new_cap + SINKS) * sizeof(double))
        if p == NULL: raise MemoryError()
        self.adj_mem = <double*>p
        self.adj = self.adj_mem + SINKS
        self.adj_cap = new_cap + SINKS
        fastad_advise_huge(self.adj_mem, (new_cap + SINKS) * sizeof(double))
        # Zero the new adjoints now, while recording: the pages fault in
        # here, a few at a time, instead of all at once in the first sweep
        # (2M rows: 4,096 faults, 8 ms; the sweep itself is 8 ms).
        memset(self.adj + self.cap, 0, (new_cap - self.cap) * sizeof(double))
        self.cap = new_cap
        fastad_advise_huge(self.a, new_cap * sizeof(node_t))
        fastad_advise_huge(self.b, new_cap * sizeof(node_t))
        fastad_advise_huge(self.da, new_cap * sizeof(double))
        fastad_advise_huge(self.db, new_cap * sizeof(double))
        return 0

    cdef inline node_t push(self, op_t op, node_t a, node_t b, double da, double db) except -1:
        cdef node_t i = <node_t>self.n
        if self.n == self.cap or self.n == self.max_rows:
            self.grow()
        self.op[i] = op
        self.a[i] = a
        self.b[i] = b
        self.da[i] = da
        self.db[i] = db
        self.n = i + 1
        return i

    cdef node_t input_row(self, Var leaf) except -1:
        """The leaf's INPUT row on this tape, appended on first use."""
        if leaf.serial == self.serial:
            return leaf.idx
        if leaf.made and leaf.serial != 0:  # from another tape: it may have a row here already
            self.rejoins += 1
        cdef node_t i = self.push(OP_INPUT, -1, -1, leaf.val, 0.0)
        self.add_leaf(leaf, i)
        leaf.serial = self.serial
        leaf.idx = i
        return i

    cdef node_t array_input_row(self, Array leaf) except -1:
        """The Array leaf's INPUT row on this tape, appended on first use."""
        if leaf.serial == self.serial:
            return leaf.idx
        if leaf.made and leaf.serial != 0:  # (as input_row)
            self.rejoins += 1
        cdef node_t i = self.push(OP_ARRAY_INPUT, -1, -1, NAN, 0.0)
        self.obj[i] = leaf.value
        self.has_arrays = True
        self.add_leaf(leaf, i)
        leaf.serial = self.serial
        leaf.idx = i
        return i

    cdef int add_leaf(self, object leaf, node_t row) except -1:
        cdef void* p
        cdef Py_ssize_t k = len(self.leaves)
        if k == self.in_cap:
            p = realloc(self.in_rows, (2 * k + 8) * sizeof(node_t))
            if p == NULL: raise MemoryError()
            self.in_rows = <node_t*>p
            self.in_cap = 2 * k + 8
        self.in_rows[k] = row
        self.leaves.append(leaf)
        return 0

    cdef int sweep(self, node_t out, object seed, bint deposit) except -1:
        """Reverse sweep from row `out`; with `deposit`, add the inputs'
        adjoints into their leaves' grads (backward() does, grad() reads
        its own leaves' adjoints and leaves other leaves alone). One at a
        time: the C loops run without the GIL, over the tape's one adjoint
        column, and another thread could otherwise sweep it too or grow it."""
        if self.sweeping:
            raise FastADError(SWEEPING)
        if self.cap > self.n + self.n // 8 or self.in_cap > 2 * len(self.leaves) + 16:
            self.shrink()  # a swept tape keeps at most 12.5% spare rows: 33 bytes a row, 37 with them
        self.sweeping = True
        self.input_sums = None
        try:
            return self.sweep_rows(out, seed, deposit)
        finally:
            self.sweeping = False

    cdef int sweep_rows(self, node_t out, object seed, bint deposit) except -1:
        cdef Py_ssize_t n = out + 1, k
        cdef node_t r
        cdef Var leaf
        cdef Array aleaf
        # Rows below adj_dirty may hold an earlier sweep's adjoints (this
        # tape's, with retain_graph, or a parked tape's); the rest are 0.
        memset(self.adj_mem, 0, (SINKS + min(n, self.adj_dirty)) * sizeof(double))
        self.adj_dirty = max(n, self.adj_dirty)
        self.adj_n = n
        if self.has_arrays:
            # Array adjoints are made when the first contribution arrives (a
            # row nothing reached has none, and its rule is skipped), except
            # for arrays that `elem` rows read: the C loop adds into those.
            self.arr_adj = {row: np.zeros(self.obj[row].shape) for row in self.elem_targets(out)}
            if out in self.obj:
                self.arr_adj[out] = np.array(np.broadcast_to(seed, self.obj[out].shape), np.float64)
            else:
                self.adj[out] = seed
            self.sweep_arrays(out)
        else:
            self.adj[out] = seed
            with nogil:
                jacobian_sweep(self.op, self.a, self.b, self.da, self.db, self.adj, out, NULL)
        if _debug_nans:
            self.find_nan_adjoint(out)
        if not deposit:
            return 0
        for k in range(len(self.leaves)):
            r = self.in_rows[k]
            if r >= n:
                continue
            if type(self.leaves[k]) is Var:
                leaf = <Var>self.leaves[k]
                leaf.grad_ += self.adj[r]
            else:
                aleaf = <Array>self.leaves[k]
                g = self.arr_adj.pop(r, None)  # the leaf takes the array over: no copy
                if g is not None:
                    aleaf.grad_ = g if aleaf.grad_ is None else aleaf.grad_ + g
        return 0

    cdef set elem_targets(self, node_t out):
        """The array rows that `elem` rows at or below `out` read."""
        cdef node_t i
        cdef set rows = set()
        for i in range(out + 1):
            if self.op[i] == OP_ELEM:
                rows.add(self.a[i])
        return rows

    cdef int sweep_arrays(self, node_t out) except -1:
        """The reverse sweep of a tape with array rows: the C loop runs
        until it meets an array row, that row's rule runs (a `map` row whose
        operands fit its shape in C, map_backward; any other by its NumPy
        rule in fastad/array_rules.py), and the C loop resumes below it."""
        global _array_rules
        if _array_rules is None:
            from fastad.array_rules import RULES
            _array_rules = [RULES.get(code) for code in range(N_OPS)]
        cdef double** elem_adj = <double**>calloc(out + 1, sizeof(double*))
        cdef double[::1] buf
        cdef node_t i = out
        if elem_adj == NULL:
            raise MemoryError()
        try:
            for row, g in self.arr_adj.items():  # zeros, contiguous; rules add into them in place
                if g.size:
                    buf = g.reshape(-1)
                    elem_adj[row] = &buf[0]
            while i >= 0:
                if self.op[i] < FIRST_ARRAY_OP or self.op[i] == OP_ELEM:
                    with nogil:
                        i = jacobian_sweep(self.op, self.a, self.b, self.da, self.db, self.adj, i, elem_adj)
                    continue
                if self.op[i] != OP_ARRAY_INPUT:
                    if _debug_nans:
                        clean = [r for r in self.arg_rows(i) if not self.adjoint_has_nan(r)]
                    if self.op[i] != OP_MAP or not map_backward(self, i):
                        g = self.arr_adj.get(i) if i in self.obj else self.adj[i]
                        if g is not None and not (type(g) is float and g == 0.0):  # else nothing reached it
                            _array_rules[self.op[i]](self, i, self.a[i], self.b[i], self.constant(i),
                                                     self.aux.get(i), g)
                    if _debug_nans:
                        self.array_nan_adjoint(i, clean)
                i -= 1
        finally:
            free(elem_adj)
        return 0

    cdef int find_nan_adjoint(self, node_t out) except -1:
        """debug_nans: walking rows in sweep order, the first scalar row whose
        adjoint is a number but which passed a nan to an argument raises, or
        the first whose adjoint came out nan from numbers alone (its uses
        passed back inf and -inf, sqrt(x) - sqrt(x) at 0)."""
        cdef node_t i, ia, ib
        cdef double g, x, y, pa, pb
        cdef double[::1] val = self.values()
        cdef bytearray nan_in = bytearray(out + 1)  # a row was passed a nan (or an array rule's adjoint)
        cdef dict elements = {}  # (array row, flat index) -> [sum of its element reads' adjoints, any a nan]
        for i in range(out, -1, -1):
            g = self.adj[i]
            if g != g and i != out and not nan_in[i] and (self.op[i] < FIRST_ARRAY_OP or self.op[i] == OP_ELEM):
                raise NanError(
                    f"fastad: the reverse sweep made nan adding up the adjoint of row {i} "
                    f"(op '{_ops_table.OPS[self.op[i]].name}'): its uses passed back inf and -inf")
            if self.op[i] == OP_ELEM:  # adds into one element of its array's adjoint
                part = elements.setdefault((self.a[i], <Py_ssize_t>self.db[i]), [0.0, False])
                part[0] += g
                part[1] = part[1] or g != g
                continue
            if self.op[i] >= FIRST_ARRAY_OP:
                for r in self.arg_rows(i):
                    nan_in[r] = 1
                continue
            if g == 0.0 or self.op[i] == OP_INPUT:
                continue
            ia, ib = self.a[i], self.b[i]
            pa, pb = g * self.da[i], g * self.db[i]
            if ia >= 0 and pa != pa:
                nan_in[ia] = 1
            if ib >= 0 and pb != pb:
                nan_in[ib] = 1
            x = val[ia] if ia >= 0 else self.da[i]
            y = val[ib] if ib >= 0 else self.db[i]
            if g != g or x != x or y != y:
                continue  # a nan in: its nan product is not this row's making
            if (ia >= 0 and pa != pa) or (ib >= 0 and pb != pb):
                args = (x, y)
                if _ops_table.OPS[self.op[i]].arity == 1:
                    args = (x,)
                raise NanError(
                    f"fastad: the reverse sweep made nan at op '{_ops_table.OPS[self.op[i]].name}' "
                    f"(row {i}) with inputs {args} and adjoint {g}")
        for (r, k), (total, passed_nan) in elements.items():  # an array read element by element
            if total != total and not passed_nan:  # (whatever array rules add there too)
                raise NanError(
                    f"fastad: the reverse sweep made nan adding up the adjoint of element {k} of "
                    f"row {r}: its uses passed back inf and -inf")
        return 0

    cdef list arg_rows(self, node_t i):
        """The argument rows of row i (variadic array ops keep theirs in aux)."""
        if _ops_table.OPS[self.op[i]].arity == -1:
            return [r for r in self.aux[i][0] if r >= 0]
        return [r for r in (self.a[i], self.b[i]) if r >= 0]

    cdef bint adjoint_has_nan(self, node_t r):
        g = self._adjoint(r)
        return g is not None and bool(np.isnan(g).any())

    cdef int array_nan_adjoint(self, node_t i, list clean) except -1:
        """debug_nans, reverse: array row i's rule just ran; if an argument
        whose adjoint was nan-free (`clean`) now has a nan, while row i's own
        adjoint has none, the rule made it: raise, naming the op."""
        if (self.adjoint_has_nan(i) or any(np.isnan(self._value(r)).any() for r in self.arg_rows(i))
                or constants_have_nan(self.aux.get(i))):
            return 0  # nan in (adjoint, value or a constant operand), nan out
        for r in clean:
            if self.adjoint_has_nan(r):
                raise NanError(
                    f"fastad: the reverse sweep made nan at op '{array_op_name(self.op[i], self.db[i])}' "
                    f"(row {i})")
        return 0

    # -- for the array rules (fastad/array_rules.py): one row at a time --

    def _row(self, Py_ssize_t i):
        """(op, a, b, c, aux) of row i."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.op[i], self.a[i], self.b[i], self.constant(i), self.aux.get(i)

    def _value(self, Py_ssize_t r):
        """Row r's value: its ndarray, or its float."""
        if not 0 <= r < self.n:
            raise IndexError(r)
        v = self.obj.get(r)
        if v is not None:
            return v
        if self.op[r] == OP_INPUT or self.op[r] >= FIRST_ARRAY_OP:
            return self.da[r]
        return self.values()[r]

    cdef object values(self):
        """Every row's value, recomputed (value_sweep) on first need and
        kept while no row is added: for replays, explain and the array rules
        that read a scalar argument. nan for an array value."""
        cdef double[::1] v
        if self.vals is None or len(self.vals) != self.n:
            self.vals = np.empty(self.n)
            if self.n:
                v = self.vals
                value_sweep(self.n, self.op, self.a, self.b, self.da, self.db, &v[0])
        return self.vals

    cdef double constant(self, node_t i):
        """Row i's constant c: in the slot of its -1 argument (a unary op's
        b, 0), or an INPUT, elem or array row's db."""
        if self.op[i] == OP_INPUT or self.op[i] >= FIRST_ARRAY_OP or self.b[i] < 0:
            return self.db[i]
        return self.da[i] if self.a[i] < 0 else 0.0

    def _adjoint(self, Py_ssize_t r):
        """Row r's adjoint in the current sweep: ndarray or float; None for
        an array row that nothing reached."""
        if not 0 <= r < self.adj_n:
            raise IndexError(r)
        if r in self.obj:
            return self.arr_adj.get(r)
        return self.adj[r]

    def _add_adjoint(self, Py_ssize_t r, g, bint fresh=False):
        """Add g into row r's adjoint (g has r's shape or broadcasts to it; a
        float for scalar rows).
        fresh: g is a new array the caller gives up, kept as it is when it is
        the first contribution (a weight matrix's adjoint is not copied)."""
        if not 0 <= r < self.adj_n:
            raise IndexError(r)
        v = self.obj.get(r)
        if v is None:
            self.adj[r] += <double>g
            return
        a = self.arr_adj.get(r)
        if a is None:  # the first contribution: an array of its own (g may be a view, or broadcast)
            if fresh and is_adjoint_buffer(g, v):
                self.arr_adj[r] = g
                return
            a = np.empty(v.shape)
            a[...] = g
            self.arr_adj[r] = a
        else:
            a += g

    cdef void shrink(self):
        """Give back the capacity beyond the rows and leaves in use (a
        realloc that shrinks keeps the block where it is, or moves it: both
        are fine). The leaves' table too: a tape that took over a parked
        one's arrays may have inherited room for 10,000 leaves. Never below
        FIRST_ROWS rows: the arrays may be parked for the next tape, which
        would otherwise grow from a handful of rows."""
        cdef Py_ssize_t n = self.n if self.n > FIRST_ROWS else FIRST_ROWS
        cdef Py_ssize_t k = len(self.leaves) + 8
        cdef void* p
        if self.sweeping:  # another thread's sweep reads the rows (consume() after its own)
            return
        if self.in_cap > k + k // 8:
            p = realloc(self.in_rows, k * sizeof(node_t))
            if p != NULL:
                self.in_rows = <node_t*>p
                self.in_cap = k
        if self.cap <= FIRST_ROWS or n == self.cap:
            return
        p = realloc(self.op, n * sizeof(op_t))
        if p != NULL: self.op = <op_t*>p
        p = realloc(self.a, n * sizeof(node_t))
        if p != NULL: self.a = <node_t*>p
        p = realloc(self.b, n * sizeof(node_t))
        if p != NULL: self.b = <node_t*>p
        p = realloc(self.da, n * sizeof(double))
        if p != NULL: self.da = <double*>p
        p = realloc(self.db, n * sizeof(double))
        if p != NULL: self.db = <double*>p
        p = realloc(self.adj_mem, (n + SINKS) * sizeof(double))
        if p != NULL:
            self.adj_mem = <double*>p
            self.adj = self.adj_mem + SINKS
            self.adj_cap = n + SINKS
        self.cap = n  # if a realloc failed, its block is simply larger than cap says
        self.adj_dirty = min(self.adj_dirty, n)

    cdef void reset(self):
        """Forget every row (no Var refers to this tape any more)."""
        global _next_serial
        if self.cap > SPARE_MAX_ROWS:  # do not keep a huge tape's memory forever
            self.op = <op_t*>realloc(self.op, FIRST_ROWS * sizeof(op_t))
            self.a = <node_t*>realloc(self.a, FIRST_ROWS * sizeof(node_t))
            self.b = <node_t*>realloc(self.b, FIRST_ROWS * sizeof(node_t))
            self.da = <double*>realloc(self.da, FIRST_ROWS * sizeof(double))
            self.db = <double*>realloc(self.db, FIRST_ROWS * sizeof(double))
            self.adj_mem = <double*>realloc(self.adj_mem, (FIRST_ROWS + SINKS) * sizeof(double))
            self.adj = self.adj_mem + SINKS
            self.cap = FIRST_ROWS  # shrinking realloc keeps the block on failure... and returns it
            self.adj_cap = FIRST_ROWS + SINKS
            self.adj_dirty = min(self.adj_dirty, FIRST_ROWS)
        self.n = 0
        self.adj_n = 0
        if self.vals is not None:  # (an unconditional store cost 20 ns a reset)
            self.vals = None
        PyList_SetSlice(<PyObject*>self.leaves, 0, PY_SSIZE_T_MAX, NULL)  # clear(): no slice object, no method lookup
        if self.has_arrays:
            self.obj = {}
            self.aux = {}
            self.arr_adj = None
            self.has_arrays = False
        self.consumed = False
        self.rejoins = 0
        self.input_sums = None
        self.serial = _next_serial
        _next_serial += 1

    # -- looking at a tape (Python speed; for explain, tests, pickling) --

    def __len__(self):
        return self.n

    @property
    def nbytes(self):
        """Bytes allocated for this tape's rows, adjoints, input table and
        recomputed values (while it holds some)."""
        return (self.cap * (sizeof(op_t) + 2 * sizeof(node_t) + 2 * sizeof(double))
                + self.adj_cap * sizeof(double) + self.in_cap * sizeof(node_t)
                + (self.vals.nbytes if self.vals is not None else 0))

    def rows(self):
        """Copies of the rows: dict of op, a, b, da, db (the stored columns),
        c (each row's constant) and val (the values, recomputed), and adj
        (None before a sweep). An array row's value and adjoint do not fit a
        float column: they read nan there (the arrays are in tape.obj /
        tape.arr_adj; shapes() says which rows hold arrays)."""
        cdef Py_ssize_t n = self.n, i
        out = {"op": np.empty(n, np.uint8), "a": np.empty(n, np.int32), "b": np.empty(n, np.int32),
               "da": np.empty(n, np.float64), "db": np.empty(n, np.float64),
               "c": np.empty(n, np.float64), "val": np.array(self.values()), "adj": None}
        cdef uint8_t[::1] op_v = out["op"]
        cdef node_t[::1] a_v = out["a"], b_v = out["b"]
        cdef double[::1] da_v = out["da"], db_v = out["db"], c_v = out["c"], adj_v
        if n:
            memcpy(&op_v[0], self.op, n * sizeof(op_t))
            memcpy(&a_v[0], self.a, n * sizeof(node_t))
            memcpy(&b_v[0], self.b, n * sizeof(node_t))
            memcpy(&da_v[0], self.da, n * sizeof(double))
            memcpy(&db_v[0], self.db, n * sizeof(double))
        for i in range(n):
            c_v[i] = self.constant(<node_t>i)
        if self.adj_n:
            out["adj"] = np.zeros(n, np.float64)
            adj_v = out["adj"]
            memcpy(&adj_v[0], self.adj, min(n, self.adj_n) * sizeof(double))
            for r in self.obj:
                adj_v[<Py_ssize_t>r] = NAN
        return out

    def shapes(self):
        """Per row: None where its value is a number, the shape of its array
        value where it is one (rows() reads nan for those)."""
        return [self.obj[i].shape if i in self.obj else None for i in range(self.n)]

    def inputs(self):
        """[(row, leaf Var)] for every INPUT row, in row order."""
        return [(self.in_rows[k], self.leaves[k]) for k in range(len(self.leaves))]

    def watch(self, *leaves):
        """Give these leaves (Var or Array) their INPUT rows now, in this
        order, instead of at first use: traces then list inputs first."""
        for leaf in leaves:
            if type(leaf) is Var and (<Var>leaf).tape is None:
                self.input_row(<Var>leaf)
            elif type(leaf) is Array and (<Array>leaf).tape is None:
                self.array_input_row(<Array>leaf)
            else:
                raise TypeError(f"watch() takes leaf Vars and Arrays, got {leaf!r}")

    def explain(self, fmt="text", output=None):
        """The evaluation trace as a table; see fastad.explain. The gradient
        is of `output` (a Var or row), by default the row the last
        backward() swept from (else the last row)."""
        from fastad.explain import explain_tape
        if output is None and self.adj_n:
            output = self.adj_n - 1
        return explain_tape(self, fmt, output=output)

    def __enter__(self):
        cdef _ThreadState st = thread_state()
        st.saved.append((st.tape, st.implicit))
        st.tape = self
        st.implicit = False
        return self

    def __exit__(self, *exc):
        cdef _ThreadState st = thread_state()
        st.tape, st.implicit = st.saved.pop()
        return False

    def __repr__(self):
        state = ", consumed" if self.consumed else ""
        return f"<fastad.Tape {self.n:,} rows, {self.nbytes:,} bytes{state}>"


# ==== the current tape of each thread ========================================

cdef class _ThreadState:
    cdef Tape tape      # where ops on leaves record; None until the first
    cdef bint implicit  # made by fastad (not a `with Tape()`): may be reset or replaced
    cdef int no_grad    # depth of `with no_grad()` blocks
    cdef list recordings  # compile's open recordings (_Recording), innermost last:
                          # float(v) records a guard there (pin)
    cdef list saved     # (tape, implicit) of enclosing `with Tape()` blocks

    def __cinit__(self):
        self.implicit = True
        self.saved = []
        self.recordings = []


_local = threading.local()
# A thread-local lookup costs tens of ns; ops on leaves need the state often,
# so remember the last thread's. Safe under the GIL: nothing between the
# check and the use can switch threads. The key is CPython's id of the
# thread's state, which is never reused. A thread ident is: keyed by it, the
# next thread took over a finished thread's state, and its ops went on that
# thread's tape.
cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState* PyThreadState_Get()
    uint64_t PyThreadState_GetID(PyThreadState* tstate)

cdef uint64_t _cached_ident = 0
cdef _ThreadState _cached_state = None


cdef class _StateGuard:
    """Kept by the thread's threading.local beside its state, and by nothing
    else: it goes when the thread ends, and takes the thread's state out of
    the cache if it is still there, so a finished thread's tape does not
    wait for another thread's first op to be freed."""
    cdef _ThreadState state

    def __dealloc__(self):
        global _cached_ident, _cached_state
        if _cached_state is self.state:
            _cached_ident = 0
            _cached_state = None


cdef _ThreadState thread_state():
    global _cached_ident, _cached_state
    cdef uint64_t ident = PyThreadState_GetID(PyThreadState_Get())
    cdef _StateGuard guard
    if ident == _cached_ident and _cached_state is not None:
        return _cached_state
    st = getattr(_local, "state", None)
    if st is None:
        st = _ThreadState()
        guard = _StateGuard()
        guard.state = st
        _local.state, _local.guard = st, guard
    _cached_ident = ident
    _cached_state = st
    return st


def check_own_leaves(Tape t):
    """check_nested, for compile's recordings."""
    check_nested(t)


cdef int check_nested(Tape t) except -1:
    """Raise when t, the tape of a grad or compile recording, holds a leaf
    that an enclosing one made for its function (`made` on its tape): grad
    of grad through a closure, where the inner result is a number and the
    outer derivative would be a silent 0. Costs nothing unless tapes nest."""
    outer = enclosing_leaves(t)
    if outer and any(id(leaf) in outer for leaf in t.leaves):
        raise_nested()
    return 0


cdef set enclosing_leaves(Tape t):
    """The ids of the leaves that the grad or compile recordings enclosing
    this one (t is its tape) made for their functions."""
    cdef _ThreadState st = thread_state()
    outer = set()
    if t is None or len(st.saved) < 2:  # the first entry is the state before any block
        return outer
    for tape, _ in st.saved:
        if tape is not None and tape is not t:
            outer.update(id(leaf) for leaf in leaves_made(tape))
    return outer


cdef list leaves_made(Tape t):
    """The leaves grad or compile made for its function's arguments on t
    (`made`: a Var or Array per argument, or lists, tuples, dicts of them)."""
    cdef list out = []
    stack = [t.made] if t.made is not None else []
    while stack:
        v = stack.pop()
        if type(v) is list or type(v) is tuple:
            stack.extend(v)
        elif type(v) is dict:  # grad's leaves for a dict argument
            stack.extend(v.values())
        else:
            out.append(v)
    return out


cdef int raise_nested() except -1:
    raise FastADError("the function uses an argument of an enclosing grad, or a value computed from "
                      "one (grad of grad through a closure), which its result, a number, would cut "
                      "from that grad's derivative; fastad differentiates one level: use fad.hessian "
                      "or fad.hvp for second derivatives, or .value for values from outside")


cdef Tape current_tape():
    """The tape ops on leaves record on. The thread's implicit tape is reused
    in place when no Var refers to it any more (so a loop of `y = f(x).value`
    keeps memory flat), and replaced when a backward() consumed it."""
    cdef _ThreadState st = thread_state()
    cdef Tape t = st.tape
    if t is None:
        t = Tape()
        st.tape = t
    elif st.implicit:
        if Py_REFCNT(t) == 2:  # st.tape and t: no Var points into it
            if t.n:
                t.reset()
        elif t.consumed:
            t = Tape()
            st.tape = t
    elif t.consumed:
        if t.made is not None:  # grad's or compile's own tape
            raise FastADError("the function called backward() on a value that fad.grad (or compile) "
                              "was recording, which ends that recording; inside the function, "
                              "differentiate with fad.grad of an inner function instead")
        raise FastADError("this `with fad.Tape()` block's tape was already swept by backward(); "
                          "pass retain_graph=True to keep recording on it")
    return t


cdef void consume(Tape t):
    """backward() without retain_graph: no more ops or sweeps on t. The
    thread lets go of it too, so its memory goes with the user's last handle,
    and the rows it keeps for .value / .grad / explain shrink to fit (a
    consumed tape never grows again)."""
    t.consumed = True
    t.shrink()
    t.vals = None  # recomputed for the sweep's array rules, perhaps: not kept
    cdef _ThreadState st = thread_state()
    if st.implicit and st.tape is t:
        st.tape = None


class no_grad:
    """Compute values without recording: ops on Vars return new leaves.

    >>> import fastad as fad
    >>> x = fad.Var(3.0)
    >>> with fad.no_grad():
    ...     y = x * x
    >>> y.value, y.tape is None
    (9.0, True)
    """

    def __enter__(self):
        global _no_grad_threads
        cdef _ThreadState st = thread_state()
        if st.no_grad == 0:
            _no_grad_threads += 1
        st.no_grad += 1
        return self

    def __exit__(self, *exc):
        global _no_grad_threads
        cdef _ThreadState st = thread_state()
        st.no_grad -= 1
        if st.no_grad == 0:
            _no_grad_threads -= 1
        return False


cdef class _Recording:
    """One open recording of compile, for its pins: its tape, the leaves it
    made for f's arguments (by id, gathered on first use: tape.made is set
    inside the block), the values pinned on it already (their keys) and how
    many float(v) took numbers out of it."""
    cdef Tape tape
    cdef set leaf_ids
    cdef set pinned
    cdef readonly Py_ssize_t floats

    def __cinit__(self, Tape tape):
        self.tape = tape
        self.pinned = set()

    cdef set arguments(self):
        if self.leaf_ids is None:
            self.leaf_ids = {id(leaf) for leaf in (self.tape.made or ())}
        return self.leaf_ids


class pinning:
    """While compile records f: float(v) and int(v) of a recorded value
    guard that value (fastad/_record.pxi, pin), so a replay never reuses a
    number Python took out of the recording. Elsewhere a conversion records
    nothing (a loop of float(loss) must not grow the tape)."""

    def __enter__(self):  # (inside compile's `with Tape()`: the current tape is the recording)
        cdef _ThreadState st = thread_state()
        st.recordings.append(_Recording(st.tape))
        return st.recordings[-1]

    def __exit__(self, *exc):
        cdef _ThreadState st = thread_state()
        st.recordings.pop()
        return False


class recording_on:
    """Record inside a `no_grad` block, for this block: grad, compile and
    the transforms built on them ask for a graph, and inside no_grad they
    would get constants (a gradient of silent zeros)."""

    def __enter__(self):
        global _no_grad_threads
        cdef _ThreadState st = thread_state()
        self.depth = st.no_grad
        if self.depth:
            st.no_grad = 0
            _no_grad_threads -= 1
        return self

    def __exit__(self, *exc):
        global _no_grad_threads
        cdef _ThreadState st = thread_state()
        if self.depth:
            st.no_grad = self.depth
            _no_grad_threads += 1
        return False


# Called with the new setting whenever debug_nans changes: compiled replays
# (fastad/compiled.py) check their results only while it is on, at no cost
# to a call while it is off.
debug_nans_listeners = []


class debug_nans:
    """Raise fad.NanError (a FloatingPointError too) at the first op whose
    value is nan while its inputs are not, naming the op. Off by default
    (IEEE results instead). fad.debug_nans(True) turns it on and
    fad.debug_nans(False) off; `with fad.debug_nans():` turns it on for
    the block and then back to what it was. The setting is one for the
    process, not per thread (the ops test one flag): blocks in two threads
    that overlap restore each other's setting.

    >>> import fastad as fad
    >>> with fad.debug_nans():
    ...     fad.log(fad.Var(-1.0))
    Traceback (most recent call last):
    ...
    fastad._core.NanError: fastad: op 'log' made nan from inputs with no nan (-1.0,)
    >>> fad.log(fad.Var(-1.0))
    Var(nan, row=1)
    """

    def __init__(self, bint enable=True):
        self.enable = enable
        self.made_at = _debug_nans  # what the first block goes back to (the call switched already)
        self.before = []  # the setting each open block of this object found
        set_debug_nans(enable)

    def __enter__(self):
        self.before.append(self.made_at if self.made_at is not None else _debug_nans)
        self.made_at = None
        set_debug_nans(self.enable)
        return self

    def __exit__(self, *exc):
        set_debug_nans(self.before.pop())
        return False

    def __repr__(self):
        return f"fad.debug_nans({bool(_debug_nans)})"


cdef set_debug_nans(bint enable):
    global _debug_nans
    _debug_nans = enable
    for listener in debug_nans_listeners:
        listener(enable)

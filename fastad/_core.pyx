# cython: language_level=3, embedsignature=True, cdivision=True
"""fastad's compiled core: the tape, the Var handle, and the reverse sweep.

Recording: every operator on a Var computes its value with the op's rule
(fastad/_rules.pxd) and appends one row (op, a, b, c, val) to a Tape.
Sweeping: `reverse_sweep` walks the rows backwards from the output in C,
without the GIL, multiplying each row's partials by its adjoint.
"""
cimport cython
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_REFCNT
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uint8_t, uint64_t, INT32_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
from libc.math cimport pow, NAN

import threading

import numpy as np
cimport numpy as cnp

from fastad._ops cimport *
from fastad._rules cimport op_value, op_partials, Partials
from fastad._sweeps cimport reverse_sweep
from fastad import ops as _ops_table


class FastADError(Exception):
    """Misuse of a tape: a consumed graph, mixed tapes, a graph too large.

    >>> z = fad.Var(2.0) * 3.0
    >>> z.backward()
    >>> z.backward()
    Traceback (most recent call last):
    ...
    fastad._core.FastADError: backward() was already called on this graph and its tape was released; pass retain_graph=True to the first backward() to sweep it again
    """


MIXED_TAPES = ("these values were recorded on two different tapes (another thread, another "
               "`with fad.Tape()` block, or a graph already swept); an op can only combine "
               "values of one tape")
CONSUMED = ("this value belongs to a graph that backward() already swept and released; "
            "recompute it, or pass retain_graph=True to backward() to keep the graph")
SWEPT_TWICE = ("backward() was already called on this graph and its tape was released; "
               "pass retain_graph=True to the first backward() to sweep it again")


# Rows a tape starts with, and the largest tape whose memory is kept for the
# next tape (a one-slot cache: building a fresh tape per grad() call would
# otherwise malloc and page-fault its arrays every time).
cdef enum:
    FIRST_ROWS = 256
    SPARE_MAX_ROWS = 1 << 18

cdef uint64_t _next_serial = 1
cdef bint _debug_nans = False
cdef object _array_backward = None  # fastad.array_rules.backward, imported on first use
cdef int _no_grad_threads = 0  # threads inside `no_grad`: 0 skips the per-op check


# ==== Tape ===================================================================

cdef struct Storage:  # a tape's arrays, parked between tapes
    op_t* op
    node_t* a
    node_t* b
    double* c
    double* val
    Py_ssize_t cap
    double* adj
    Py_ssize_t adj_cap
    node_t* in_rows
    Py_ssize_t in_cap

cdef Storage _spare  # zero: empty


cdef class Tape:
    """A recording: rows of (op, a, b, c, val), and adjoints after a sweep.

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
            self.op, self.a, self.b, self.c, self.val = _spare.op, _spare.a, _spare.b, _spare.c, _spare.val
            self.cap = _spare.cap
            self.adj, self.adj_cap, self.in_rows, self.in_cap = _spare.adj, _spare.adj_cap, _spare.in_rows, _spare.in_cap
            _spare.cap = 0
        else:
            self.op = <op_t*>malloc(FIRST_ROWS * sizeof(op_t))
            self.a = <node_t*>malloc(FIRST_ROWS * sizeof(node_t))
            self.b = <node_t*>malloc(FIRST_ROWS * sizeof(node_t))
            self.c = <double*>malloc(FIRST_ROWS * sizeof(double))
            self.val = <double*>malloc(FIRST_ROWS * sizeof(double))
            self.cap = FIRST_ROWS
            if not (self.op and self.a and self.b and self.c and self.val):
                raise MemoryError("fastad: cannot allocate a tape")
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
        if self.cap <= SPARE_MAX_ROWS and self.adj_cap <= SPARE_MAX_ROWS and _spare.cap == 0:
            _spare.op, _spare.a, _spare.b, _spare.c, _spare.val = self.op, self.a, self.b, self.c, self.val
            _spare.cap = self.cap
            _spare.adj, _spare.adj_cap, _spare.in_rows, _spare.in_cap = self.adj, self.adj_cap, self.in_rows, self.in_cap
        else:
            free(self.op); free(self.a); free(self.b); free(self.c); free(self.val)
            free(self.adj)
            free(self.in_rows)

    cdef int grow(self) except -1:
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
        p = realloc(self.c, new_cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self.c = <double*>p
        p = realloc(self.val, new_cap * sizeof(double))
        if p == NULL: raise MemoryError()
        self.val = <double*>p
        self.cap = new_cap
        return 0

    cdef inline node_t push(self, op_t op, node_t a, node_t b, double c, double v) except -1:
        cdef node_t i = <node_t>self.n
        if self.n == self.cap or self.n == self.max_rows:
            self.grow()
        self.op[i] = op
        self.a[i] = a
        self.b[i] = b
        self.c[i] = c
        self.val[i] = v
        self.n = i + 1
        return i

    cdef node_t input_row(self, Var leaf) except -1:
        """The leaf's INPUT row on this tape, appended on first use."""
        if leaf.serial == self.serial:
            return leaf.idx
        cdef node_t i = self.push(OP_INPUT, -1, -1, 0.0, leaf.val)
        self.add_leaf(leaf, i)
        leaf.serial = self.serial
        leaf.idx = i
        return i

    cdef node_t array_input_row(self, Array leaf) except -1:
        """The Array leaf's INPUT row on this tape, appended on first use."""
        if leaf.serial == self.serial:
            return leaf.idx
        cdef node_t i = self.push(OP_ARRAY_INPUT, -1, -1, 0.0, NAN)
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
        its own leaves' adjoints and leaves other leaves alone)."""
        cdef Py_ssize_t n = out + 1, k
        cdef node_t r
        cdef Var leaf
        cdef Array aleaf
        if self.cap > self.n + self.n // 4:
            self.shrink()  # a swept tape keeps at most 25% spare rows: under 40 bytes a row
        if self.adj_cap < n:
            free(self.adj)
            self.adj = <double*>malloc(n * sizeof(double))
            self.adj_cap = n if self.adj else 0
            if self.adj == NULL:
                raise MemoryError("fastad: cannot allocate adjoints")
        memset(self.adj, 0, n * sizeof(double))
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
                reverse_sweep(self.op, self.a, self.b, self.c, self.val, self.adj, out, NULL)
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
                g = self.arr_adj.get(r)
                if g is not None:
                    aleaf.grad_ = g.copy() if aleaf.grad_ is None else aleaf.grad_ + g
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
        until it meets an array row, that row's rule runs (a `map` row of
        same-shape operands in C, map_backward; any other by its NumPy rule
        in fastad/array_rules.py), and the C loop resumes below it."""
        global _array_backward
        if _array_backward is None:
            from fastad.array_rules import backward
            _array_backward = backward
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
                        i = reverse_sweep(self.op, self.a, self.b, self.c, self.val, self.adj, i, elem_adj)
                    continue
                if self.op[i] != OP_ARRAY_INPUT:
                    if _debug_nans:
                        clean = [r for r in self.arg_rows(i) if not self.adjoint_has_nan(r)]
                    if self.op[i] != OP_MAP or not map_backward(self, i):
                        _array_backward(self, i, self.arr_adj)
                    if _debug_nans:
                        self.array_nan_adjoint(i, clean)
                i -= 1
        finally:
            free(elem_adj)
        return 0

    cdef int find_nan_adjoint(self, node_t out) except -1:
        """debug_nans: walking rows in sweep order, the first scalar row whose
        adjoint is a number but which passed a nan to an argument raises."""
        cdef node_t i, ia, ib
        cdef double g, x, y
        cdef Partials d
        for i in range(out, -1, -1):
            g = self.adj[i]
            ia, ib = self.a[i], self.b[i]
            if g != g or g == 0.0 or self.op[i] >= FIRST_ARRAY_OP or (ia < 0 and ib < 0):
                continue
            x = self.val[ia] if ia >= 0 else self.c[i]
            y = self.val[ib] if ib >= 0 else self.c[i]
            if x != x or y != y:
                continue  # a nan value in: its nan partial is not this row's making
            d = op_partials(self.op[i], x, y, self.val[i], ib >= 0)
            if (ia >= 0 and g * d.dx != g * d.dx) or (ib >= 0 and g * d.dy != g * d.dy):
                args = (x, y)
                if _ops_table.OPS[self.op[i]].arity == 1:
                    args = (x,)
                raise FloatingPointError(
                    f"fastad: the reverse sweep made nan at op '{_ops_table.OPS[self.op[i]].name}' "
                    f"(row {i}) with inputs {args} and adjoint {g}")
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
        if self.adjoint_has_nan(i) or any(np.isnan(self._value(r)).any() for r in self.arg_rows(i)):
            return 0  # nan in (adjoint or value), nan out
        for r in clean:
            if self.adjoint_has_nan(r):
                raise FloatingPointError(
                    f"fastad: the reverse sweep made nan at op '{array_op_name(self.op[i], self.c[i])}' "
                    f"(row {i})")
        return 0

    # -- for the array rules (fastad/array_rules.py): one row at a time --

    def _row(self, Py_ssize_t i):
        """(op, a, b, c, aux) of row i."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.op[i], self.a[i], self.b[i], self.c[i], self.aux.get(i)

    def _value(self, Py_ssize_t r):
        """Row r's value: its ndarray, or its float."""
        if not 0 <= r < self.n:
            raise IndexError(r)
        v = self.obj.get(r)
        return self.val[r] if v is None else v

    def _adjoint(self, Py_ssize_t r):
        """Row r's adjoint in the current sweep: ndarray or float; None for
        an array row that nothing reached."""
        if not 0 <= r < self.adj_n:
            raise IndexError(r)
        if r in self.obj:
            return self.arr_adj.get(r)
        return self.adj[r]

    def _add_adjoint(self, Py_ssize_t r, g):
        """Add g into row r's adjoint (g has r's shape; a float for scalar rows)."""
        if not 0 <= r < self.adj_n:
            raise IndexError(r)
        v = self.obj.get(r)
        if v is None:
            self.adj[r] += <double>g
            return
        a = self.arr_adj.get(r)
        if a is None:  # the first contribution: an array of its own (g may be a view)
            a = np.array(g, dtype=np.float64)
            self.arr_adj[r] = a if a.shape == v.shape else np.array(np.broadcast_to(a, v.shape))
        else:
            a += g

    cdef void shrink(self):
        """Give back the capacity beyond the rows in use (a realloc that
        shrinks keeps the block where it is, or moves it: both are fine)."""
        cdef Py_ssize_t n = self.n if self.n > 1 else 1
        cdef void* p
        if self.cap <= FIRST_ROWS or n == self.cap:
            return
        p = realloc(self.op, n * sizeof(op_t))
        if p != NULL: self.op = <op_t*>p
        p = realloc(self.a, n * sizeof(node_t))
        if p != NULL: self.a = <node_t*>p
        p = realloc(self.b, n * sizeof(node_t))
        if p != NULL: self.b = <node_t*>p
        p = realloc(self.c, n * sizeof(double))
        if p != NULL: self.c = <double*>p
        p = realloc(self.val, n * sizeof(double))
        if p != NULL: self.val = <double*>p
        self.cap = n  # if a realloc failed, its block is simply larger than cap says

    cdef void reset(self):
        """Forget every row (no Var refers to this tape any more)."""
        global _next_serial
        if self.cap > SPARE_MAX_ROWS:  # do not keep a huge tape's memory forever
            self.op = <op_t*>realloc(self.op, FIRST_ROWS * sizeof(op_t))
            self.a = <node_t*>realloc(self.a, FIRST_ROWS * sizeof(node_t))
            self.b = <node_t*>realloc(self.b, FIRST_ROWS * sizeof(node_t))
            self.c = <double*>realloc(self.c, FIRST_ROWS * sizeof(double))
            self.val = <double*>realloc(self.val, FIRST_ROWS * sizeof(double))
            self.cap = FIRST_ROWS  # shrinking realloc keeps the block on failure... and returns it
            free(self.adj)
            self.adj = NULL
            self.adj_cap = 0
        self.n = 0
        self.adj_n = 0
        del self.leaves[:]  # list.clear(), without looking the method up by name
        if self.has_arrays:
            self.obj = {}
            self.aux = {}
            self.arr_adj = None
            self.has_arrays = False
        self.consumed = False
        self.serial = _next_serial
        _next_serial += 1

    # -- looking at a tape (Python speed; for explain, tests, pickling) --

    def __len__(self):
        return self.n

    @property
    def nbytes(self):
        """Bytes allocated for this tape's rows, adjoints and input table."""
        return (self.cap * (sizeof(op_t) + 2 * sizeof(node_t) + 2 * sizeof(double))
                + self.adj_cap * sizeof(double) + self.in_cap * sizeof(node_t))

    def rows(self):
        """Copies of the row arrays: dict of op, a, b, c, val, adj (None before a sweep)."""
        cdef Py_ssize_t n = self.n
        out = {"op": np.empty(n, np.uint8), "a": np.empty(n, np.int32), "b": np.empty(n, np.int32),
               "c": np.empty(n, np.float64), "val": np.empty(n, np.float64), "adj": None}
        cdef uint8_t[::1] op_v = out["op"]
        cdef node_t[::1] a_v = out["a"], b_v = out["b"]
        cdef double[::1] c_v = out["c"], val_v = out["val"], adj_v
        if n:
            memcpy(&op_v[0], self.op, n * sizeof(op_t))
            memcpy(&a_v[0], self.a, n * sizeof(node_t))
            memcpy(&b_v[0], self.b, n * sizeof(node_t))
            memcpy(&c_v[0], self.c, n * sizeof(double))
            memcpy(&val_v[0], self.val, n * sizeof(double))
        if self.adj_n:
            out["adj"] = np.zeros(n, np.float64)
            adj_v = out["adj"]
            memcpy(&adj_v[0], self.adj, min(n, self.adj_n) * sizeof(double))
        return out

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

    def explain(self, fmt="text"):
        """The evaluation trace as a table; see fastad.explain."""
        from fastad.explain import explain_tape
        return explain_tape(self, fmt)

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
    cdef list saved     # (tape, implicit) of enclosing `with Tape()` blocks

    def __cinit__(self):
        self.implicit = True
        self.saved = []


_local = threading.local()
# A thread-local lookup costs tens of ns; ops on leaves need the state often,
# so remember the last thread's. Safe under the GIL: nothing between the
# check and the use can switch threads.
cdef unsigned long _cached_ident = 0
cdef _ThreadState _cached_state = None


cdef _ThreadState thread_state():
    global _cached_ident, _cached_state
    cdef unsigned long ident = PyThread_get_thread_ident()
    if ident == _cached_ident and _cached_state is not None:
        return _cached_state
    st = getattr(_local, "state", None)
    if st is None:
        st = _ThreadState()
        _local.state = st
    _cached_ident = ident
    _cached_state = st
    return st


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


def debug_nans(bint enable=True):
    """Raise FloatingPointError at the first op whose value is nan while its
    inputs are not, naming the op. Off by default (IEEE results instead).

    >>> import fastad as fad
    >>> fad.debug_nans(True)
    >>> fad.log(fad.Var(-1.0))
    Traceback (most recent call last):
    ...
    FloatingPointError: fastad: op 'log' made nan from finite inputs (-1.0,)
    >>> fad.debug_nans(False)
    """
    global _debug_nans
    _debug_nans = enable


# ==== recording ==============================================================

cdef inline Var new_node(Tape t, node_t i, double v):
    cdef Var r = Var.__new__(Var)
    r.tape = t
    r.idx = i
    r.val = v
    return r


cdef inline Var new_leaf(double v):
    cdef Var r = Var.__new__(Var)
    r.val = v
    return r


cdef int raise_nan(op_t op, Var x, Var y, double c) except -1:
    args = tuple(v.val if v is not None else c for v in (x, y)
                 if v is not None or _ops_table.OPS[op].arity == 2)
    if any(a != a for a in args):
        return 0  # nan in, nan out: reported where it was first made
    raise FloatingPointError(f"fastad: op '{_ops_table.OPS[op].name}' made nan from finite inputs {args}")


cdef Var record(op_t op, Var x, Var y, double c, double v):
    """Append op(x, y) with value v and return its handle. x or y may be None:
    that argument is the constant c (or absent, for a unary op)."""
    cdef Tape t
    cdef node_t ia = -1, ib = -1
    if _no_grad_threads and thread_state().no_grad:
        return new_leaf(v)
    if _debug_nans and v != v:
        raise_nan(op, x, y, c)
    t = usable_tape(join_tapes(x.tape if x is not None else None, y.tape if y is not None else None))
    if x is not None:
        ia = x.idx if x.tape is not None else t.input_row(x)
    if y is not None:
        ib = y.idx if y.tape is not None else t.input_row(y)
    return new_node(t, t.push(op, ia, ib, c, v), v)


cdef inline bint is_number(object v):
    if type(v) is float or type(v) is int:
        return True
    return isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, np.bool_)


cdef object binop(op_t op, Var x, object y):
    """op(x, y) for a Var x and anything y."""
    cdef double cy
    if type(y) is Var:
        return record(op, x, <Var>y, 0.0, op_value(op, x.val, (<Var>y).val))
    if is_number(y):
        cy = y
        return record(op, x, None, cy, op_value(op, x.val, cy))
    return NotImplemented


cdef object rbinop(op_t op, Var y, object x):
    """op(x, y) for anything x and a Var y (a reflected operator)."""
    cdef double cx
    if is_number(x):
        cx = x
        return record(op, None, y, cx, op_value(op, cx, y.val))
    return NotImplemented


cdef inline object unop(op_t op, Var x):
    return record(op, x, None, 0.0, op_value(op, x.val, 0.0))


cdef object compare(op_t op, Var x, object y, bint reflected):
    """A comparison: records a guard row (for replays) and returns a bool."""
    r = rbinop(op, x, y) if reflected else binop(op, x, y)
    if r is NotImplemented:
        return r
    return (<Var>r).val != 0.0


# ==== Var ====================================================================

@cython.freelist(256)
@cython.no_gc  # a Var's only reference is its Tape, which never points back at a node
@cython.final
cdef class Var:
    """A scalar that records every operation on it.

    >>> import fastad as fad
    >>> x = fad.Var(2.0); y = fad.Var(3.0)
    >>> z = x * y + fad.sin(x)
    >>> z.backward()
    >>> z.value, x.grad, y.grad
    (6.909297426825682, 2.5838531634528574, 2.0)
    """

    def __init__(self, value):
        if type(value) is Var or not is_number(value):
            raise TypeError(f"Var() takes a real number, got {type(value).__name__}")
        self.val = value

    # -- state --

    @property
    def value(self):
        """The forward value (settable on leaves)."""
        return self.val

    @value.setter
    def value(self, v):
        if self.tape is not None:
            raise FastADError("only a leaf's value can be set; this Var is a recorded result")
        if not is_number(v):
            raise TypeError(f"value must be a real number, got {type(v).__name__}")
        self.val = v
        self.serial = 0  # its INPUT rows hold the old value

    @property
    def grad(self):
        """A leaf's accumulated gradient (settable; zero it between steps), or
        a recorded node's adjoint from the last sweep of its tape."""
        if self.tape is None:
            return self.grad_
        if self.idx < self.tape.adj_n:
            return self.tape.adj[self.idx]
        return 0.0

    @grad.setter
    def grad(self, g):
        if self.tape is not None:
            raise FastADError("only a leaf's grad can be set; a recorded node's grad is its adjoint")
        self.grad_ = g

    @property
    def index(self):
        """This node's row on its tape, or None for a leaf."""
        return None if self.tape is None else self.idx

    @property
    def is_leaf(self):
        return self.tape is None

    def backward(self, seed=1.0, retain_graph=False):
        """Reverse sweep from this value: every leaf it depends on gets
        d(self)/d(leaf) * seed added to its .grad. Consumes the tape unless
        retain_graph=True."""
        cdef Tape t = self.tape
        if t is None:
            self.grad_ += <double>seed
            return
        if t.consumed:
            raise FastADError(SWEPT_TWICE)
        t.sweep(self.idx, <double>seed, True)
        if not retain_graph:
            consume(t)

    def __float__(self):
        return self.val

    def item(self):
        """The scalar itself (so code written for 0-d arrays works on a Var)."""
        return self

    def __int__(self):
        return int(self.val)

    def __bool__(self):
        return compare(OP_NE, self, 0.0, False)

    def __hash__(self):  # by identity, as __eq__ compares values (like torch.Tensor)
        return id(self) >> 4

    def __format__(self, spec):
        return format(self.val, spec)

    def __repr__(self):
        if self.tape is None:
            return f"Var({self.val!r}, grad={self.grad_!r})" if self.grad_ else f"Var({self.val!r})"
        return f"Var({self.val!r}, row={self.idx})"

    def __reduce__(self):
        if self.tape is not None:
            raise TypeError("a recorded node cannot be pickled; pickle its .value, or use fad.compile")
        return (_leaf, (self.val, self.grad_))

    # -- arithmetic: each operator is one row; Python numbers fold into c --

    def __add__(self, other):
        return binop(OP_ADD, self, other)

    def __radd__(self, other):
        return rbinop(OP_ADD, self, other)

    def __sub__(self, other):
        return binop(OP_SUB, self, other)

    def __rsub__(self, other):
        return rbinop(OP_SUB, self, other)

    def __mul__(self, other):
        return binop(OP_MUL, self, other)

    def __rmul__(self, other):
        return rbinop(OP_MUL, self, other)

    def __truediv__(self, other):
        return binop(OP_DIV, self, other)

    def __rtruediv__(self, other):
        return rbinop(OP_DIV, self, other)

    def __pow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        if (type(other) is int or type(other) is float) and other == 2:
            return unop(OP_SQUARE, self)  # x*x: three times cheaper than pow in the sweep
        return binop(OP_POWER, self, other)

    def __rpow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        return rbinop(OP_POWER, self, other)

    def __neg__(self):
        return unop(OP_NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return unop(OP_ABS, self)

    def __lt__(self, other):
        return compare(OP_LT, self, other, False)

    def __le__(self, other):
        return compare(OP_LE, self, other, False)

    def __gt__(self, other):
        return compare(OP_GT, self, other, False)

    def __ge__(self, other):
        return compare(OP_GE, self, other, False)

    def __eq__(self, other):
        return compare(OP_EQ, self, other, False)

    def __ne__(self, other):
        return compare(OP_NE, self, other, False)

    # -- NumPy: np.sin(v), np.float64(2) * v, np.maximum(v, 0) --

    # NumPy applies a ufunc to an object array by calling each element's
    # method of that name: these make np.exp(np.array([v1, v2])) work.
    def sqrt(self): return unop(OP_SQRT, self)
    def cbrt(self): return unop(OP_CBRT, self)
    def square(self): return unop(OP_SQUARE, self)
    def exp(self): return unop(OP_EXP, self)
    def expm1(self): return unop(OP_EXPM1, self)
    def log(self): return unop(OP_LOG, self)
    def log1p(self): return unop(OP_LOG1P, self)
    def log2(self): return unop(OP_LOG2, self)
    def log10(self): return unop(OP_LOG10, self)
    def sin(self): return unop(OP_SIN, self)
    def cos(self): return unop(OP_COS, self)
    def tan(self): return unop(OP_TAN, self)
    def arcsin(self): return unop(OP_ARCSIN, self)
    def arccos(self): return unop(OP_ARCCOS, self)
    def arctan(self): return unop(OP_ARCTAN, self)
    def sinh(self): return unop(OP_SINH, self)
    def cosh(self): return unop(OP_COSH, self)
    def tanh(self): return unop(OP_TANH, self)
    def sign(self): return unop(OP_SIGN, self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _UFUNCS.get(ufunc)
        if fn is None or method != "__call__" or kwargs:
            return NotImplemented
        if any(isinstance(v, np.ndarray) and v.ndim and v.dtype != object for v in inputs):
            return front().array_ufunc(ufunc, method, inputs, kwargs)  # Var with a float array: an Array
        if any(isinstance(v, np.ndarray) and v.ndim for v in inputs):
            # An ndarray with Vars in it: NumPy's object-array semantics, element by element
            # (each Var wrapped in a 0-d object array, so NumPy does not ask us again).
            return np.frompyfunc(fn, len(inputs), 1)(*[_object_scalar(v) for v in inputs])
        return fn(*[v if type(v) is Var else float(v) for v in inputs])


def _object_scalar(v):
    if type(v) is not Var:
        return v
    box = np.empty((), dtype=object)
    box[()] = v
    return box


cdef extern from *:
    """
    static void fastad_set_vectorcall(PyTypeObject *t, void *f) {
        t->tp_vectorcall = (vectorcallfunc)f;
    }
    """
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)
    void fastad_set_vectorcall(PyTypeObject* t, void* f)


cdef object var_vectorcall(object cls, PyObject** args, size_t nargsf, PyObject* kwnames):
    """Var(value) without type_call's argument tuple and __init__ lookup:
    leaf creation is a third of recording a small function (`list(map(Var,
    xs))`). Any other call form takes the ordinary route."""
    cdef Var r
    cdef Py_ssize_t n = PyVectorcall_NARGS(nargsf)
    if kwnames == NULL and n == 1:
        value = <object>args[0]
        if type(value) is float or (type(value) is not Var and is_number(value)):
            r = Var.__new__(Var)
            r.val = value
            return r
    r = Var.__new__(Var)
    r.__init__(*[<object>args[k] for k in range(n)],
               **{kw: <object>args[n + k] for k, kw in enumerate(<tuple>kwnames)} if kwnames != NULL else {})
    return r


fastad_set_vectorcall(<PyTypeObject*>Var, <void*>var_vectorcall)


def _leaf(value, grad):
    v = Var(value)
    v.grad_ = grad
    return v


# ==== the math functions =====================================================

cdef object elementwise(op_t op, object x, object y, str name):
    """An op over ndarrays: float arrays in a C loop (same rule as for Vars),
    object arrays (of Vars) element by element through the public function."""
    fn = globals()[name]
    arrays = [np.asarray(v) for v in ((x,) if y is None else (x, y))]
    if any(a.dtype == object for a in arrays):
        return np.frompyfunc(fn, len(arrays), 1)(*arrays)
    for v, a in zip((x, y), arrays):
        if a.dtype.kind not in "fiub":
            raise TypeError(f"fad.{name}() takes real numbers, Vars or arrays of them, got {type(v).__name__}"
                            + (f" of dtype {a.dtype}" if isinstance(v, np.ndarray) else ""))
    arrays = np.broadcast_arrays(*[a.astype(np.float64) for a in arrays])
    cdef double[::1] xs = np.ascontiguousarray(arrays[0]).ravel()
    cdef double[::1] ys = np.ascontiguousarray(arrays[-1]).ravel()
    out = np.empty(xs.shape[0], np.float64)
    cdef double[::1] o = out
    cdef Py_ssize_t i
    for i in range(xs.shape[0]):
        o[i] = op_value(op, xs[i], ys[i])
    return out.reshape(arrays[0].shape)


cdef object unary(op_t op, object x):
    if type(x) is Var:
        return unop(op, <Var>x)
    if type(x) is Array:
        return array_unary(op, x)
    if is_number(x):
        return op_value(op, <double>x, 0.0)
    return elementwise(op, x, None, _ops_table.OPS[op].name)


cdef object binary(op_t op, object x, object y):
    cdef object r = NotImplemented
    if type(x) is Array or type(y) is Array:
        return array_binary(op, x, y)
    if type(x) is Var:
        r = binop(op, <Var>x, y)
    elif type(y) is Var:
        r = rbinop(op, <Var>y, x)
    elif is_number(x) and is_number(y):
        return op_value(op, <double>x, <double>y)
    if r is NotImplemented:
        return elementwise(op, x, y, _ops_table.OPS[op].name)
    return r


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
        return np.where(cond, x, y)
    return x if cond else y

def clip(x, lo, hi):
    """minimum(maximum(x, lo), hi).

    >>> fad.clip(5.0, 0.0, 1.0)
    1.0
    """
    return minimum(maximum(x, lo), hi)


_UFUNCS = {
    np.add: lambda x, y: x + y, np.subtract: lambda x, y: x - y,
    np.multiply: lambda x, y: x * y, np.true_divide: lambda x, y: x / y,
    np.power: power, np.float_power: power, np.negative: lambda x: -x, np.positive: lambda x: x,
    np.absolute: abs, np.fabs: abs, np.sqrt: sqrt, np.cbrt: cbrt, np.square: square,
    np.exp: exp, np.expm1: expm1, np.log: log, np.log1p: log1p, np.log2: log2, np.log10: log10,
    np.sin: sin, np.cos: cos, np.tan: tan, np.arcsin: arcsin, np.arccos: arccos, np.arctan: arctan,
    np.sinh: sinh, np.cosh: cosh, np.tanh: tanh, np.sign: sign,
    np.maximum: maximum, np.minimum: minimum, np.fmax: maximum, np.fmin: minimum,
    np.arctan2: arctan2, np.hypot: hypot,
    np.less: lambda x, y: x < y, np.less_equal: lambda x, y: x <= y,
    np.greater: lambda x, y: x > y, np.greater_equal: lambda x, y: x >= y,
    np.equal: lambda x, y: x == y, np.not_equal: lambda x, y: x != y,
}

# The op table as the core sees it: tests check it against fastad/ops.py.
OP_CODES = dict((("input", OP_INPUT), ("add", OP_ADD), ("sub", OP_SUB), ("mul", OP_MUL), ("div", OP_DIV), ("power", OP_POWER), ("neg", OP_NEG), ("square", OP_SQUARE), ("sqrt", OP_SQRT), ("cbrt", OP_CBRT), ("exp", OP_EXP), ("expm1", OP_EXPM1), ("log", OP_LOG), ("log1p", OP_LOG1P), ("log2", OP_LOG2), ("log10", OP_LOG10), ("sin", OP_SIN), ("cos", OP_COS), ("tan", OP_TAN), ("arcsin", OP_ARCSIN), ("arccos", OP_ARCCOS), ("arctan", OP_ARCTAN), ("sinh", OP_SINH), ("cosh", OP_COSH), ("tanh", OP_TANH), ("erf", OP_ERF), ("sigmoid", OP_SIGMOID), ("relu", OP_RELU), ("abs", OP_ABS), ("sign", OP_SIGN), ("maximum", OP_MAXIMUM), ("minimum", OP_MINIMUM), ("arctan2", OP_ARCTAN2), ("hypot", OP_HYPOT), ("lt", OP_LT), ("le", OP_LE), ("gt", OP_GT), ("ge", OP_GE), ("eq", OP_EQ), ("ne", OP_NE), ("array_input", OP_ARRAY_INPUT), ("elem", OP_ELEM), ("map", OP_MAP), ("matmul", OP_MATMUL), ("sum", OP_SUM), ("amax", OP_AMAX), ("amin", OP_AMIN), ("prod", OP_PROD), ("reshape", OP_RESHAPE), ("transpose", OP_TRANSPOSE), ("getitem", OP_GETITEM), ("concatenate", OP_CONCATENATE), ("stack", OP_STACK), ("where", OP_WHERE), ("einsum", OP_EINSUM), ("logsumexp", OP_LOGSUMEXP),))
N_OP_CODES = N_OPS


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


# ==== grad's hot path ========================================================

cdef object leaves_of(object arg):
    """Leaves for an argument that is a number or a flat list / tuple of
    numbers (the common cases, made here without Python per element), or
    None for anything else (the general tree code in fastad/_tree.py)."""
    cdef Py_ssize_t i, n
    if type(arg) is float or type(arg) is int:
        return new_leaf(<double>arg)
    if type(arg) is list or type(arg) is tuple:
        n = len(arg)
        out = [None] * n
        for i in range(n):
            v = arg[i]
            if type(v) is not float and type(v) is not int:
                return None
            out[i] = new_leaf(<double>v)
        return out if type(arg) is list else tuple(out)
    return None


cdef object grads_of(object leaves, Tape t):
    """The adjoints of these leaves' INPUT rows on t (0 for unused leaves)."""
    cdef Py_ssize_t i, n
    if type(leaves) is Var:
        return leaf_adjoint(<Var>leaves, t)
    n = len(leaves)
    out = [None] * n
    for i in range(n):
        out[i] = leaf_adjoint(<Var>leaves[i], t)
    return out if type(leaves) is list else tuple(out)


cdef inline double leaf_adjoint(Var leaf, Tape t):
    if t is not None and leaf.serial == t.serial and leaf.idx < t.adj_n:
        return t.adj[leaf.idx]
    return leaf.grad_  # the output was the leaf itself (or did not use it: 0)


def sweep_for(Var out):
    """Sweep from `out` without touching any leaf's grad (grad() reads the
    adjoints of its own leaves with input_adjoints); returns out's tape."""
    cdef Tape t = out.tape
    if t is None:
        out.grad_ += 1.0
        return None
    if t.consumed:
        raise FastADError("the function returned a value from a graph that was already swept")
    t.sweep(out.idx, 1.0, False)
    return t


def input_adjoints(Tape t, list leaves):
    """[adjoint of each leaf's INPUT row on t] after sweep_for (Var or Array leaves)."""
    out = []
    for leaf in leaves:
        if type(leaf) is Var:
            out.append(leaf_adjoint(<Var>leaf, t))
        elif t is not None and (<Array>leaf).serial == t.serial and t.arr_adj is not None:
            g = t.arr_adj.get((<Array>leaf).idx)  # no copy: the next sweep makes new arrays
            out.append(np.zeros((<Array>leaf).value.shape) if g is None else g)
        else:
            out.append(np.zeros((<Array>leaf).value.shape))
    return out


def value_and_grad_simple(f, tuple args, tuple nums, dict kwargs):
    """(value, [grad per argnum]) when every differentiated argument is a
    number or a flat list / tuple of numbers; None otherwise."""
    cdef list call_args = list(args)
    cdef list leaves = []
    for k in nums:
        made = leaves_of(args[k])
        if made is None:
            return None
        call_args[k] = made
        leaves.append(made)
    cdef _ThreadState st = thread_state()
    cdef Tape t = Tape()  # its arrays come from the last tape's (the spare slot)
    st.saved.append((st.tape, st.implicit))
    st.tape = t
    st.implicit = False
    try:
        out = f(*call_args, **kwargs)
        if type(out) is not Var:
            from fastad._tree import scalar_output
            out = scalar_output(out, "grad")
        t = None
        if type(out) is Var:
            value = (<Var>out).val
            t = sweep_for(out)
        else:
            value = out
    finally:
        st.tape, st.implicit = st.saved.pop()
    return value, [grads_of(made, t) for made in leaves]


# ==== Array ==================================================================

_front = None  # fastad.array, the NumPy front end (imported on first use: it imports us)


cdef object front():
    global _front
    if _front is None:
        import fastad.array
        _front = fastad.array
    return _front


cdef object as_value(object v):
    """A read-only, C-contiguous float64 copy of an array-like of numbers."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiu":
        if isinstance(v, (Var, Array)) or a.dtype == object:
            raise TypeError("fad.Array() takes numbers; to build an Array from Vars use fad.stack")
        raise TypeError(f"fad.Array() takes real numbers, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float64, order="C")  # always a copy: the Array owns it
    a.flags.writeable = False
    return a


cdef object array_unary(op_t op, object x):
    r = map_record(op, x, None, False)
    return r if r is not None else front().unary(op, x)


cdef object array_binary(op_t op, object x, object y):
    r = map_record(op, x, y, True)
    return r if r is not None else front().binary(op, x, y)


cdef inline Array new_array_node(Tape t, node_t i, object value):
    cdef Array r = Array.__new__(Array)
    r.tape = t
    r.idx = i
    r.value = value
    return r


cdef inline object new_array_leaf(object value):
    cdef Array r = Array.__new__(Array)
    r.value = value
    return r


cdef inline Tape handle_tape(object h):
    """The tape a Var or Array records on (None for leaves and constants)."""
    if type(h) is Var:
        return (<Var>h).tape
    if type(h) is Array:
        return (<Array>h).tape
    return None


cdef inline Tape join_tapes(Tape t, Tape u):
    """The one tape of two handles' tapes (None: no tape yet)."""
    if t is None:
        return u
    if u is not None and u is not t:
        raise FastADError(MIXED_TAPES)
    return t


cdef inline Tape usable_tape(Tape t):
    """t, or the thread's current tape for ops on leaves only; never a consumed tape."""
    if t is None:
        return current_tape()
    if t.consumed:
        raise FastADError(CONSUMED)
    return t


cdef Tape tape_of(tuple handles):
    """The tape an op on these handles (Var, Array or constants) records on."""
    cdef Tape t = None
    for h in handles:
        t = join_tapes(t, handle_tape(h))
    return usable_tape(t)


cdef node_t row_of(Tape t, object h) except -2:
    """h's row on t (INPUT rows for leaves), or -1 for a constant."""
    if type(h) is Var:
        return (<Var>h).idx if (<Var>h).tape is not None else t.input_row(<Var>h)
    if type(h) is Array:
        return (<Array>h).idx if (<Array>h).tape is not None else t.array_input_row(<Array>h)
    return -1


cdef str array_op_name(int op, double c):
    """An array row's name for messages: a `map` row is named by its scalar op."""
    spec = _ops_table.OPS[op]
    return _ops_table.OPS[<int>c].name if spec.name == "map" else spec.name


cdef int array_nan_check(int op, tuple args, value, double c, aux) except -1:
    """debug_nans, forward: an array op whose value has a nan that its
    arguments (handles, and constants in aux) do not have raises."""
    if not np.isnan(value).any():
        return 0
    inputs = [h.value for h in args if type(h) is Var or type(h) is Array]
    if type(aux) is tuple:
        inputs += [v for v in aux if isinstance(v, (float, np.ndarray))]
    if any(np.isnan(np.asarray(v, np.float64)).any() for v in inputs):
        return 0  # nan in, nan out: reported where it was first made
    raise FloatingPointError(f"fastad: op '{array_op_name(op, c)}' made nan from finite inputs")


def record_array(int op, tuple args, value, double c=0.0, aux=None):
    """Append one array row: op (an array op code) of the handles in args
    (Var, Array, or None for a constant kept in c or aux), with its value
    already computed (a fresh array the caller gives up: it is frozen, not
    copied). Returns an Array for an ndarray value, else a Var.
    A variadic op (concatenate, stack) keeps its argument rows in aux."""
    cdef bint is_array = isinstance(value, np.ndarray)
    if is_array:
        if value.dtype != np.float64 or not value.flags.c_contiguous:
            value = as_value(value)
        elif value.flags.writeable:  # a fresh NumPy result: ours now, frozen without a copy
            value.flags.writeable = False
    if _no_grad_threads and thread_state().no_grad:
        return new_array_leaf(value) if is_array else new_leaf(value)
    if _debug_nans:
        array_nan_check(op, args, value, c, aux)
    cdef Tape t = tape_of(args)
    cdef node_t a = -1, b = -1, i
    if _ops_table.OPS[op].arity == -1:
        aux = ([row_of(t, h) for h in args], aux)
    else:
        if len(args) > 0:
            a = row_of(t, args[0])
        if len(args) > 1:
            b = row_of(t, args[1])
    i = t.push(op, a, b, c, NAN if is_array else <double>value)
    t.has_arrays = True
    if aux is not None:
        t.aux[i] = aux
    if is_array:
        t.obj[i] = value
        return new_array_node(t, i, value)
    return new_node(t, i, value)


@cython.boundscheck(False)  # k is checked by the caller
@cython.wraparound(False)
cdef object record_elem(Array x, Py_ssize_t k):
    """x.value.flat[k] as a scalar node: the sweep adds its adjoint into x's
    adjoint in C, so element loops cost what scalar ops cost."""
    if not x.flat_ready:
        x.flat = x.value.reshape(-1)  # read-only: flat is declared const
        x.flat_ready = True
    cdef double v = x.flat[k]
    if _no_grad_threads and thread_state().no_grad:
        return new_leaf(v)
    cdef Tape t = usable_tape(x.tape)
    cdef node_t row = x.idx if x.tape is not None else t.array_input_row(x)
    cdef node_t i = t.push(OP_ELEM, row, -1, <double>k, v)
    t.has_arrays = True
    return new_node(t, i, v)


def elem(Array x, Py_ssize_t k):
    """Element k of x's flattened value, as a recorded scalar."""
    if not 0 <= k < x.value.size:
        raise IndexError(f"flat index {k} is out of bounds for an array of size {x.value.size}")
    return record_elem(x, k)


@cython.freelist(64)
@cython.no_gc  # its tape never points back at it; its value is a float array
@cython.final
cdef class Array:
    """A float64 array that records every operation on it, with NumPy's
    broadcasting; NumPy functions dispatch to fastad on it.

    >>> import fastad as fad, numpy as np
    >>> a = fad.Array(np.array([1.0, 2.0, 3.0]))
    >>> loss = (a * a).sum()
    >>> loss.backward()
    >>> a.grad
    array([2., 4., 6.])
    """
    __array_priority__ = 100

    def __init__(self, value):
        self.value = as_value(value)

    # -- state --

    @property
    def grad(self):
        """A leaf's accumulated gradient (zeros before any sweep), or a
        recorded array's adjoint from the last sweep."""
        if self.tape is None:
            return np.zeros(self.value.shape) if self.grad_ is None else self.grad_
        g = self.tape.arr_adj.get(self.idx) if self.tape.arr_adj is not None else None
        return np.zeros(self.value.shape) if g is None else g.copy()

    @grad.setter
    def grad(self, g):
        if self.tape is not None:
            raise FastADError("only a leaf's grad can be set; a recorded array's grad is its adjoint")
        g = np.array(g, dtype=np.float64)
        if g.shape != self.value.shape:
            raise ValueError(f"grad must have shape {self.value.shape}, got {g.shape}")
        self.grad_ = g

    @property
    def index(self):
        return None if self.tape is None else self.idx

    @property
    def is_leaf(self):
        return self.tape is None

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def T(self):
        return front().transpose(self)

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        for k in range(len(self.value)):
            yield self[k]

    def backward(self, seed=None, retain_graph=False):
        """Reverse sweep from this array; seed defaults to 1 for a
        one-element array and is required otherwise (d sum(seed * self))."""
        if seed is None:
            if self.value.size != 1:
                raise ValueError("backward() of an array with more than one element needs a seed "
                                 "of its shape (or reduce it first, e.g. .sum())")
            seed = np.ones(self.value.shape)
        seed = np.broadcast_to(np.asarray(seed, np.float64), self.value.shape)
        cdef Tape t = self.tape
        if t is None:
            self.grad_ = seed.copy() if self.grad_ is None else self.grad_ + seed
            return
        if t.consumed:
            raise FastADError(SWEPT_TWICE)
        t.sweep(self.idx, seed, True)
        if not retain_graph:
            consume(t)

    def __getitem__(self, key):
        cdef Py_ssize_t k, n
        if type(key) is int and self.value.ndim == 1:  # the element loop: scalar speed
            n = self.value.shape[0]
            k = key
            if k < 0:
                k += n
            if not 0 <= k < n:
                raise IndexError(f"index {key} is out of bounds for an array of length {n}")
            return record_elem(self, k)
        return front().getitem(self, key)

    def __repr__(self):
        body = np.array2string(self.value, separator=", ", prefix="Array(")
        return f"Array({body})" if self.tape is None else f"Array({body}, row={self.idx})"

    def __bool__(self):
        if self.value.size != 1:
            raise ValueError("the truth value of an array with more than one element is ambiguous; "
                             "use .value.any() or .value.all()")
        return bool(self.value.reshape(-1)[0])

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a tracked fad.Array cannot be turned into a plain ndarray (that would "
                        "drop its derivatives); use .value for the numbers")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if _ufunc_code is None:
            load_ufuncs()
        code = _ufunc_code.get(ufunc)
        if code is not None and method == "__call__" and not kwargs and len(inputs) <= 2:
            r = map_record(code, inputs[0], inputs[1] if len(inputs) == 2 else None, len(inputs) == 2)
            if r is not None:
                return r
        return front().array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return front().array_function(func, types, args, kwargs)

    def __reduce__(self):
        if self.tape is not None:
            raise TypeError("a recorded array cannot be pickled; pickle its .value")
        return (Array, (np.array(self.value),))

    # -- operators: NumPy semantics, recorded --

    def __add__(self, other): return array_binary(OP_ADD, self, other)
    def __radd__(self, other): return array_binary(OP_ADD, other, self)
    def __sub__(self, other): return array_binary(OP_SUB, self, other)
    def __rsub__(self, other): return array_binary(OP_SUB, other, self)
    def __mul__(self, other): return array_binary(OP_MUL, self, other)
    def __rmul__(self, other): return array_binary(OP_MUL, other, self)
    def __truediv__(self, other): return array_binary(OP_DIV, self, other)
    def __rtruediv__(self, other): return array_binary(OP_DIV, other, self)
    def __pow__(self, other, mod): return front().power(self, other)
    def __rpow__(self, other, mod): return front().power(other, self)
    def __matmul__(self, other): return front().matmul(self, other)
    def __rmatmul__(self, other): return front().matmul(other, self)
    def __neg__(self): return array_unary(OP_NEG, self)
    def __pos__(self): return self
    def __abs__(self): return array_unary(OP_ABS, self)
    def __lt__(self, other): return self.value < front().value_of(other)
    def __le__(self, other): return self.value <= front().value_of(other)
    def __gt__(self, other): return self.value > front().value_of(other)
    def __ge__(self, other): return self.value >= front().value_of(other)
    def __eq__(self, other): return self.value == front().value_of(other)
    def __ne__(self, other): return self.value != front().value_of(other)

    def __hash__(self):
        return id(self) >> 4

    # -- methods, as on ndarray --

    def sum(self, axis=None, keepdims=False): return front().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return front().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return front().amax(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return front().amin(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return front().prod(self, axis, keepdims)
    def reshape(self, *shape): return front().reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return front().transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def swapaxes(self, a1, a2): return front().swapaxes(self, a1, a2)
    def squeeze(self, axis=None): return front().squeeze(self, axis)
    def ravel(self): return front().reshape(self, (-1,))
    def flatten(self): return front().reshape(self, (-1,))
    def dot(self, other): return front().dot(self, other)
    def clip(self, lo, hi): return front().clip(self, lo, hi)

    def item(self):
        """The single element of a one-element array, as a recorded scalar."""
        if self.value.size != 1:
            raise ValueError(f"item() needs a one-element array, this one has shape {self.value.shape}")
        return elem(self, 0)


@cython.boundscheck(False)  # the loops run over arrays made here, of one size
@cython.wraparound(False)
def map_value(int op, x, y=None):
    """op (a scalar op code) applied elementwise with broadcasting, by the
    same C rule as for Vars: float64 result."""
    xs = np.asarray(x, np.float64)
    ys = xs if y is None else np.asarray(y, np.float64)
    xb, yb = np.broadcast_arrays(xs, ys)
    out = np.empty(xb.shape)
    cdef double[::1] o = out.reshape(-1)
    cdef const double[::1] xv = np.ascontiguousarray(xb).reshape(-1)
    cdef const double[::1] yv = np.ascontiguousarray(yb).reshape(-1)
    cdef Py_ssize_t i
    cdef op_t code = op
    with nogil:
        for i in range(o.shape[0]):
            o[i] = op_value(code, xv[i], yv[i])
    return out


cdef object _as_shape(object v, tuple shape):
    """v as a C-contiguous float64 array of `shape` (broadcast); no copy
    when it already is one, the common case of same-shape operands."""
    if type(v) is np.ndarray and (<object>v).shape == shape and v.dtype == np.float64 \
            and v.flags.c_contiguous:
        return v
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float64), shape))


@cython.boundscheck(False)
@cython.wraparound(False)
def map_vjp(int op, x, y, f, g):
    """(g * df/dx, g * df/dy) elementwise, broadcast to f's shape: an array
    row's backward pass, by the same C rules as the scalar sweep and with its
    absolute-zero rule per element (a zero adjoint passes exactly 0)."""
    shape = np.shape(f)
    xb, yb, fb, gb = [_as_shape(v, shape) for v in (x, x if y is None else y, f, g)]
    gx = np.empty(shape)
    gy = np.empty(shape)
    cdef double[::1] gxv = gx.reshape(-1), gyv = gy.reshape(-1)
    cdef const double[::1] xv = xb.reshape(-1)
    cdef const double[::1] yv = yb.reshape(-1)
    cdef const double[::1] fv = fb.reshape(-1)
    cdef const double[::1] gv = gb.reshape(-1)
    cdef Py_ssize_t i
    cdef op_t code = op
    cdef Partials d
    cdef bint need_dy = y is not None
    with nogil:
        for i in range(gxv.shape[0]):
            if gv[i] == 0.0:
                gxv[i] = 0.0
                gyv[i] = 0.0
                continue
            d = op_partials(code, xv[i], yv[i], fv[i], need_dy)
            gxv[i] = gv[i] * d.dx
            gyv[i] = gv[i] * d.dy
    return gx, gy


# ==== elementwise ops on same-shape arrays, in C ==============================
# The common case of an elementwise op, operands that are Arrays of one shape
# or Python numbers, records and sweeps here without fastad/array.py: the
# value still comes from NumPy's ufunc (NumPy's numbers, NumPy's warnings),
# the row is pushed directly, and the backward pass runs the scalar rules
# in one C loop, adding into the arguments' adjoints in place. Every other
# case (broadcasting, plain ndarrays, Vars, 0-d arrays, no_grad, debug_nans)
# takes the general route, which gives the same numbers more slowly
# (tests/test_array.py checks both routes against each other).

cnp.import_array()

cdef signed char _arity[256]  # scalar op code -> 1 or 2 (map rows: unary or binary)
for _spec in _ops_table.OPS:
    _arity[_spec.code] = _spec.arity

cdef bint _fast = True  # tests switch the C route off to compare it with the general one
cdef list _map_ufunc = None   # scalar op code -> NumPy ufunc computing it, or None
cdef dict _ufunc_code = None  # NumPy ufunc -> scalar op code (np.sin -> OP_SIN)


def _fast_elementwise(bint on):
    """Switch the same-shape C route on or off (for tests: both routes must agree)."""
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


cdef inline bint is_buffer_like(object v, object like):
    """v is a C-contiguous float64 ndarray of like's shape."""
    return (type(v) is cnp.ndarray and cnp.PyArray_TYPE(v) == cnp.NPY_DOUBLE
            and cnp.PyArray_IS_C_CONTIGUOUS(v) and same_shape(v, like))


cdef inline bint is_adjoint_buffer(object v, object like):
    """v is an adjoint array map_backward can add into in place."""
    return is_buffer_like(v, like) and cnp.PyArray_ISWRITEABLE(v)


cdef object map_record(op_t code, object x, object y, bint binary):
    """op(x) or op(x, y) on the fast route, or None where it does not apply."""
    if _map_ufunc is None:
        load_ufuncs()
    ufunc = _map_ufunc[code]
    if ufunc is None or not _fast or _debug_nans or _no_grad_threads:
        return None
    shape = None
    cx = cy = None
    if type(x) is Array:
        vx = shape = (<Array>x).value
    elif is_plain_number(x):
        vx = cx = float(x)
    else:
        return None
    vy = None
    if binary:
        if type(y) is Array:
            vy = (<Array>y).value
            if shape is None:
                shape = vy
            elif not same_shape(vx, vy):
                return None
        elif is_plain_number(y):
            vy = cy = float(y)
        else:
            return None
    if shape is None or cnp.PyArray_NDIM(shape) == 0:
        return None
    value = ufunc(vx, vy) if binary else ufunc(vx)
    if not is_buffer_like(value, shape):
        return None  # not expected of a ufunc on float64 arrays, but never assumed
    cnp.PyArray_CLEARFLAGS(value, cnp.NPY_ARRAY_WRITEABLE)
    cdef Tape t = usable_tape(join_tapes(handle_tape(x), handle_tape(y)))
    cdef node_t ia = row_of(t, x)
    cdef node_t ib = row_of(t, y) if binary else -1
    cdef node_t i = t.push(OP_MAP, ia, ib, code, NAN)
    t.has_arrays = True
    if cx is not None or cy is not None:
        t.aux[i] = (cx, cy)
    t.obj[i] = value
    return new_array_node(t, i, value)


cdef object map_operand(Tape t, node_t row, object key, object const, object f):
    """A map row's argument for map_backward: its ndarray (of f's shape), a
    float constant, or None where the fast route does not apply."""
    if row < 0:
        return const if type(const) is float else None
    v = t.obj.get(key)
    return v if v is not None and is_buffer_like(v, f) else None


cdef object zeros_like(object f):
    return cnp.PyArray_ZEROS(cnp.PyArray_NDIM(f), cnp.PyArray_DIMS(f), cnp.NPY_DOUBLE, 0)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef bint map_backward(Tape t, node_t i) except -1:
    """Row i, a `map` row, swept in C when its operands are arrays of its
    shape or numbers: False leaves it to the NumPy rule (array_rules._map).
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
    cdef op_t code = <op_t>t.c[i]
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
    gx = t.arr_adj.get(ka) if ia >= 0 else None
    gy = t.arr_adj.get(kb) if ib >= 0 and ib != ia else None
    if (gx is not None and not is_adjoint_buffer(gx, f)) or \
            (gy is not None and not is_adjoint_buffer(gy, f)):
        return False
    # Checks done: from here on this row is swept here.
    if ia >= 0 and gx is None:  # the first contribution to that argument
        gx = zeros_like(f)
        t.arr_adj[ka] = gx
    if ib >= 0 and gy is None:
        if ib == ia:
            gy = gx  # x * x: one buffer takes both contributions
        else:
            gy = zeros_like(f)
            t.arr_adj[kb] = gy

    cdef double cx_, cy_
    cdef const double* xp
    cdef const double* yp
    cdef Py_ssize_t sx = 1, sy = 1, n = cnp.PyArray_SIZE(f)
    if type(x) is float:
        cx_ = x
        xp, sx = &cx_, 0
    else:
        xp = <const double*>cnp.PyArray_DATA(x)
    if type(y) is float:
        cy_ = y
        yp, sy = &cy_, 0
    else:
        yp = <const double*>cnp.PyArray_DATA(y)
    cdef const double* fp = <const double*>cnp.PyArray_DATA(f)
    cdef const double* gp = <const double*>cnp.PyArray_DATA(g)
    cdef double* dxp = <double*>cnp.PyArray_DATA(gx) if ia >= 0 else NULL
    cdef double* dyp = <double*>cnp.PyArray_DATA(gy) if ib >= 0 else NULL
    if n > 4096:  # releasing the GIL costs more than a small array's loop
        with nogil:
            map_adjoints(code, n, xp, sx, yp, sy, fp, gp, dxp, dyp)
    else:
        map_adjoints(code, n, xp, sx, yp, sy, fp, gp, dxp, dyp)
    return True


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void map_adjoints(op_t code, Py_ssize_t n, const double* xp, Py_ssize_t sx,
                       const double* yp, Py_ssize_t sy, const double* fp, const double* gp,
                       double* dxp, double* dyp) noexcept nogil:
    """dx += g * df/dx, dy += g * df/dy elementwise, by the scalar rules (a
    stride of 0 repeats a constant; a NULL target is a constant argument)."""
    cdef Py_ssize_t k
    cdef double gk
    cdef Partials d
    for k in range(n):
        gk = gp[k]
        if gk == 0.0:
            continue  # the absolute-zero rule, as in the scalar sweep
        d = op_partials(code, xp[k * sx], yp[k * sy], fp[k], dyp != NULL)
        if dxp != NULL:
            dxp[k] += gk * d.dx
        if dyp != NULL:
            dyp[k] += gk * d.dy

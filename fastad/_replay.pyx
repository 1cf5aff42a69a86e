# cython: language_level=3, embedsignature=True, cdivision=True
"""Replaying a recorded tape with new inputs, in C.

A Trace is a frozen copy of a tape's rows, with the map from the function's
flattened inputs to their INPUT rows and from its flattened outputs to
their rows. Every method runs the sweeps of fastad/_sweeps.pxd over it,
and its loops (fastad/loops.py) by those of fastad/_loop_sweeps.pxd and
fastad/_loop_hvp.pxd: no Python per op. Each call works in its own
value/adjoint buffers, so one Trace serves many threads at once
(grad_rows releases the GIL).
"""
cimport cython
from cpython.object cimport PyObject
from cpython.list cimport PyList_New, PyList_GET_ITEM, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF, Py_DECREF
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

from fastad._ops cimport *
from fastad._sweeps cimport (branch_sweep, forward_sweep, reverse_sweep, tangent_sweep, hvp_sweep,
                             tangent_sweep_1, reverse_hvp_sweep_1, A_CONST, B_CONST)
from fastad._loop_sweeps cimport loop_forward, loop_reverse, loop_end, L_START, LOOP_SCRATCH
from fastad._loop_hvp cimport loop_tangents, loop_reverse_hvp
from fastad import ops as _ops_table
from fastad import loops as _loops
from fastad._core import FastADError


cnp.import_array()

cdef extern from "Python.h":
    PyObject** PySequence_Fast_ITEMS(object seq)  # seq must be a list or a tuple
    bint PyFloat_Check(PyObject* o)
    bint PyLong_CheckExact(PyObject* o)
    double PyFloat_AS_DOUBLE(PyObject* o)


# jvp and hvp sweep up to TANGENT_BLOCK directions at once (tangent_sweep,
# hvp_sweep), in at most TANGENT_BYTES of tangents. cf.jacobian(mode="fwd")
# of the bench's 100 -> 100 tanh layer (20,200 rows): one column a sweep
# 4.2 ms; blocks of 8, 16, 32, 64: 1.48, 1.21, 1.29, 1.58 ms (reverse mode:
# 1.0 to 1.3 ms).
cdef enum:
    TANGENT_BLOCK = 16
    TANGENT_BYTES = 1 << 24

# A Hessian's coloring (fastad/sparsity.py) costs about 0.7 us a row, in
# Python, once per trace; the dense route about 3 ns a row per input, per
# call (Rosenbrock n=100: 0.6 against 0.3 ms). So a trace plans on its
# second Hessian, or on its first with PLAN_INPUTS inputs or more.
cdef enum:
    PLAN_INPUTS = 256


cdef inline object empty(Py_ssize_t n):
    """A new float64 vector of n numbers (the C API: no Python call)."""
    cdef cnp.npy_intp dim = n
    return cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)


class BranchChanged(FastADError):
    """A replay's inputs take another branch than the recording did.

    >>> cf = fad.compile(lambda x: fad.abs(x), 1.0, on_branch_change="raise")
    >>> cf.grad(-1.0)
    Traceback (most recent call last):
    ...
    fastad._replay.BranchChanged: the inputs take another branch than the recording at row 1 (op 'abs')
    """


@cython.boundscheck(False)  # every index is checked in _validate, before any sweep
@cython.wraparound(False)
cdef class Trace:
    """The rows of one recording, ready to replay.

    Arrays (length n rows unless said): op, a, b, c as on the tape; val0 the
    recorded values (INPUT rows of leaves from outside the function keep
    theirs as constants); branch0 the piece each kink or guard row fell on
    (-1 for smooth rows); in_rows (n_in,) the INPUT row of each input number
    (-1: unused); out_rows (n_out,) the row of each output number (-1: the
    output is the constant out_const[k]).
    """
    cdef readonly object op, a, b, c, val0, branch0, in_rows, out_rows, out_const
    cdef const op_t[::1] op_v
    cdef const node_t[::1] a_v, b_v, in_v, out_v
    cdef const double[::1] c_v, val0_v, out_const_v
    cdef const signed char[::1] branch_v
    cdef const node_t[::1] const_rows_v  # INPUT rows that are no input: constants
    # the rows lowered for forward_sweep, reverse_sweep and the one-direction sweeps
    # (_sweeps.pxd, SHAPES, ONE DIRECTION)
    cdef readonly object code, la, lb, pool
    cdef const unsigned char[::1] code_v
    cdef const node_t[::1] la_v, lb_v
    cdef const double[::1] pool_v
    # the loops among the lowered rows, run op-major (fastad/loops.py, _loop_sweeps.pxd)
    cdef readonly object loops, vectors, serial, deferred
    cdef const node_t[:, ::1] loops_v, vectors_v, deferred_v, serial_v
    cdef readonly Py_ssize_t n, n_in, n_out
    cdef Buffers spare  # the last call's scratch, lent to the next (None while lent)
    cdef readonly object hessian_plan  # fastad.sparsity's plan, False for dense; None until made
    cdef Py_ssize_t hessian_calls

    def __init__(self, op, a, b, c, val0, in_rows, out_rows, out_const, fingerprint=None,
                 find_loops=True):
        if fingerprint is not None and fingerprint != _ops_table.fingerprint():
            raise ValueError(
                "this compiled function was made with another version of fastad's op table "
                f"(fingerprint {fingerprint}, this fastad has {_ops_table.fingerprint()}); "
                "compile the function again")
        self.op = np.ascontiguousarray(op, np.uint8)
        self.a = np.ascontiguousarray(a, np.int32)
        self.b = np.ascontiguousarray(b, np.int32)
        self.c = np.ascontiguousarray(c, np.float64)
        self.val0 = np.ascontiguousarray(val0, np.float64)
        self.in_rows = np.ascontiguousarray(in_rows, np.int32)
        self.out_rows = np.ascontiguousarray(out_rows, np.int32)
        self.out_const = np.ascontiguousarray(out_const, np.float64)
        self.n = self.op.shape[0]
        self.n_in = self.in_rows.shape[0]
        self.n_out = self.out_rows.shape[0]
        self._validate()
        self.op_v, self.a_v, self.b_v, self.c_v, self.val0_v = self.op, self.a, self.b, self.c, self.val0
        self.in_v, self.out_v, self.out_const_v = self.in_rows, self.out_rows, self.out_const
        self.branch0 = self._branches()
        self.branch_v = self.branch0
        const_rows = np.flatnonzero((self.op == OP_INPUT) & ~np.isin(np.arange(self.n), self.in_rows))
        self.const_rows_v = const_rows.astype(np.int32)
        self._lower()
        self.code_v, self.la_v, self.lb_v, self.pool_v = self.code, self.la, self.lb, self.pool
        # find_loops=False: every row one by one (what the loop sweeps are tested against)
        self.loops, self.vectors, self.serial, self.deferred = _loops.plan(
            self.code, self.la, self.lb, self.branch0, find=find_loops)
        self.loops_v, self.vectors_v, self.serial_v = self.loops, self.vectors, self.serial
        self.deferred_v = self.deferred

    def _validate(self):
        """Rows from a pickle are user input: check every index before any
        sweep trusts it (the sweeps do not bounds-check)."""
        n = self.n
        for name in ("a", "b", "c", "val0"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"trace array {name} has shape {getattr(self, name).shape}, expected ({n},)")
        if n and self.op.max() >= N_OPS:
            raise ValueError(f"trace has op code {self.op.max()}, this fastad knows {N_OPS}")
        if n and self.op.max() >= FIRST_ARRAY_OP:
            raise ValueError("this recording has array ops; compile replays scalar tapes only "
                             "(use fad.grad, which records arrays)")
        rows = np.arange(n)
        for name in ("a", "b"):
            arg = getattr(self, name)
            if np.any((arg >= rows) | (arg < -1)):
                raise ValueError(f"trace column {name} refers to a row that is not earlier")
        inputs = self.op == OP_INPUT
        if np.any(inputs & ((self.a != -1) | (self.b != -1))):
            raise ValueError("trace has an input row with arguments")
        if np.any(~inputs & (self.a < 0) & (self.b < 0)):
            raise ValueError("trace has a row with no argument that is not an input")
        for name in ("in_rows", "out_rows"):
            idx = getattr(self, name)
            if np.any((idx >= n) | (idx < -1)):
                raise ValueError(f"trace {name} refers to a row outside the tape")
        if self.out_const.shape != self.out_rows.shape:
            raise ValueError("trace out_const and out_rows differ in length")

    def _lower(self):
        """code, la, lb, pool: the rows as forward_sweep and reverse_sweep
        read them (SHAPES in _sweeps.pxd). A constant argument's slot holds
        ~k for pool[k]; the pool holds each distinct constant once, told
        apart by its bits (0.0 and -0.0, nans). Inputs keep code 0: by
        _validate, they are the rows with no argument row."""
        row = self.op != OP_INPUT
        a_const, b_const = row & (self.a < 0), row & (self.b < 0)
        self.code = (self.op | np.where(a_const, A_CONST, 0) | np.where(b_const, B_CONST, 0)).astype(np.uint8)
        has_const = a_const | b_const
        bits, slot = np.unique(self.c[has_const].view(np.uint64), return_inverse=True)
        ref = np.full(self.n, -1, np.int32)
        ref[has_const] = ~slot.astype(np.int32)
        self.la = np.where(a_const, ref, self.a).astype(np.int32)
        self.lb = np.where(b_const, ref, self.b).astype(np.int32)
        self.pool = bits.view(np.float64) if bits.size else np.zeros(1)

    def _branches(self):
        out = np.empty(self.n, np.int8)
        cdef signed char[::1] o = out
        if self.n:
            branch_sweep(self.n, &self.op_v[0], &self.a_v[0], &self.b_v[0], &self.c_v[0], &self.val0_v[0], &o[0])
        return out

    def __reduce__(self):
        return (Trace, (self.op, self.a, self.b, self.c, self.val0, self.in_rows,
                        self.out_rows, self.out_const, _ops_table.fingerprint()))

    @property
    def nbytes(self):
        """Bytes held: the trace's arrays and the scratch it keeps for the
        next call."""
        return sum(getattr(self, k).nbytes for k in
                   ("op", "a", "b", "c", "val0", "branch0", "in_rows", "out_rows", "out_const",
                    "code", "la", "lb", "pool")
                   ) + (self.spare.nbytes if self.spare is not None else 0)

    # -- the sweeps, on buffers the caller owns --

    cdef node_t forward(self, const double* x, double* val) noexcept nogil:
        """val = every row's value at inputs x; returns the first row whose
        branch differs from the recording's, or -1."""
        cdef Py_ssize_t k
        cdef node_t r
        for k in range(self.n_in):
            r = self.in_v[k]
            if r >= 0:
                val[r] = x[k]
        return self.forward_rows(val)

    cdef node_t forward_rows(self, double* val) noexcept nogil:
        """forward, the inputs already in val."""
        cdef Py_ssize_t k
        cdef node_t r, lo = 0, changed = -1, c
        cdef const node_t* loop
        if self.n == 0:
            return -1
        # Every row but an INPUT row is computed below; an INPUT row that is
        # no input of the function (a leaf from outside it) keeps its value.
        for k in range(self.const_rows_v.shape[0]):
            r = self.const_rows_v[k]
            val[r] = self.val0_v[r]
        # the rows between loops by forward_sweep, each loop by loop_forward
        for k in range(self.loops_v.shape[0] + 1):
            loop = &self.loops_v[k, 0] if k < self.loops_v.shape[0] else NULL
            c = forward_sweep(lo, loop[L_START] if loop != NULL else <node_t>self.n, &self.code_v[0],
                              &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, &self.branch_v[0])
            if c >= 0 and changed < 0:
                changed = c
            if loop == NULL:
                break
            c = self.forward_loop(loop, val)
            if c >= 0 and changed < 0:
                changed = c
            lo = loop_end(loop)
        return changed

    cdef node_t forward_loop(self, const node_t* loop, double* val) noexcept nogil:
        # A method of its own, called through the vtable, not inlined: inlined
        # into forward_rows, it made GCC call forward_sweep out of line, and
        # that alone cost the MLP's cf(x), which had few loops, 164 -> 201 us.
        return loop_forward(loop, &self.vectors_v[0, 0], self.serial_rows(), &self.code_v[0], &self.la_v[0],
                            &self.lb_v[0], &self.pool_v[0], val, &self.branch_v[0])

    cdef void backward(self, const double* val, double* adj, node_t top) noexcept nogil:
        """Pass the adjoints seeded in adj (rows up to top) down to every row
        below: the rows between loops by reverse_sweep, each loop wholly below
        top by loop_reverse, with the scratch after the n adjoints (Buffers)."""
        cdef Py_ssize_t j
        cdef node_t end
        cdef const node_t* loop
        for j in range(self.loops_v.shape[0] - 1, -1, -1):
            loop = &self.loops_v[j, 0]
            end = loop_end(loop)
            if end - 1 > top:  # top is in this loop, or below it: its rows run one by one
                continue
            reverse_sweep(&self.code_v[0], &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, adj, top, end)
            loop_reverse(loop, &self.vectors_v[0, 0], self.serial_rows(), self.deferred_rows(), &self.code_v[0],
                         &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, adj, adj + self.n)
            top = loop[L_START] - 1
        reverse_sweep(&self.code_v[0], &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, adj, top, 0)

    cdef node_t seeded_backward(self, const double* val, double* adj, Py_ssize_t out_k) noexcept nogil:
        """adj = every row's adjoint for output number out_k, up to its row,
        which is returned (-1 for a constant output: then nothing is swept)."""
        cdef node_t r = self.out_v[out_k]
        if r >= 0:
            memset(adj, 0, (r + 1) * sizeof(double))
            adj[r] = 1.0
            self.backward(val, adj, r)
        return r

    cdef void reverse(self, const double* val, double* adj, Py_ssize_t out_k, double* g) noexcept nogil:
        """g = gradient of output number out_k at the values in val."""
        cdef Py_ssize_t k
        cdef node_t r = self.seeded_backward(val, adj, out_k)
        memset(g, 0, self.n_in * sizeof(double))
        if r < 0:
            return
        for k in range(self.n_in):
            if 0 <= self.in_v[k] <= r:
                g[k] = adj[self.in_v[k]]

    cdef void tangents(self, const double* val, double* tan, unsigned char* reached,
                       const double[:, ::1] V, Py_ssize_t j, Py_ssize_t k) noexcept nogil:
        """tan (n, k) = every row's tangents along columns j..j+k-1 of V (one
        row per input); reached (n,) scratch for tangent_sweep."""
        cdef Py_ssize_t i, jj
        cdef node_t r
        for i in range(self.const_rows_v.shape[0]):
            r = self.const_rows_v[i]
            memset(tan + r * k, 0, k * sizeof(double))
            reached[r] = False
        for i in range(self.n_in):
            r = self.in_v[i]
            if r >= 0:
                memset(tan + r * k, 0, k * sizeof(double))
                reached[r] = False
        for i in range(self.n_in):
            r = self.in_v[i]
            if r >= 0:
                for jj in range(k):
                    tan[r * k + jj] += V[i, j + jj]
                    if tan[r * k + jj] != 0.0:
                        reached[r] = True
        cdef node_t lo = 0
        cdef const node_t* loop
        if k == 1:  # (ONE DIRECTION in _sweeps.pxd), each loop by loop_tangents
            for i in range(self.loops_v.shape[0]):
                loop = &self.loops_v[i, 0]
                tangent_sweep_1(lo, loop[L_START], &self.code_v[0], &self.la_v[0], &self.lb_v[0],
                                &self.pool_v[0], val, tan, reached)
                self.tangent_loop(loop, val, tan, reached)
                lo = loop_end(loop)
            tangent_sweep_1(lo, <node_t>self.n, &self.code_v[0], &self.la_v[0], &self.lb_v[0],
                            &self.pool_v[0], val, tan, reached)
        else:
            tangent_sweep(<node_t>self.n, &self.op_v[0], &self.a_v[0], &self.b_v[0], &self.c_v[0],
                          val, tan, reached, k)

    cdef void tangent_loop(self, const node_t* loop, const double* val, double* tan,
                           unsigned char* reached) noexcept nogil:
        # (out of line, as forward_loop)
        loop_tangents(loop, &self.vectors_v[0, 0], self.serial_rows(), &self.code_v[0], &self.la_v[0],
                      &self.lb_v[0], &self.pool_v[0], val, tan, reached)

    cdef void backward_hvp(self, const double* val, const double* tan, const unsigned char* reached,
                           double* adj, double* adj_tan, node_t top) noexcept nogil:
        """backward for one direction's Hessian-vector product: adjoints and
        adjoint tangents at once, by reverse_hvp_sweep_1 and loop_reverse_hvp."""
        cdef Py_ssize_t j
        cdef node_t end
        cdef const node_t* loop
        for j in range(self.loops_v.shape[0] - 1, -1, -1):
            loop = &self.loops_v[j, 0]
            end = loop_end(loop)
            if end - 1 > top:
                continue
            reverse_hvp_sweep_1(&self.code_v[0], &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, tan,
                                reached, adj, adj_tan, top, end)
            self.hvp_loop(loop, val, tan, reached, adj, adj_tan)
            top = loop[L_START] - 1
        reverse_hvp_sweep_1(&self.code_v[0], &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, tan,
                            reached, adj, adj_tan, top, 0)

    cdef void hvp_loop(self, const node_t* loop, const double* val, const double* tan,
                       const unsigned char* reached, double* adj, double* adj_tan) noexcept nogil:
        loop_reverse_hvp(loop, &self.vectors_v[0, 0], self.serial_rows(), self.deferred_rows(),
                         &self.code_v[0], &self.la_v[0], &self.lb_v[0], &self.pool_v[0], val, tan,
                         reached, adj, adj_tan, adj + self.n, adj + self.n + LOOP_SCRATCH)

    cdef const node_t* serial_rows(self) noexcept nogil:
        return &self.serial_v[0, 0] if self.serial_v.shape[0] else NULL

    cdef const node_t* deferred_rows(self) noexcept nogil:
        return &self.deferred_v[0, 0] if self.deferred_v.shape[0] else NULL

    cdef void outputs(self, const double* val, double* y) noexcept nogil:
        cdef Py_ssize_t k
        for k in range(self.n_out):
            y[k] = val[self.out_v[k]] if self.out_v[k] >= 0 else self.out_const_v[k]

    cdef Buffers take(self, int count, Py_ssize_t block=1):
        """Scratch for one call: the previous call's if it is free and big
        enough (under the GIL, so two threads never get the same one)."""
        cdef Buffers buf = self.spare
        if buf is not None and buf.count >= count and (count <= 2 or buf.block >= block):
            self.spare = None
            return buf
        return Buffers(self.n, count, block, 2 * LOOP_SCRATCH if self.loops_v.shape[0] else 0)

    cdef void give(self, Buffers buf):
        # Blocks of tangents (jacobian, hessian) are not kept: up to
        # TANGENT_BYTES would stay with the trace after one such call.
        if buf.block == 1 and (self.spare is None or buf.nbytes > self.spare.nbytes):
            self.spare = buf

    cdef Py_ssize_t block(self, Py_ssize_t m, int arrays) noexcept:
        """How many of m directions a tangent sweep takes at once, given
        `arrays` arrays of n * block numbers: at most TANGENT_BLOCK and
        TANGENT_BYTES, at least one."""
        return max(1, min(m, TANGENT_BLOCK, TANGENT_BYTES // (8 * arrays * max(self.n, 1))))

    # -- Python entry points: x is the flat float64 vector of the inputs --

    cdef int _check_out(self, Py_ssize_t out_k) except -1:
        if not 0 <= out_k < self.n_out:
            raise IndexError(f"output number {out_k} does not exist; the function has {self.n_out}")
        return 0

    cdef object _inputs(self, x):
        """x as a C-contiguous float64 vector of n_in numbers in this machine's
        byte order (no copy when it is one: a '>f8' array is float64 too)."""
        if not (type(x) is cnp.ndarray and cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
                and cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_ISNOTSWAPPED(x)):
            x = np.ascontiguousarray(x, np.float64)
        if cnp.PyArray_NDIM(x) != 1:
            raise ValueError(f"expected a vector of {self.n_in} input numbers, got shape {np.shape(x)}")
        if cnp.PyArray_DIMS(x)[0] != self.n_in:
            raise ValueError(f"expected {self.n_in} input numbers, got {cnp.PyArray_DIMS(x)[0]}")
        return x

    cdef object _columns(self, V):
        """Directions V as a C-contiguous (n_in, m) float64 array: one per column."""
        return np.ascontiguousarray(np.reshape(V, (self.n_in, -1)), np.float64)

    # values and value_and_grad are the per-call paths of cf(x) and cf.grad(x):
    # they reach their arrays' data directly, not through memoryviews.

    def values(self, x):
        """(outputs (n_out,), changed row or -1)."""
        xv = self._inputs(x)
        y = empty(self.n_out)
        cdef const double* xp = <const double*>cnp.PyArray_DATA(xv)
        cdef double* yp = <double*>cnp.PyArray_DATA(y)
        cdef Buffers buf = self.take(1)
        cdef node_t changed
        with nogil:
            changed = self.forward(xp, buf.val)
            self.outputs(buf.val, yp)
        self.give(buf)
        return y, changed

    def value_and_grad(self, x, Py_ssize_t out_k=0):
        """(outputs, gradient of output out_k (n_in,), changed row or -1)."""
        self._check_out(out_k)
        xv = self._inputs(x)
        y = empty(self.n_out)
        g = empty(self.n_in)
        cdef const double* xp = <const double*>cnp.PyArray_DATA(xv)
        cdef double* yp = <double*>cnp.PyArray_DATA(y)
        cdef double* gp = <double*>cnp.PyArray_DATA(g)
        cdef Buffers buf = self.take(2)
        cdef node_t changed
        with nogil:
            changed = self.forward(xp, buf.val)
            self.outputs(buf.val, yp)
            self.reverse(buf.val, buf.adj, out_k, gp)
        self.give(buf)
        return y, g, changed

    def grad_list(self, list xs, RecycledLists out not None):
        """cf.grad's and cf.value_and_grad's path for a function of one flat
        list: (its only output, the gradient as a list of floats from `out`,
        read off the adjoints), the numbers read from xs straight into the
        value buffer (Rosenbrock 10k: cf.grad 170 -> 165 us). None where an
        item is not a float or the inputs take another branch: the caller
        takes the general path."""
        cdef Py_ssize_t k, n = len(xs)
        cdef PyObject** items
        cdef Buffers buf
        cdef node_t changed, r = -1
        if self.n_out != 1 or n != self.n_in or n == 0:
            return None
        items = PySequence_Fast_ITEMS(xs)
        buf = self.take(2)
        for k in range(n):  # (with the GIL: nothing changes xs meanwhile)
            if not PyFloat_Check(items[k]):
                self.give(buf)
                return None
            if self.in_v[k] >= 0:
                buf.val[self.in_v[k]] = PyFloat_AS_DOUBLE(items[k])
        with nogil:
            changed = self.forward_rows(buf.val)
            if changed < 0:
                r = self.seeded_backward(buf.val, buf.adj, 0)
        result = None
        if changed < 0:
            result = (buf.val[r] if r >= 0 else self.out_const_v[0]), out.fill(buf.adj, &self.in_v[0], n, r)
        self.give(buf)
        return result

    def jacobian_rev(self, x):
        """(outputs, J (n_out, n_in) by one reverse sweep per output, changed)."""
        cdef const double[::1] xv = self._inputs(x)
        y = np.empty(self.n_out)
        J = np.zeros((self.n_out, self.n_in))
        cdef double[::1] yv = y
        cdef double[:, ::1] Jv = J
        cdef Buffers buf = self.take(2)
        cdef node_t changed
        cdef Py_ssize_t k
        with nogil:
            changed = self.forward(&xv[0] if self.n_in else NULL, buf.val)
            self.outputs(buf.val, &yv[0] if self.n_out else NULL)
            if self.n_in:
                for k in range(self.n_out):
                    self.reverse(buf.val, buf.adj, k, &Jv[k, 0])
        self.give(buf)
        return y, J, changed

    def vjp(self, x, cot):
        """(outputs, cot @ J (n_in,), changed): one reverse sweep seeded with
        the cotangent on every output row."""
        cdef const double[::1] xv = self._inputs(x)
        cdef double[::1] cv = np.ascontiguousarray(cot, np.float64).reshape(-1)
        if cv.shape[0] != self.n_out:
            raise ValueError(f"the cotangent has {cv.shape[0]} numbers, the output {self.n_out}")
        y = np.empty(self.n_out)
        g = np.zeros(self.n_in)
        cdef double[::1] yv = y, gv = g
        cdef Buffers buf = self.take(2)
        cdef node_t changed, top = -1
        cdef Py_ssize_t k
        with nogil:
            changed = self.forward(&xv[0] if self.n_in else NULL, buf.val)
            self.outputs(buf.val, &yv[0] if self.n_out else NULL)
            for k in range(self.n_out):
                if self.out_v[k] > top:
                    top = self.out_v[k]
            if top >= 0:
                memset(buf.adj, 0, (top + 1) * sizeof(double))
                for k in range(self.n_out):
                    if self.out_v[k] >= 0:
                        buf.adj[self.out_v[k]] += cv[k]
                self.backward(buf.val, buf.adj, top)
                for k in range(self.n_in):
                    if 0 <= self.in_v[k] <= top:
                        gv[k] = buf.adj[self.in_v[k]]
        self.give(buf)
        return y, g, changed

    def jvp(self, x, V):
        """(outputs, J @ V for V (n_in, m), changed): tangent sweeps of up to
        TANGENT_BLOCK columns each."""
        cdef const double[::1] xv = self._inputs(x)
        cdef double[:, ::1] Vv = self._columns(V)
        cdef Py_ssize_t m = Vv.shape[1], j, jj, k, o
        y = np.empty(self.n_out)
        JV = np.zeros((self.n_out, m))
        cdef double[::1] yv = y
        cdef double[:, ::1] JVv = JV
        cdef Py_ssize_t block = self.block(m, 1)
        cdef Buffers buf = self.take(3, block)
        cdef node_t changed, r
        with nogil:
            changed = self.forward(&xv[0] if self.n_in else NULL, buf.val)
            self.outputs(buf.val, &yv[0] if self.n_out else NULL)
            j = 0
            while j < m and self.n:
                k = min(block, m - j)
                self.tangents(buf.val, buf.tan, buf.reached, Vv, j, k)
                for o in range(self.n_out):
                    r = self.out_v[o]
                    if r >= 0:
                        for jj in range(k):
                            JVv[o, j + jj] = buf.tan[r * k + jj]
                j += k
        self.give(buf)
        return y, JV, changed

    def hvp(self, x, V, Py_ssize_t out_k=0):
        """(gradient, H @ V for V (n_in, m), changed): forward over reverse,
        one reverse sweep, then a tangent sweep and a second-order reverse
        sweep per block of up to TANGENT_BLOCK columns; for one column, a
        tangent sweep and one backward pass that is both (reverse_hvp_sweep_1)."""
        self._check_out(out_k)
        cdef const double[::1] xv = self._inputs(x)
        cdef double[:, ::1] Vv = self._columns(V)
        cdef Py_ssize_t m = Vv.shape[1], j, jj, k, i
        g = np.zeros(self.n_in)
        HV = np.zeros((self.n_in, m))
        cdef double[::1] gv = g
        cdef double[:, ::1] HVv = HV
        cdef Py_ssize_t block = self.block(m, 2)
        cdef Buffers buf = self.take(4, block)
        cdef node_t changed, r = self.out_v[out_k] if self.n_out else -1
        with nogil:
            changed = self.forward(&xv[0] if self.n_in else NULL, buf.val)
            if m == 1 and r >= 0 and self.n_in:  # one direction: the two backward sweeps in one
                self.tangents(buf.val, buf.tan, buf.reached, Vv, 0, 1)
                memset(buf.adj, 0, (r + 1) * sizeof(double))
                memset(buf.adj_tan, 0, (r + 1) * sizeof(double))
                buf.adj[r] = 1.0
                self.backward_hvp(buf.val, buf.tan, buf.reached, buf.adj, buf.adj_tan, r)
                for i in range(self.n_in):
                    if 0 <= self.in_v[i] <= r:
                        gv[i] = buf.adj[self.in_v[i]]
                        HVv[i, 0] = buf.adj_tan[self.in_v[i]]
                m = 0
            elif self.n_in:
                self.reverse(buf.val, buf.adj, out_k, &gv[0])  # buf.adj: every row's adjoint
            j = 0
            while j < m and r >= 0 and self.n_in:
                k = min(block, m - j)
                self.tangents(buf.val, buf.tan, buf.reached, Vv, j, k)
                memset(buf.adj_tan, 0, (r + 1) * k * sizeof(double))
                hvp_sweep(&self.op_v[0], &self.a_v[0], &self.b_v[0], &self.c_v[0], buf.val, buf.tan,
                          buf.reached, buf.adj, buf.adj_tan, r, k)
                for i in range(self.n_in):
                    if 0 <= self.in_v[i] <= r:
                        for jj in range(k):
                            HVv[i, j + jj] = buf.adj_tan[self.in_v[i] * k + jj]
                j += k
        self.give(buf)
        return g, HV, changed

    def hessian(self, x, Py_ssize_t lo, Py_ssize_t hi):
        """(gradient, the Hessian's block for inputs lo..hi-1, changed) of
        the only output: from as many Hessian-vector products as a coloring
        of its pattern needs (fastad/sparsity.py), where that pays, else
        one per input of the block."""
        if self.n_out != 1:
            raise ValueError("hessian needs a function with one scalar output")
        if not 0 <= lo <= hi <= self.n_in:
            raise ValueError(f"input range {lo}..{hi} is outside the {self.n_in} inputs")
        self.hessian_calls += 1
        if self.hessian_plan is None and (self.n_in >= PLAN_INPUTS or self.hessian_calls > 1):
            from fastad.sparsity import hessian_plan
            self.hessian_plan = hessian_plan(self.op, self.a, self.b, self.in_rows, self.out_v[0]) or False
        if self.hessian_plan:
            g, HS, changed = self.hvp(x, self.hessian_plan.seeds())
            H = self.hessian_plan.recover(HS)[lo:hi, lo:hi] if changed < 0 else None
            return g, H, changed
        V = np.zeros((self.n_in, hi - lo))
        V[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
        g, HV, changed = self.hvp(x, V)
        return g, HV[lo:hi], changed

    def grad_rows(self, const double[:, ::1] X not None, double[:, ::1] G not None,
                  double[::1] Y not None, signed char[::1] changed not None, RowQueue rows not None):
        """The rows of a batch that this thread takes from `rows`: G[i] =
        gradient of output 0 at X[i], Y[i] its value, and changed[i] set to 1
        where X[i] takes another branch (G[i] is then not valid; the caller
        zeroes changed: a row on the recorded branch writes nothing there,
        so two threads do not write into one cache line of it on every row).
        Runs without the GIL; the threads of one batch share its RowQueue.
        Shapes are checked here, with the GIL."""
        if X.shape[1] != self.n_in or G.shape[1] != self.n_in or G.shape[0] != X.shape[0]:
            raise ValueError(f"batch arrays must be (B, {self.n_in})")
        if Y.shape[0] != X.shape[0] or changed.shape[0] != X.shape[0]:
            raise ValueError("batch outputs must have B rows")
        if rows.hi > X.shape[0]:
            raise ValueError(f"row range ..{rows.hi} is outside the batch of {X.shape[0]}")
        if self.n_out != 1:
            raise ValueError("grad_rows needs a function with one scalar output")
        cdef Buffers buf = self.take(2)
        cdef Py_ssize_t i, lo
        cdef double y
        with nogil:
            lo = rows.take()
            while lo < rows.hi:
                for i in range(lo, min(lo + rows.block, rows.hi)):
                    if self.forward(&X[i, 0] if self.n_in else NULL, buf.val) >= 0:
                        changed[i] = 1
                    self.outputs(buf.val, &y)
                    Y[i] = y
                    if self.n_in:
                        self.reverse(buf.val, buf.adj, 0, &G[i, 0])
                lo = rows.take()
        return None


cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    #define fastad_fetch_add(p, v) _InterlockedExchangeAdd64((volatile __int64*)(p), (v))
    #else
    #define fastad_fetch_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
    #endif
    """
    Py_ssize_t fastad_fetch_add(Py_ssize_t* p, Py_ssize_t v) noexcept nogil


cdef class RowQueue:
    """Rows lo..hi of a batch, handed out `block` at a time (an atomic
    counter) to the threads that sweep them: a thread that starts late or
    runs slower takes fewer blocks, where fixed shares would leave the
    others waiting for it. Every row goes to exactly one thread."""
    cdef Py_ssize_t next
    cdef readonly Py_ssize_t hi, block

    def __cinit__(self, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t block=1):
        if not 0 <= lo <= hi or block < 1:
            raise ValueError(f"rows {lo}..{hi} in blocks of {block}: need 0 <= lo <= hi, block >= 1")
        self.next = lo
        self.hi = hi
        self.block = block

    cdef inline Py_ssize_t take(self) noexcept nogil:
        """The first row of the next block (hi or past it: none left)."""
        return fastad_fetch_add(&self.next, self.block)


cdef class Buffers:
    """Scratch for one replay: values and adjoints, n rows each, the
    adjoints followed by `scratch` doubles for the loop sweeps (on the heap,
    not on a thread's stack, whose size the caller may have set small); for
    forward mode and second order also the tangents and
    adjoint tangents of `block` directions (n * block each) and
    tangent_sweep's reached flags (n bytes). Freed with the object."""
    cdef double* val
    cdef double* adj
    cdef double* tan
    cdef double* adj_tan
    cdef unsigned char* reached
    cdef int count  # how many of the four arrays it has
    cdef Py_ssize_t block, nbytes

    def __cinit__(self, Py_ssize_t n, int count, Py_ssize_t block=1, Py_ssize_t scratch=0):
        cdef Py_ssize_t rows = n if n > 0 else 1
        cdef Py_ssize_t adj_rows = rows + scratch  # (Trace.backward's scratch follows)
        cdef Py_ssize_t doubles = rows + (adj_rows if count > 1 else 0) + rows * block * max(count - 2, 0)
        self.count = count
        self.block = block
        self.nbytes = doubles * sizeof(double) + (rows if count > 2 else 0)
        self.val = <double*>malloc(self.nbytes)
        if self.val == NULL:
            raise MemoryError("fastad: cannot allocate replay buffers")
        self.adj = self.val + rows if count > 1 else NULL
        self.tan = self.val + rows + adj_rows if count > 2 else NULL
        self.adj_tan = self.tan + rows * block if count > 3 else NULL
        self.reached = <unsigned char*>(self.val + doubles) if count > 2 else NULL

    def __dealloc__(self):
        free(self.val)


def pack_numbers(list values, list layout):
    """The flat float64 input vector of arguments that are numbers, flat
    lists / tuples of numbers or real ndarrays, read in C (an array by one
    copy; a lone C-contiguous float64 array not even that: its flat view,
    which the sweeps only read); None if any does not fit `layout`, (kind,
    n, shape) per argument: ("f", 1, None) a number, (list or tuple, n,
    None) a flat sequence of n numbers, ("a", n, shape) an ndarray of that
    shape. Then the tree walk gives the precise error."""
    cdef Py_ssize_t total = 0, k, j, n
    if len(values) != len(layout):
        return None
    if len(layout) == 1 and layout[0][0] == "a":  # one ndarray: as it is, when C-contiguous float64
        v = values[0]
        if type(v) is not np.ndarray or v.shape != layout[0][2] or v.dtype.kind not in "fiu":
            return None
        return np.ascontiguousarray(v, np.float64).reshape(-1)  # (the sweeps only read it)
    for kind, n, shape in layout:
        total += n
    out = np.empty(total)
    cdef double[::1] o = out
    cdef Py_ssize_t pos = 0
    cdef PyObject** items
    for k in range(len(layout)):
        v = values[k]
        kind, n, shape = layout[k]
        if kind == "f":
            if not isinstance(v, float) and type(v) is not int:
                return None
            o[pos] = v
            pos += 1
            continue
        if kind == "a":
            # what flatten takes: float, signed or unsigned integer dtypes
            if type(v) is not np.ndarray or v.shape != shape or v.dtype.kind not in "fiu":
                return None
            out[pos:pos + n] = v.reshape(-1)  # C order, as flatten reads it
            pos += n
            continue
        if type(v) is not kind or len(v) != n:
            return None
        items = PySequence_Fast_ITEMS(v)  # a list's or tuple's item array: no call per item
        for j in range(n):
            if PyFloat_Check(items[j]):  # float or a subclass: np.float64 (list(an_array))
                o[pos] = PyFloat_AS_DOUBLE(items[j])
            elif PyLong_CheckExact(items[j]):
                o[pos] = <double><object>items[j]
            else:
                return None
            pos += 1
    return out


cdef extern from *:
    """
    /* Recycling reads reference counts: only where the GIL makes them exact. */
    #ifdef Py_GIL_DISABLED
    #define FASTAD_RECYCLES 0
    #else
    #define FASTAD_RECYCLES 1
    #endif
    """
    const bint FASTAD_RECYCLES
    Py_ssize_t Py_REFCNT(PyObject* o)
    bint PyFloat_CheckExact(PyObject* o)
    ctypedef struct PyFloatObject:
        double ob_fval


# Lists longer than this are made anew every call: a recycled list is held
# between calls, and at a million floats two of them hold 64 MB.
cdef enum:
    RECYCLE_MAX = 1 << 17


cdef class RecycledLists:
    """Result lists of Python floats (a gradient, a Hessian-vector product),
    made from float64 vectors, in which a list handed out two calls ago, and
    each float in it, is written again when nothing but this object still
    refers to it (as CPython's own zip() reuses its result tuple):
    `g = cf.grad(x)` in a loop holds the last list while the next is made,
    so two take turns. Nothing else can see an
    object that only this one refers to, so rewriting it is safe. Making
    10,000 new floats (and freeing the last call's) costs about 110 us on
    the development VM, rewriting them about 11 us: for Rosenbrock n =
    10,000 that was a quarter of cf.grad on a list. No Python code runs
    while a list is written (a float's dealloc runs none; anything else a
    caller put in a list is let go of before, with the list), so nothing
    can change it under the loop."""
    cdef list lists  # the last two lists handed out
    cdef int turn

    def __cinit__(self):
        self.lists = [None, None]
        self.turn = 0

    def of(self, const double[::1] v):
        """The numbers of v as a list of floats."""
        return self.fill(&v[0] if v.shape[0] else NULL, NULL, v.shape[0], 0)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef list fill(self, const double* v, const node_t* rows, Py_ssize_t n, node_t top):
        """A list of n floats: v[i], or with rows v[rows[i]] where 0 <=
        rows[i] <= top and 0.0 elsewhere (an input the output does not
        reach: Trace.grad_list reads the gradient off the adjoints so)."""
        cdef Py_ssize_t i
        cdef PyObject* item
        cdef list out
        cdef object number
        cdef double x
        cdef int k
        if not FASTAD_RECYCLES or n > RECYCLE_MAX:
            return [picked(v, rows, i, top) for i in range(n)]
        for k in range(2):
            out = self.lists[k]
            # held here, in self.lists and by `out`, and by nothing else
            if out is None or Py_REFCNT(<PyObject*>out) != 2:
                continue
            if len(out) == n:
                for i in range(n):
                    item = PyList_GET_ITEM(out, i)
                    if not PyFloat_CheckExact(item):  # the caller put something else in
                        break
                    x = picked(v, rows, i, top)
                    if Py_REFCNT(item) == 1:
                        (<PyFloatObject*>item).ob_fval = x
                    else:  # a float the caller kept: theirs, a new one here
                        number = x
                        Py_INCREF(number)
                        PyList_SET_ITEM(out, i, number)
                        Py_DECREF(<object>item)  # (a float's dealloc runs no code)
                else:
                    return out
            # changed before it was let go: what the caller put in goes now,
            # with the list, before any list is written
            out = None
            self.lists[k] = None
        self.lists[self.turn] = None  # (the list it held goes first, as above)
        out = PyList_New(n)
        for i in range(n):
            number = picked(v, rows, i, top)
            Py_INCREF(number)  # (PyList_SET_ITEM steals the reference)
            PyList_SET_ITEM(out, i, number)
        self.lists[self.turn] = out
        self.turn ^= 1
        return out


cdef inline double picked(const double* v, const node_t* rows, Py_ssize_t i, node_t top) noexcept nogil:
    if rows == NULL:
        return v[i]
    return v[rows[i]] if 0 <= rows[i] <= top else 0.0


@cython.boundscheck(False)
@cython.wraparound(False)
def live_rows(const op_t[::1] op, const node_t[::1] a, const node_t[::1] b, roots, dict more=None):
    """Which rows the root rows depend on, roots included: a bool mask.

    One backward pass (creation order is topological). compile keeps only
    these rows: work nothing reads is not replayed. Arguments must be
    earlier rows, as on a tape (records made by fastad are). more: row ->
    its further argument rows, for rows with more than a and b
    (concatenate and stack keep theirs in aux)."""
    cdef Py_ssize_t n = op.shape[0], i
    cdef bint has_more = bool(more)
    if a.shape[0] != n or b.shape[0] != n:
        raise ValueError("op, a and b differ in length")
    live = np.zeros(n, np.uint8)
    cdef unsigned char[::1] lv = live
    for r in roots:
        if not 0 <= r < n:
            raise IndexError(f"root row {r} is outside the {n} rows")
        lv[r] = 1
    for i in range(n - 1, -1, -1):
        if lv[i]:
            if 0 <= a[i] < i:
                lv[a[i]] = 1
            if 0 <= b[i] < i:
                lv[b[i]] = 1
            if has_more and i in more:
                for r in more[i]:
                    if 0 <= r < i:
                        lv[r] = 1
    return live.view(bool)

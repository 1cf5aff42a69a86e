# cython: language_level=3
"""The compiled core's contract: the tape and the handle that points into it."""
from libc.stdint cimport uint8_t, uint64_t
from fastad._ops cimport node_t, op_t


# ==== Tape ===================================================================

cdef class Tape:
    """A Wengert list as a struct of arrays: row i is one elementary op.

    A Jacobian tape: each row keeps its op's partial derivatives, worked
    out when it was recorded, so the reverse sweep is multiply-and-add with
    no op to dispatch on. Values are not kept (each Var holds its own); they
    can be recomputed from the rows (value_sweep), for replays and explain.
    Creation order is a topological order (an op's arguments exist before
    it), so the reverse sweep is one backward loop. Rows are appended by the
    Var operators with the GIL held; the sweeps run over the raw arrays
    without it. Memory belongs to this object and goes when the last Var
    that points into it goes.
    """
    cdef op_t* op          # (cap,) op code of each row, see fastad/ops.py
    cdef node_t* a         # (cap,) first argument row; -1: none, or a constant
    cdef node_t* b         # (cap,) second argument row; -1: none, or a constant
    cdef double* da        # (cap,) d row / d a; for a = -1, the constant. INPUT, elem
                           #        and array rows have no partials: their value (nan
                           #        for an array value, which tape.obj holds)
    cdef double* db        # (cap,) d row / d b; for b = -1, the constant. INPUT, elem
                           #        and array rows: their constant (elem: the flat index)
    cdef double* adj       # (cap,) adjoints: a column like the others, zeroed as it
                           #        grows, the last sweep's after one. Below adj[0],
                           #        SINKS scratch slots (see jacobian_sweep)
    cdef double* adj_mem   # the allocation adj points into (adj - SINKS, adj_cap slots)
    cdef node_t* in_rows   # (in_cap,) the INPUT row of each leaf in `leaves`
    cdef Py_ssize_t n      # rows in use
    cdef Py_ssize_t cap    # rows allocated in op/a/b/da/db/adj
    cdef Py_ssize_t adj_n  # rows the last sweep covered (adj beyond is stale)
    cdef Py_ssize_t adj_cap
    cdef Py_ssize_t adj_dirty  # adj may be nonzero below this row (0 above)
    cdef Py_ssize_t in_cap
    cdef Py_ssize_t max_rows  # a push beyond this raises (default: node_t's range)
    cdef list leaves       # the leaves (Var or Array) of the INPUT rows, in row order
    cdef dict obj          # row -> ndarray value, for array rows with an array value
    cdef dict aux          # row -> parameters of an array row (axis, shape, index, constants)
    cdef dict arr_adj      # row -> ndarray adjoint of an array row, after a sweep
    cdef object vals       # recomputed values of the first len(vals) rows (or None)
    cdef bint has_arrays   # any array row: the sweep hands those to fastad/array_rules.py
    cdef uint64_t serial   # unique per tape (and per reset): leaves cache rows by it
    cdef readonly bint consumed  # swept without retain_graph: no new ops, no new sweep
    cdef bint sweeping     # a sweep runs (its C loops without the GIL): no second sweep,
                           # and no realloc of the rows it reads (grow, shrink) meanwhile
    cdef Py_ssize_t rejoins  # INPUT rows of grad-made leaves that came from another tape
    cdef dict input_sums     # id(leaf) -> its rows' summed adjoint, where rejoins > 0 (grad reads it)
    cdef public object made  # the leaves grad or compile made for the function recorded
                             # here (None for other tapes): a nested grad checks them

    cdef int grow(self) except -1
    cdef node_t push(self, op_t op, node_t a, node_t b, double da, double db) except -1
    cdef node_t input_row(self, Var leaf) except -1
    cdef node_t array_input_row(self, Array leaf) except -1
    cdef int add_leaf(self, object leaf, node_t row) except -1
    cdef int sweep(self, node_t out, object seed, bint deposit) except -1
    cdef int sweep_rows(self, node_t out, object seed, bint deposit) except -1
    cdef set elem_targets(self, node_t out)
    cdef int sweep_arrays(self, node_t out) except -1
    cdef int find_nan_adjoint(self, node_t out) except -1
    cdef object values(self)
    cdef double constant(self, node_t i)
    cdef list arg_rows(self, node_t i)
    cdef bint adjoint_has_nan(self, node_t r)
    cdef int array_nan_adjoint(self, node_t i, list clean) except -1
    cdef void shrink(self)
    cdef void reset(self)


# ==== Var ====================================================================

cdef class Var:
    """A scalar: a leaf (tape is None) that owns its value and gradient, or a
    handle to row `idx` of `tape`. Holds the tape object, never a pointer
    into its arrays (they move when the tape grows)."""
    cdef readonly Tape tape  # None for a leaf
    cdef node_t idx       # node: its row; leaf: its INPUT row on the tape whose serial is `serial`
    cdef bint made        # leaf only: made by grad for f's argument (grad reads its adjoints off its tape)
    cdef uint64_t serial  # leaf only: which tape `idx` refers to (0: none; LEFT: none since a new value)
    cdef double val       # the value (the tape keeps partials, not values)
    cdef double grad_     # leaf only: the accumulated gradient


# ==== Array ==================================================================

cdef class Array:
    """A float64 ndarray that records every operation on it: a leaf (tape is
    None) owning its value and gradient, or a handle to row `idx` of `tape`,
    whose value the tape's object table holds too."""
    cdef readonly Tape tape   # None for a leaf
    cdef node_t idx           # as Var.idx
    cdef bint made            # as Var.made
    cdef uint64_t serial      # as Var.serial
    cdef readonly object value  # the float64 ndarray (read-only)
    cdef object grad_         # leaf only: the accumulated gradient (None until a sweep)
    cdef const double[::1] flat  # the value's elements, for fast a[i] (set on first use)
    cdef bint flat_ready      # whether `flat` is set

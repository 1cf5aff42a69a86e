# Part of fastad/_core.pyx (included there).
# ArrayTrace: fad.compile's replay of a recording with array rows.

# ==== ArrayTrace =============================================================

# Rows a replay keeps whatever reads them: inputs, and the guards it checks.
_ROOT_OPS = np.array([s.code for s in _ops_table.OPS
                      if s.kind in ("guard", "input") or s.name in ("array_input", "compare")], np.uint8)

cdef enum:  # ArrayTrace.runs
    RUN_SCALAR = 0
    RUN_ARRAY = 1
    RUN_DEAD = 2


@cython.boundscheck(False)  # every index is checked in ArrayTrace.__init__, before any replay
@cython.wraparound(False)
cdef class ArrayTrace:
    """A recording with array rows (matmul, sum, map ...), ready to replay.

    A replay rebuilds the tape row by row with the new inputs: runs of
    scalar rows (elem reads included) in C with the recording's own rules
    (op_record), each array row by NumPy once, through the front end's own
    kernel (fastad.array.kernel, made once per row). The reverse sweep is then the
    tape's own: no Python per scalar op either way. Rows keep their
    numbers, so aux's row references stay valid.

    Columns (n rows): op, a, b, c as in Tape.rows(); aux (list) each row's
    parameters; shapes (dict) each array-valued row's shape; consts (dict)
    the value of each input row that is not an input of the function (a
    leaf from outside it); branch0 the piece each scalar kink or guard row
    fell on (-1 for others); pieces (dict) the same for array rows: the
    int8 pieces of an elementwise kink, the bools a comparison gave. leaves:
    per input of the function,
    (row or -1, first number, shape or None for a number); outs: per output
    part, (row or -1, shape or None, constant value).
    """
    cdef readonly object op, a, b, c, branch0
    cdef readonly list aux, leaves, outs
    cdef readonly dict shapes, consts, pieces
    cdef readonly Py_ssize_t n, n_in, n_out
    cdef const op_t[::1] op_v
    cdef const node_t[::1] a_v, b_v
    cdef const double[::1] c_v
    cdef const signed char[::1] branch_v
    cdef list runs  # (kind, lo, hi, kernel, slots, pieces, shape): rows lo..hi-1 are scalar rows,
                    # one array row (with the function that computes its value, how many
                    # values it takes, its recorded pieces or None, its shape or None) or dead rows
    cdef readonly object live  # bool per row: an output or a guard depends on it
    cdef object scalar_leaf_rows, scalar_leaf_starts  # where the number leaves go

    def __init__(self, op, a, b, c, list aux, dict shapes, dict consts, branch0, dict pieces,
                 list leaves, list outs, fingerprint=None):
        if fingerprint is not None and fingerprint != _ops_table.fingerprint():
            raise ValueError(
                "this compiled function was made with another version of fastad's op table "
                f"(fingerprint {fingerprint}, this fastad has {_ops_table.fingerprint()}); "
                "compile the function again")
        self.op = np.ascontiguousarray(op, np.uint8)
        self.a = np.ascontiguousarray(a, np.int32)
        self.b = np.ascontiguousarray(b, np.int32)
        self.c = np.ascontiguousarray(c, np.float64)
        self.branch0 = np.ascontiguousarray(branch0, np.int8)
        self.aux, self.shapes, self.consts, self.pieces = aux, shapes, consts, pieces
        self.leaves, self.outs = leaves, outs
        self.n = self.op.shape[0]
        self.n_in = sum(1 if s is None else int(np.prod(s)) for _, _, s in leaves)
        self.n_out = sum(1 if s is None else int(np.prod(s)) for _, s, _ in outs)
        self._validate()
        self.op_v, self.a_v, self.b_v, self.c_v, self.branch_v = self.op, self.a, self.b, self.c, self.branch0
        self.scalar_leaf_rows = np.array([r for r, _, s in leaves if r >= 0 and s is None], np.intp)
        self.scalar_leaf_starts = np.array([k for r, k, s in leaves if r >= 0 and s is None], np.intp)
        if np.any((self.scalar_leaf_starts < 0) | (self.scalar_leaf_starts >= self.n_in)):
            raise ValueError("trace leaves refer to input numbers that do not exist")
        self.live = self._live_rows()
        self.runs = []
        cdef const unsigned char[::1] live = self.live.view(np.uint8)
        cdef Py_ssize_t i, lo = 0
        cdef int kind, run = -1
        for i in range(self.n):
            if not live[i]:
                kind = RUN_DEAD
            elif self.op_v[i] >= FIRST_ARRAY_OP and self.op_v[i] != OP_ELEM:
                kind = RUN_ARRAY
            else:
                kind = RUN_SCALAR
            if kind != run or kind == RUN_ARRAY:  # an array row is a run of its own
                if run >= 0:
                    self.runs.append((run, lo, i))
                run, lo = kind, i
        if run >= 0:
            self.runs.append((run, lo, self.n))
        from fastad.array import kernel, kernel_slots
        self.runs = [(kind, lo, hi, kernel(self.op_v[lo], self.c_v[lo], self.aux[lo], self.shapes.get(lo)),
                      kernel_slots(self.op_v[lo], self.c_v[lo]), self.pieces.get(lo), self.shapes.get(lo))
                     if kind == RUN_ARRAY and self.op_v[lo] != OP_ARRAY_INPUT else (kind, lo, hi, None, 0, None, None)
                     for kind, lo, hi in self.runs]

    def _live_rows(self):
        """Which rows the outputs and the guards depend on: a replay skips
        the others (dead code), as compile does for a scalar trace
        (_live_only in fastad/compiled.py). Input rows stay, for the
        gradient to find."""
        from fastad._replay import live_rows
        roots = np.flatnonzero(np.isin(self.op, _ROOT_OPS)).tolist() + [r for r, _, _ in self.outs if r >= 0]
        more = {i: self.aux[i][0] for i in range(self.n) if _arity[self.op_v[i]] == -1}
        return live_rows(self.op, self.a, self.b, roots, more)

    def _validate(self):
        """Rows from a pickle are user input: check what the C loops trust."""
        n = self.n
        for name in ("a", "b", "c", "branch0"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"trace array {name} has shape {getattr(self, name).shape}, expected ({n},)")
        if len(self.aux) != n:
            raise ValueError(f"trace aux has {len(self.aux)} entries, expected {n}")
        if n and self.op.max() >= N_OPS:
            raise ValueError(f"trace has op code {self.op.max()}, this fastad knows {N_OPS}")
        rows = np.arange(n)
        for name in ("a", "b"):
            arg = getattr(self, name)
            if np.any((arg >= rows) | (arg < -1)):
                raise ValueError(f"trace column {name} refers to a row that is not earlier")
        for i in np.flatnonzero(self.op == OP_ELEM):  # from a row whose value the replay holds as an array:
            src = self.a[i]                            # an input (0-d too) or an array row of 1 or more axes
            shape = self.shapes.get(src) if src >= 0 and self.op[src] != OP_ELEM else None
            if not (type(shape) is tuple and (len(shape) or self.op[src] == OP_ARRAY_INPUT)
                    and 0 <= self.c[i] < np.prod(shape)):
                raise ValueError(f"trace row {i} reads an element outside its array")
        for i in np.flatnonzero(self.op >= FIRST_ARRAY_OP):
            if _ops_table.OPS[self.op[i]].arity == -1 and any(not -1 <= r < i for r in self.aux[i][0]):
                raise ValueError(f"trace row {i} refers to a row that is not earlier")
        for row in self.shapes:
            if not (0 <= row < n and self.op[row] >= FIRST_ARRAY_OP):
                raise ValueError(f"trace shapes name row {row}, which is not an array row")
        for row, value in self.consts.items():
            if not (0 <= row < n and self.op[row] in (OP_INPUT, OP_ARRAY_INPUT)
                    and np.shape(value) == (self.shapes.get(row) or ())):
                raise ValueError(f"trace constant of row {row} does not fit the row")
            if self.op[row] == OP_INPUT and type(value) is not float:
                raise ValueError(f"trace constant of row {row} is not a float")
            if self.op[row] == OP_ARRAY_INPUT and not (type(value) is np.ndarray and is_doubles(value)):
                raise ValueError(f"trace constant of row {row} is not a C-contiguous float64 array")
        for row, start, shape in self.leaves:
            if not -1 <= row < n or (row >= 0 and (self.shapes.get(row) != shape or
                                                   self.op[row] != (OP_INPUT if shape is None else OP_ARRAY_INPUT))):
                raise ValueError(f"trace leaf row {row} does not fit the row")
        for row, _, _ in self.outs:
            if not -1 <= row < n:
                raise ValueError("trace outputs refer to a row outside the tape")

    def __reduce__(self):
        return (ArrayTrace, (self.op, self.a, self.b, self.c, self.aux, self.shapes, self.consts,
                             self.branch0, self.pieces, self.leaves, self.outs, _ops_table.fingerprint()))

    @property
    def nbytes(self):
        return sum(getattr(self, k).nbytes for k in ("op", "a", "b", "c", "branch0")) + sum(
            v.nbytes for v in self.consts.values() if isinstance(v, np.ndarray))

    # -- the forward replay: a new tape --

    cdef node_t scalar_rows(self, Tape t, Py_ssize_t lo, Py_ssize_t hi, double* val,
                            double** src) except -2:
        """Rows lo..hi-1 (scalar rows and elem reads) onto t, their values
        into val, as recording makes them; returns the first row whose
        piece differs from the recording's, or -1."""
        cdef Py_ssize_t i
        cdef node_t ia, ib
        cdef op_t op
        cdef double x, y, v
        cdef Partials d
        for i in range(lo, hi):
            op, ia, ib = self.op_v[i], self.a_v[i], self.b_v[i]
            if op == OP_INPUT:
                t.push(OP_INPUT, -1, -1, val[i], self.c_v[i])
                continue
            if op == OP_ELEM:  # the index was checked against the recorded shape, which replays keep
                val[i] = src[ia][<Py_ssize_t>self.c_v[i]]
                t.push(OP_ELEM, ia, -1, val[i], self.c_v[i])
                continue
            x = val[ia] if ia >= 0 else self.c_v[i]
            y = val[ib] if ib >= 0 else self.c_v[i]
            v = op_record(op, x, y, ib >= 0, &d)
            if self.branch_v[i] >= 0 and op_branch(op, x, y) != self.branch_v[i]:
                return i
            t.push(op, ia, ib, d.dx if ia >= 0 else self.c_v[i], d.dy if ib >= 0 else self.c_v[i])
            val[i] = v
        return -1

    cdef int place_inputs(self, x, vals, dict arrays) except -1:
        """The inputs into vals (numbers) and arrays (row -> read-only array)."""
        if type(x) is list:
            if len(x) != len(self.leaves):
                raise ValueError(f"expected {len(self.leaves)} input parts, got {len(x)}")
            for (row, start, shape), part in zip(self.leaves, x):
                if row < 0:
                    continue
                if shape is None:
                    vals[row] = float(part)
                    continue
                view = np.asarray(part, np.float64, order="C").view()  # (ascontiguousarray makes 0-d 1-d)
                if view.shape != shape:
                    raise ValueError(f"input of row {row} has shape {view.shape}, expected {shape}")
                cnp.PyArray_CLEARFLAGS(<cnp.ndarray>view, cnp.NPY_ARRAY_WRITEABLE)
                arrays[row] = view
            return 0
        if not (type(x) is np.ndarray and x.dtype == np.float64 and x.flags.owndata
                and not x.flags.writeable):
            x = np.array(x, np.float64)  # read-only memory of our own: array rows take views of it
            x.flags.writeable = False
        if x.shape != (self.n_in,):
            raise ValueError(f"expected {self.n_in} input numbers, got shape {x.shape}")
        vals[self.scalar_leaf_rows] = x[self.scalar_leaf_starts]
        for row, start, shape in self.leaves:
            if row >= 0 and shape is not None:
                arrays[row] = x[start:start + int(np.prod(shape))].reshape(shape)
        return 0

    cdef object arg_value(self, Tape t, node_t r, const double* val):
        if r < 0:
            return None
        v = t.obj.get(r)
        return val[r] if v is None else v

    cdef node_t array_row(self, Tape t, Py_ssize_t i, kernel, int slots, pieces, shape, double* val,
                          double** src) except -2:
        """Array row i onto t, its value by its kernel (which takes `slots`
        values, -1: one per row of a variadic row); returns i if its pieces
        (a kink or a comparison: `pieces`, else None) differ from the
        recording's, else -1. `shape`: the recorded value's, None for a number."""
        cdef op_t op = self.op_v[i]
        aux = self.aux[i]
        if slots == 1:
            value = kernel(self.arg_value(t, self.a_v[i], val))
        elif slots == 2:
            value = kernel(self.arg_value(t, self.a_v[i], val), self.arg_value(t, self.b_v[i], val))
        else:
            value = kernel(*[self.arg_value(t, r, val) for r in aux[0]])
        if pieces is not None:
            if op == OP_COMPARE:
                if not np.array_equal(value, pieces):
                    return i
                value = np.asarray(value, np.float64)  # the bools as numbers, as compare recorded them
            elif not np.array_equal(map_pieces(<op_t>self.c_v[i], [self.arg_value(t, self.a_v[i], val),
                                                                  self.arg_value(t, self.b_v[i], val)], aux),
                                    pieces):
                return i  # a kink applied elementwise
        if cnp.PyArray_Check(value) and cnp.PyArray_NDIM(<cnp.ndarray>value) > 0:
            if not is_doubles(value):
                value = as_value(value)
            cnp.PyArray_CLEARFLAGS(<cnp.ndarray>value, cnp.NPY_ARRAY_WRITEABLE)
            if value.shape != shape:
                raise FastADError(f"replaying row {i} ({array_op_name(op, self.c_v[i])}) made shape "
                                  f"{value.shape}, the recording {shape or ()}")
            t.push(op, self.a_v[i], self.b_v[i], NAN, self.c_v[i])
            t.obj[i] = value
            src[i] = <double*>cnp.PyArray_DATA(<cnp.ndarray>value)
            val[i] = NAN
        else:  # one number (a float, a NumPy scalar or a 0-d array): a scalar row, as recording made it
            if shape is not None:
                raise FastADError(f"replaying row {i} ({array_op_name(op, self.c_v[i])}) made one "
                                  f"number, the recording shape {shape}")
            val[i] = float(value)
            t.push(op, self.a_v[i], self.b_v[i], val[i], self.c_v[i])
        if aux is not None:
            t.aux[i] = aux
        return -1

    cdef tuple forward(self, x):
        """(tape, values, changed): the tape rebuilt at inputs x, the
        function's arguments flattened: a list with one number or array per
        leaf (arrays are read in place, through read-only views: nothing
        else runs while the replay reads them), or the flat float64 vector
        of all their numbers. changed is the first row whose piece differs
        from the recording's (the tape then stops there), or -1."""
        cdef Tape t = Tape()
        t.has_arrays = True
        vals = np.empty(self.n)
        cdef double[::1] vv = vals
        cdef double* val = &vv[0] if self.n else NULL
        cdef double** src = <double**>calloc(self.n + 1, sizeof(double*))
        cdef node_t changed = -1
        cdef Py_ssize_t i, lo, hi
        if src == NULL:
            raise MemoryError()
        try:
            arrays = dict(self.consts)
            for row, value in self.consts.items():
                if not isinstance(value, np.ndarray):
                    val[row] = value
            self.place_inputs(x, vals, arrays)
            for kind, lo, hi, kernel, slots, pieces, shape in self.runs:
                if kind == RUN_SCALAR:
                    changed = self.scalar_rows(t, lo, hi, val, src)
                elif kind == RUN_DEAD:  # nothing reads them: placeholders keep the numbering
                    for i in range(lo, hi):
                        t.push(OP_INPUT, -1, -1, NAN, 0.0)
                        val[i] = NAN
                elif self.op_v[lo] == OP_ARRAY_INPUT:
                    value = arrays[lo]
                    t.push(OP_ARRAY_INPUT, -1, -1, NAN, 0.0)
                    t.obj[lo] = value
                    src[lo] = <double*>cnp.PyArray_DATA(value)
                    val[lo] = NAN
                else:
                    changed = self.array_row(t, lo, kernel, slots, pieces, shape, val, src)
                if changed >= 0:
                    break
        finally:
            free(src)
        t.vals = vals  # the array rules read scalar arguments here (no value_sweep)
        return t, vals, changed

    cdef object outputs(self, Tape t, const double[::1] val):
        """The flat vector of the outputs."""
        if len(self.outs) == 1 and self.outs[0][0] >= 0 and self.outs[0][1] is None:  # a loss
            return np.full(1, val[self.outs[0][0]])
        parts = []
        for row, shape, const in self.outs:
            if row < 0:
                parts.append(np.ravel(const))
            elif shape is None:
                parts.append([val[row]])
            else:
                parts.append(np.ravel(t.obj[row]))
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    cdef list gradient(self, Tape t, node_t out, seed):
        """Sweep t from output row `out` seeded with `seed`: the gradient, one
        part per leaf (a float, or an array that is the caller's: the
        adjoints the sweep made, or zeros)."""
        if out >= 0:
            t.sweep(out, seed, False)
        parts = []
        for row, start, shape in self.leaves:
            if shape is None:
                parts.append(t.adj[row] if 0 <= row <= out else 0.0)
            else:
                g = t.arr_adj.get(row) if 0 <= row <= out else None
                parts.append(np.zeros(shape) if g is None else g)
        return parts

    cdef object flat(self, list parts):
        """A gradient's parts as one flat vector."""
        return np.concatenate([np.ravel(p) for p in parts]) if parts else np.zeros(0)

    cdef tuple output_number(self, Py_ssize_t k):
        """(row, seed) that picks output number k."""
        if not 0 <= k < self.n_out:
            raise IndexError(f"output number {k} does not exist; the function has {self.n_out}")
        for row, shape, const in self.outs:
            size = 1 if shape is None else int(np.prod(shape))
            if k < size:
                if shape is None or row < 0:
                    return row, 1.0
                seed = np.zeros(size)
                seed[k] = 1.0
                return row, seed.reshape(shape)
            k -= size

    # -- the entry points of Trace, for fastad/compiled.py --

    def values(self, x):
        t, val, changed = self.forward(x)
        return (self.outputs(t, val) if changed < 0 else None), changed

    def value_and_grad(self, x, Py_ssize_t out_k=0):
        """(outputs, gradient of output number out_k, changed): the gradient
        as parts when x is (a list), else flat."""
        row, seed = self.output_number(out_k)
        t, val, changed = self.forward(x)
        if changed >= 0:
            return None, None, changed
        g = self.gradient(t, row, seed)
        return self.outputs(t, val), (g if type(x) is list else self.flat(g)), changed

    def vjp(self, x, cot):
        """(outputs, cot @ J, changed), the second as value_and_grad's."""
        cot = np.ascontiguousarray(cot, np.float64).reshape(-1)
        if cot.shape[0] != self.n_out:
            raise ValueError(f"the cotangent has {cot.shape[0]} numbers, the output {self.n_out}")
        t, val, changed = self.forward(x)
        if changed >= 0:
            return None, None, changed
        g = self.flat(self.gradient(t, -1, None))
        start = 0
        for row, shape, const in self.outs:  # one sweep per output part
            size = 1 if shape is None else int(np.prod(shape))
            part = cot[start:start + size]
            start += size
            if row >= 0 and np.any(part):
                g += self.flat(self.gradient(t, row, float(part[0]) if shape is None else part.reshape(shape)))
        return self.outputs(t, val), g, changed

    def jacobian_rev(self, x):
        """(outputs, J (n_out, n_in) by one sweep per output number, changed)."""
        t, val, changed = self.forward(x)
        if changed >= 0:
            return None, None, changed
        J = np.zeros((self.n_out, self.n_in))
        for k in range(self.n_out):
            row, seed = self.output_number(k)
            J[k] = self.flat(self.gradient(t, row, seed))
        return self.outputs(t, val), J, changed


cdef object map_pieces(op_t code, list args, aux):
    """The piece (op_branch) each element of a kink `map` row falls on, as an
    int8 array: the array form of a scalar kink row's branch0."""
    cx, cy = aux if aux is not None else (None, None)
    x = np.asarray(cx if args[0] is None else args[0], np.float64)
    y = np.asarray(cy if len(args) < 2 or args[1] is None else args[1], np.float64) if _arity[code] == 2 else x
    x, y = np.broadcast_arrays(x, y)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    out = np.empty(x.shape, np.int8)
    cdef const double[::1] xv = x.reshape(-1)
    cdef const double[::1] yv = y.reshape(-1)
    cdef signed char[::1] ov = out.reshape(-1)
    cdef Py_ssize_t k
    for k in range(xv.shape[0]):
        ov[k] = op_branch(code, xv[k], yv[k])
    return out


def array_trace(Tape t, dict rows, list leaves, list outs):
    """An ArrayTrace of recording t, whose rows (t.rows()) the caller has
    read: leaves as (row, first number, shape or None) per input, outs as
    (row, shape or None, constant) per output part."""
    cdef Py_ssize_t i, n = t.n
    op, a, b, c, val = rows["op"], rows["a"], rows["b"], rows["c"], rows["val"]
    branch0 = np.empty(n, np.int8)
    cdef signed char[::1] piece = branch0
    cdef const op_t[::1] op_v = op
    cdef const node_t[::1] a_v = a, b_v = b
    cdef const double[::1] c_v = c, val_v = val
    if n:
        branch_sweep(n, &op_v[0], &a_v[0], &b_v[0], &c_v[0], &val_v[0], &piece[0])
    pieces, shapes, consts = {}, {}, {}
    leaf_rows = {row for row, _, _ in leaves}
    aux = [t.aux.get(i) for i in range(n)]
    for i in range(n):
        if i in t.obj:
            shapes[i] = t.obj[i].shape
        if op_v[i] in (OP_INPUT, OP_ARRAY_INPUT) and i not in leaf_rows:
            consts[i] = t.obj[i] if i in t.obj else float(val_v[i])
        elif op_v[i] == OP_COMPARE:
            v = t.obj.get(i, val_v[i])
            pieces[i] = np.asarray(v) != 0.0 if isinstance(v, np.ndarray) else bool(v != 0.0)
        elif op_v[i] == OP_MAP and op_piecewise(<op_t>c_v[i]):
            args = [t._value(r) if r >= 0 else None for r in (a_v[i], b_v[i])]
            pieces[i] = map_pieces(<op_t>c_v[i], args, aux[i])
    return ArrayTrace(op, a, b, c, aux, shapes, consts, branch0, pieces, leaves, outs)

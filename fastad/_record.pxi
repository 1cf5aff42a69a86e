# Part of fastad/_core.pyx (included there).
# Recording: a row appended per op, on the one tape its arguments share.

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
    raise NanError(f"fastad: op '{_ops_table.OPS[op].name}' made nan from inputs with no nan {args}")


cdef Var record(op_t op, Var x, Var y, double c):
    """Append op(x, y) and return its handle. x or y may be None: that
    argument is the constant c (or absent, for a unary op)."""
    cdef Tape t
    cdef node_t ia = -1, ib = -1
    cdef Partials d
    cdef double xv = x.val if x is not None else c
    cdef double yv = y.val if y is not None else c
    cdef double v
    if _no_grad_threads and thread_state().no_grad:
        v = op_value(op, xv, yv)
        if _debug_nans and v != v:  # (debug_nans holds inside no_grad too)
            raise_nan(op, x, y, c)
        if thread_state().recordings:
            leave_graph((x, y))
        return new_leaf(v)
    # The partials now, while the arguments' values are at hand: the sweep
    # then only multiplies. A constant (or absent) argument's slot keeps c.
    v = op_record(op, xv, yv, y is not None, &d)
    if _debug_nans and v != v:
        raise_nan(op, x, y, c)
    t = usable_tape(join_tapes(x.tape if x is not None else None, y.tape if y is not None else None))
    if x is not None:
        ia = x.idx if x.tape is not None else t.input_row(x)
    else:
        d.dx = c
    if y is not None:
        ib = y.idx if y.tape is not None else t.input_row(y)
    else:
        d.dy = c
    return new_node(t, t.push(op, ia, ib, d.dx, d.dy), v)


cdef inline bint is_number(object v):
    if type(v) is float or type(v) is int:
        return True
    # (numbers.Real: a Fraction, as a float takes one; a NumPy bool is not a number to NumPy)
    return isinstance(v, (float, int, np.floating, np.integer, Real)) and not isinstance(v, np.bool_)


cdef extern from "Python.h":
    # (declared without an exception clause: number() looks at the error itself)
    double as_double "PyFloat_AsDouble" (object v)
    bint error_occurred "PyErr_Occurred" ()
    bint error_matches "PyErr_ExceptionMatches" (object kind)
    void clear_error "PyErr_Clear" ()


cdef inline double number(object v) except? -1.0:
    """A real number as a double (is_number said it is one). An int beyond
    float64's range is a ValueError, one of API.md's error types, where
    float() raises OverflowError. No try block: an int constant (x * 2)
    costs what it did."""
    if type(v) is float:
        return <double>v
    cdef double d = as_double(v)
    if d == -1.0 and error_occurred():
        return not_a_double(v)
    return d


cdef double not_a_double(object v) except? -1.0:
    """The error as_double(v) left, as number() reports it (any other
    error stays pending and goes up as it is)."""
    if error_matches(OverflowError):
        clear_error()
        raise ValueError(f"an int of {v.bit_length()} bits is beyond float64's range")
    return -1.0


cdef object binop(op_t op, Var x, object y):
    """op(x, y) for a Var x and anything y."""
    cdef double cy
    if type(y) is Var:
        return record(op, x, <Var>y, 0.0)
    if is_number(y):
        cy = number(y)
        return record(op, x, None, cy)
    return NotImplemented


cdef object rbinop(op_t op, Var y, object x):
    """op(x, y) for anything x and a Var y (a reflected operator)."""
    cdef double cx
    if is_number(x):
        cx = number(x)
        return record(op, None, y, cx)
    return NotImplemented


cdef inline object unop(op_t op, Var x):
    return record(op, x, None, 0.0)


cdef inline bint swept(Var v):
    return v.tape is not None and v.tape.consumed


cdef object compare(op_t op, Var x, object y, bint reflected):
    """A comparison: records a guard row (for replays) and returns a bool.
    A value of a graph that backward() swept and released is a number now
    (`if loss < best` after loss.backward() is no error): against a live
    value it is that value's constant, so the guard is still recorded on
    the live side; two such values compare with no row."""
    cdef double cx, cy
    if type(y) is Var and swept(<Var>y):
        y = (<Var>y).val
    if swept(x):
        cx = x.val
        if type(y) is Var:  # live: guard it against the number x holds
            r = binop(op, <Var>y, cx) if reflected else rbinop(op, <Var>y, cx)
            return (<Var>r).val != 0.0
        if not is_number(y):
            return NotImplemented
        cy = number(y)
        return (op_value(op, cy, cx) if reflected else op_value(op, cx, cy)) != 0.0
    r = rbinop(op, x, y) if reflected else binop(op, x, y)
    if r is NotImplemented:
        return r
    return (<Var>r).val != 0.0


cdef int pin(Var x, bint a_float=False) except -1:
    """float(x) or int(x) while compile records: the number leaves the tape,
    and whatever Python does with it (math.floor, np.floor on an object
    array, an `if` on it, a NumPy constant) is frozen into the recording. So
    pin it: record a guard that holds exactly while x keeps this value
    (x == v, and the sign of a zero; or x != x for a nan), and a replay
    where x has another value re-records or raises BranchChanged instead of
    reusing the number. Only in compile's recordings (`pinning`), for a
    value of one (unpinned_recording), once each: float(v) in a loop must not grow
    the tape. `.value` is the unguarded way out, and f"{x:.3f}" reads no number.
    a_float: float(x), counted on the recording (compile.record reads it)."""
    cdef _ThreadState st = thread_state()
    if not st.recordings:  # (outside compile: nothing to pin, as fast as can be)
        return 0
    cdef _Recording rec = unpinned_recording(x, x.tape, x.idx, a_float)
    if rec is None:
        return 0
    with recording_on(), recording_to(rec.tape):  # (inside no_grad too; on that recording)
        if x.val != x.val:
            compare(OP_NE, x, x, False)
        else:
            compare(OP_EQ, x, x.val, False)
            if x.val == 0.0:  # -0.0 == 0.0: arctan2(x, -1) is pi or -pi
                compare(OP_GT, binop(OP_ARCTAN2, x, -1.0), 0.0, False)
    return 0


cdef int refuse_numpy_cast(Var x) except -1:
    """float(x) that NumPy asks for, to store x in a float array (b[i] = x,
    np.gradient ...: fastad/_numpy_casts.py), would drop x's derivative
    without a word: a TypeError, for a value that a transform (grad,
    compile and those built on them) is differentiating now. The user's
    own float(x) stays the number, and so does a value that outlived its
    transform (kept aside, then logged)."""
    cdef Tape t = x.tape
    if t is not None:
        if t.made is None or t.consumed:  # a tape of the user's own, or one already swept
            return 0
    elif not x.made and recording_of(x, None, -1) is None:  # not an argument of grad or compile
        return 0
    try:
        frame = sys._getframe(0)  # (the caller's: the core's functions have no frames)
    except ValueError:  # no Python frame at all: called from C
        return 0
    if numpy_is_casting(frame) and differentiated_now(x, t):
        raise TypeError(CAST_REFUSED)
    return 0


cdef bint differentiated_now(Var x, Tape t) except -1:
    """Whether x's transform is still running: its tape (t, or for an
    argument leaf, the tape it was made for) is the thread's current one or
    an enclosing one. (The rare path: NumPy is taking x's number.)"""
    cdef _ThreadState st = thread_state()
    open_tapes = [st.tape] + [tape for tape, _ in st.saved]
    if t is not None:
        return any(t is tape for tape in open_tapes)
    if recording_of(x, None, -1) is not None:  # compile's (open recordings only)
        return True
    return any(leaf is x for tape in open_tapes if tape is not None for leaf in leaves_made(tape))


cdef _Recording recording_of(object h, Tape t, node_t idx):
    """The open recording of compile whose number h is: recorded on its
    tape t (at row idx), or a leaf it made for its arguments. None for any
    other value, which no argument reaches (a closed-over leaf, a leaf made
    under no_grad from pinned values): a constant. A value of another open
    tape that reads an argument (a `with fad.Tape()` block inside f) cannot
    be guarded: an error."""
    cdef _ThreadState st = thread_state()
    cdef _Recording rec
    if not st.recordings:  # (outside compile: float(v) pins nothing)
        return None
    for rec in reversed(st.recordings):
        if t is rec.tape or (t is None and id(h) in rec.arguments()):
            return rec
    if t is not None and not t.consumed and reads_arguments(t, idx, st.recordings):
        raise FastADError(PINNED_ELSEWHERE)
    return None


cdef _Recording unpinned_recording(object h, Tape t, node_t idx, bint a_float=False):
    """recording_of(h), where h is not pinned yet (then marked pinned):
    each value is pinned once, however often Python takes its number.
    a_float: float(h) takes it, which the recording counts (floats)."""
    cdef _Recording rec = recording_of(h, t, idx)
    if rec is None:
        return None
    if a_float:
        rec.floats += 1
    key = id(h) if t is None else idx
    if key in rec.pinned:
        return None
    rec.pinned.add(key)
    return rec


cdef bint an_argument(object leaf) except -1:
    """Whether a leaf is one an open recording of compile made for its
    arguments."""
    cdef _Recording rec
    for rec in thread_state().recordings:
        if id(leaf) in rec.arguments():
            return True
    return False


cdef bint reads_arguments(Tape t, node_t out, list recordings) except -1:
    """Whether row `out` of t depends on a leaf an open recording of compile
    made for its arguments (a walk back over t's rows: the rare case)."""
    cdef _Recording rec
    cdef set ids = set()
    for rec in recordings:
        ids |= rec.arguments()
    leaf_of = {t.in_rows[k]: t.leaves[k] for k in range(len(t.leaves))}
    cdef bytearray reached = bytearray(out + 1)
    cdef node_t i
    reached[out] = 1
    for i in range(out, -1, -1):
        if not reached[i]:
            continue
        if i in leaf_of and id(leaf_of[i]) in ids:
            return True
        for r in t.arg_rows(i):
            reached[r] = 1
    return False


PINNED_ELSEWHERE = ("the function takes a number out of a value that reads its argument on another "
                    "tape (a `with fad.Tape()` block inside it): float(), int() or an op under no_grad "
                    "there; a compiled replay could not tell when that number changes, so compile, "
                    "jacobian, hessian, jvp and vjp refuse it (fad.grad takes it)")


cdef class recording_to:
    """Ops in this block record on `tape` (a recording of compile, for its
    guards), whichever tape is current."""
    cdef _ThreadState st
    cdef Tape tape, before
    cdef bint implicit

    def __cinit__(self, Tape tape):
        self.tape = tape

    def __enter__(self):
        self.st = thread_state()
        self.before, self.implicit = self.st.tape, self.st.implicit
        self.st.tape, self.st.implicit = self.tape, False

    def __exit__(self, *exc):
        self.st.tape, self.st.implicit = self.before, self.implicit
        return False


cdef int leave_graph(tuple handles) except -1:
    """An op under no_grad reads these Vars and Arrays while compile
    records: its value is a new leaf, numbers taken out of the recording as
    float(x) takes one, and nothing in the trace would recompute them. So
    pin what it reads, as float() does (pin_array for an Array): a replay
    where any of it has another value re-records instead of reusing them."""
    for h in handles:
        if type(h) is Var:
            pin(<Var>h)
        elif type(h) is Array:
            pin_array(<Array>h)
    return 0


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

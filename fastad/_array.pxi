# Part of fastad/_core.pyx (included there).
# Array: the ndarray handle, array rows and element rows.

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
    if any(np.isnan(np.asarray(v, np.float64)).any() for v in inputs) or constants_have_nan(aux):
        return 0  # nan in, nan out: reported where it was first made
    raise NanError(f"fastad: op '{array_op_name(op, c)}' made nan from inputs with no nan")


cdef bint constants_have_nan(aux) except -1:
    """Whether an array row's constant operands (in its aux: numbers and
    arrays, or lists of them for concatenate and stack) hold a nan."""
    if type(aux) is not tuple:
        return False
    for v in aux:
        for e in (v if type(v) is list else [v]):
            if isinstance(e, (float, np.ndarray)) and np.isnan(np.asarray(e, np.float64)).any():
                return True
    return False


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
    if _debug_nans:  # (inside no_grad too, as for a Var's op)
        array_nan_check(op, args, value, c, aux)
    if _no_grad_threads and thread_state().no_grad:
        if thread_state().recordings:
            leave_graph(args)
        return new_array_leaf(value) if is_array else new_leaf(value)
    cdef Tape t = tape_of(args)
    cdef node_t a = -1, b = -1, i
    if _ops_table.OPS[op].arity == -1:
        aux = ([row_of(t, h) for h in args], aux)
    else:
        if len(args) > 0:
            a = row_of(t, args[0])
        if len(args) > 1:
            b = row_of(t, args[1])
    i = t.push(op, a, b, NAN if is_array else <double>value, c)
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
        if thread_state().recordings:  # the element leaves the recording (leave_graph)
            pin_element(x, k)
        return new_leaf(v)
    cdef Tape t = usable_tape(x.tape)
    cdef node_t row = x.idx if x.tape is not None else t.array_input_row(x)
    cdef node_t i = t.push(OP_ELEM, row, -1, v, <double>k)
    t.has_arrays = True
    return new_node(t, i, v)


cdef int refuse_masked(object v, str taker) except -1:
    """A masked array would lose its mask (fastad reads every number,
    masked or not): a TypeError, as fastad/_tree.py's for arguments."""
    if type(v) is not np.ndarray and isinstance(v, np.ma.MaskedArray):
        raise TypeError(f"{taker} takes no masked array: it would read the masked numbers too; "
                        "pass .filled(value) or .compressed()")
    return 0


cdef int pin_array(Array x) except -1:
    """pin (fastad/_record.pxi) for an Array: guards that every element
    keeps its value (x == value; and x != x, true exactly at the nans, where
    x == value is false whatever comes; and the sign of its zeros)."""
    cdef _Recording rec = unpinned_recording(x, x.tape, x.idx)
    if rec is None:
        return 0
    with recording_on(), recording_to(rec.tape):
        front().compare(OP_EQ, x, x.value)
        if np.isnan(x.value).any():
            front().compare(OP_NE, x, x)
        if (x.value == 0.0).any():
            front().compare(OP_GT, array_binary(OP_ARCTAN2, x, -1.0), 0.0)
    return 0


cdef int pin_element(Array x, Py_ssize_t k) except -1:
    """pin for element k of x, read under no_grad: the element read
    recorded on x's recording, and pinned."""
    cdef _Recording rec = recording_of(x, x.tape, x.idx)
    if rec is None:
        return 0
    with recording_on(), recording_to(rec.tape):
        pin(<Var>record_elem(x, k))
    return 0


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
        refuse_masked(value, "fad.Array()")
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
        if g is None:  # zeroed without an array of zeros: the next sweep's gradient is taken as it is
            self.grad_ = None
            return
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
            try:
                k = key
            except OverflowError:  # past any C index: out of bounds, as NumPy says
                raise IndexError(f"index {key} is out of bounds for an array of length {n}") from None
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
        # through a comparison, so that a compiled replay where it flips re-records
        return bool(front().compare(OP_NE, self, 0.0))

    def __array__(self, dtype=None, copy=None):
        # DropsDerivatives: the numbers were asked for (np.asarray(x, dtype=float)),
        # which compile's recording with one Var per number would do silently
        why = DropsDerivatives if dtype is not None and np.dtype(dtype).kind in "fciub" else TypeError
        raise why("a tracked fad.Array cannot be turned into a plain ndarray (that would drop its "
                  "derivatives); use .value for the numbers")

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
        return (_array_leaf, (np.array(self.value), None if self.grad_ is None else np.array(self.grad_)))

    def __copy__(self):  # as a Var's (fastad/_var.pxi)
        if self.tape is not None or self.made or an_argument(self):
            return self
        make, args = self.__reduce__()  # a new leaf, as a pickle's round trip gives
        return make(*args)

    def __deepcopy__(self, memo):
        return self.__copy__()

    # -- operators: NumPy semantics, recorded --

    def __add__(self, other): return array_binary(OP_ADD, self, other)
    def __radd__(self, other): return array_binary(OP_ADD, other, self)
    def __sub__(self, other): return array_binary(OP_SUB, self, other)
    def __rsub__(self, other): return array_binary(OP_SUB, other, self)
    def __mul__(self, other): return array_binary(OP_MUL, self, other)
    def __rmul__(self, other): return array_binary(OP_MUL, other, self)
    def __truediv__(self, other): return array_binary(OP_DIV, self, other)
    def __rtruediv__(self, other): return array_binary(OP_DIV, other, self)
    def __pow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        if is_plain_number(other) and other == 2:
            return array_unary(OP_SQUARE, self)  # x ** 2 is square, as in front().power
        r = map_record(OP_POWER, self, other, True)
        return r if r is not None else front().power(self, other)
    def __rpow__(self, other, mod):
        if mod is not None:
            return NotImplemented
        r = map_record(OP_POWER, other, self, True)
        return r if r is not None else front().power(other, self)
    def __matmul__(self, other): return front().matmul(self, other)
    def __rmatmul__(self, other): return front().matmul(other, self)
    def __neg__(self): return array_unary(OP_NEG, self)
    def __pos__(self): return self
    def __abs__(self): return array_unary(OP_ABS, self)
    def __lt__(self, other): return front().compare(OP_LT, self, other)
    def __le__(self, other): return front().compare(OP_LE, self, other)
    def __gt__(self, other): return front().compare(OP_GT, self, other)
    def __ge__(self, other): return front().compare(OP_GE, self, other)
    def __eq__(self, other): return front().compare(OP_EQ, self, other)
    def __ne__(self, other): return front().compare(OP_NE, self, other)

    def __hash__(self):
        return id(self) >> 4

    # -- methods, as on ndarray --

    def sum(self, axis=None, keepdims=False): return front().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return front().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return front().amax(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return front().amin(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return front().prod(self, axis, keepdims)
    def reshape(self, *shape, order="C"): return front().reshape(self, shape[0] if len(shape) == 1 else shape, order)
    def transpose(self, *axes): return front().transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def swapaxes(self, a1, a2): return front().swapaxes(self, a1, a2)
    def squeeze(self, axis=None): return front().squeeze(self, axis)
    def ravel(self, order="C"): return front().reshape(self, (-1,), order)
    def flatten(self): return front().reshape(self, (-1,))
    def dot(self, other): return front().dot(self, other)
    def clip(self, lo=None, hi=None, **kw): return front()._fn_clip(self, lo, hi, **kw)

    def item(self):
        """The single element of a one-element array, as a recorded scalar."""
        if self.value.size != 1:
            raise ValueError(f"item() needs a one-element array, this one has shape {self.value.shape}")
        return elem(self, 0)

# Part of fastad/_core.pyx (included there).
# Var: the scalar handle, its operators and its fast constructor.

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
        self.val = number(value)

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
        self.val = number(v)
        self.serial = LEFT if self.made else 0  # its INPUT rows hold the old value

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
        self.grad_ = number(g)

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
        cdef double s = number(seed)  # (10**400: a ValueError, as everywhere)
        if t is None:
            self.grad_ += s
            return
        if t.consumed:
            raise FastADError(SWEPT_TWICE)
        t.sweep(self.idx, s, True)
        if not retain_graph:
            consume(t)

    def __float__(self):
        refuse_numpy_cast(self)
        pin(self, True)
        return self.val

    def item(self):
        """The scalar itself (so code written for 0-d arrays works on a Var)."""
        return self

    def __int__(self):
        pin(self)
        return int(self.val)

    # round(v), math.trunc / floor / ceil(v): numbers, as for a float;
    # pinned as float(v) is. (Their own methods, not float(v): NumPy's
    # object loops call them for np.floor / np.ceil, where the derivative
    # is 0 and nothing is lost: fastad/_numpy_casts.py.)
    def __round__(self, ndigits=None):
        pin(self)
        return round(self.val, ndigits)

    def __trunc__(self):
        pin(self)
        return int(self.val)

    def __floor__(self):
        pin(self)
        return math.floor(self.val)

    def __ceil__(self):
        pin(self)
        return math.ceil(self.val)

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

    # copy.copy and copy.deepcopy: a recorded value never changes, so its
    # copy is itself and stays on the graph; so is the copy of a function's
    # argument inside grad, compile and the transforms (whose elements are
    # recorded values, or leaves, depending on the transform: the same
    # gradient either way). A user's leaf's copy is a new leaf, a snapshot
    # of a parameter (as in PyTorch).
    def __copy__(self):
        if self.tape is not None or self.made or an_argument(self):
            return self
        make, args = self.__reduce__()  # a new leaf, as a pickle's round trip gives
        return make(*args)

    def __deepcopy__(self, memo):
        return self.__copy__()

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
    def arctan2(self, x): return binary(OP_ARCTAN2, self, x)  # np.arctan2(ys, xs): ys[i].arctan2(xs[i])
    def hypot(self, y): return binary(OP_HYPOT, self, y)

    # NumPy's reductions of a scalar: np.sum(v), np.mean(v) ... call these
    # (a 1-D a @ b is a Var, and code written for arrays sums it); each is v.
    def sum(self, axis=None, dtype=None, out=None, **kwargs):
        return scalar_reduction(self, "sum", axis, out, dict(kwargs, dtype=dtype))

    def mean(self, axis=None, dtype=None, out=None, **kwargs):
        return scalar_reduction(self, "mean", axis, out, dict(kwargs, dtype=dtype))

    def prod(self, axis=None, dtype=None, out=None, **kwargs):
        return scalar_reduction(self, "prod", axis, out, dict(kwargs, dtype=dtype))

    def max(self, axis=None, out=None, **kwargs):
        return scalar_reduction(self, "max", axis, out, kwargs)

    def min(self, axis=None, out=None, **kwargs):
        return scalar_reduction(self, "min", axis, out, kwargs)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _UFUNCS.get(ufunc)
        if fn is None or method != "__call__" or kwargs:
            return NotImplemented
        if any(type(v) is Array for v in inputs):  # np.maximum(v, a): the Array's rule
            return front().array_ufunc(ufunc, method, inputs, kwargs)
        # a 0-d array is its one element (a Var in an object array stays a Var); a
        # list or tuple an array, as NumPy reads it
        cdef list args = list(inputs)
        cdef Py_ssize_t k
        cdef bint numbers_only = True
        for k in range(len(args)):
            v = args[k]
            if type(v) is Var or type(v) is float:
                continue
            if isinstance(v, np.ndarray) and v.ndim == 0:
                args[k] = v = v[()]
            elif type(v) is list or type(v) is tuple:
                args[k] = v = np.asarray(v)
            if not (type(v) is Var or is_number(v) or type(v) is np.bool_):
                numbers_only = False
        inputs = tuple(args)
        if any(isinstance(v, np.ndarray) and v.ndim and v.dtype != object for v in inputs):
            if front()._scalarized.active():  # compile's twin: one scalar row per element
                return front()._scalarized.elementwise(fn, inputs)
            return front().array_ufunc(ufunc, method, inputs, kwargs)  # Var with a float array: an Array
        if any(isinstance(v, np.ndarray) and v.ndim for v in inputs):
            # An ndarray with Vars in it: NumPy's object-array semantics, element by element
            # (each Var wrapped in a 0-d object array, so NumPy does not ask us again).
            return np.frompyfunc(fn, len(inputs), 1)(*[_object_scalar(v) for v in inputs])
        if not numbers_only:
            return NotImplemented  # a str, None ...: NumPy's TypeError
        # (a NumPy scalar as a float: np.float64 * Var would ask this method again)
        return fn(*[v if type(v) is Var else number(v) for v in inputs])


cdef object scalar_reduction(Var v, str name, object axis, object out, dict kwargs):
    """A reduction of the one-number array a Var stands for: v itself (a
    scalar has no axis but None or (); out=, where= ... are refused as for
    an Array, by fastad.array._plain)."""
    if axis is not None and axis != ():
        raise ValueError(f"{name} of a scalar Var takes no axis, got axis={axis!r}")
    kwargs.pop("keepdims", None)  # a scalar either way
    front()._plain(name, out, **kwargs)
    return v


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
    """Var(value) without type_call's argument tuple and __init__ lookup
    (about 15 ns of a leaf's 35, measured through `list(map(Var, xs))`).
    Any other call form takes the ordinary route, with the same checks."""
    cdef Var r
    cdef Py_ssize_t n = PyVectorcall_NARGS(nargsf)
    if kwnames == NULL and n == 1:
        value = <object>args[0]
        if type(value) is float or (type(value) is not Var and is_number(value)):
            r = Var.__new__(Var)
            r.val = number(value)
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


def _array_leaf(value, grad):
    """An unpickled Array leaf, with its gradient (None: never swept)."""
    a = Array(value)
    a.grad_ = grad
    return a

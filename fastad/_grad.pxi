# Part of fastad/_core.pyx (included there).
# grad()'s hot path for flat float arguments.

# ==== grad's hot path ========================================================

cdef object leaves_of(object arg):
    """Leaves for an argument that is a number, a flat list / tuple of
    numbers, a real ndarray or a dict of numbers and real ndarrays (a
    model's parameters): the common cases, made here without the tree walk
    (for a list, without Python per element); None for anything else (the
    general tree code in fastad/_tree.py, which also says what is wrong)."""
    cdef Py_ssize_t i, n
    if type(arg) is float or type(arg) is int:
        return made_leaf(number(arg))
    if type(arg) is np.ndarray:
        return array_leaf(arg) if arg.dtype.kind in "fiu" else None
    if type(arg) is dict:
        out = {}
        for k, v in arg.items():
            if type(v) is float or type(v) is int:
                out[k] = made_leaf(number(v))
            elif type(v) is np.ndarray and v.dtype.kind in "fiu":
                out[k] = array_leaf(v)
            else:
                return None
        return out
    if type(arg) is list or type(arg) is tuple:
        n = len(arg)
        out = [None] * n
        for i in range(n):
            v = arg[i]
            if type(v) is not float and type(v) is not int:
                return None
            out[i] = made_leaf(number(v))
        return out if type(arg) is list else tuple(out)
    return None


cdef inline Var made_leaf(double v):
    cdef Var r = new_leaf(v)
    r.made = True
    return r


def argument_leaf(v):
    """A leaf of grad's for one number or array of f's argument: a Var, or
    an Array (array_leaf)."""
    return array_leaf(v) if isinstance(v, np.ndarray) else made_leaf(number(v))


cdef Array array_leaf(v):
    """grad's leaf for an ndarray argument: a read-only view of the caller's
    array when it is C-contiguous float64 (grad reads it only while it runs,
    and hands the Array to f alone), else a float64 copy, as fad.Array()
    makes. A copied 784x256 weight matrix cost its memcpy and, on a VM, the
    first touch of 1.6 MB of fresh pages: up to 2 ms a step, more than the
    products it feeds."""
    cdef Array a
    if is_doubles(v):
        view = (<cnp.ndarray>v).view()
        cnp.PyArray_CLEARFLAGS(view, cnp.NPY_ARRAY_WRITEABLE)
        a = Array.__new__(Array)
        a.value = view
    else:
        a = Array(v)
    a.made = True
    return a


cdef object grads_of(object leaves, Tape t, object out):
    """The adjoints of these leaves' INPUT rows on t (0 for unused leaves),
    in leaves_of's structure; `out` is f's output."""
    cdef Py_ssize_t i, n
    if type(leaves) is Var or type(leaves) is Array:
        return adjoint_of(leaves, t, out)
    if type(leaves) is dict:
        return {k: adjoint_of(v, t, out) for k, v in leaves.items()}
    n = len(leaves)
    grads = [None] * n
    for i in range(n):
        grads[i] = leaf_adjoint(<Var>leaves[i], t, out)
    return grads if type(leaves) is list else tuple(grads)


cdef inline object adjoint_of(object leaf, Tape t, object out):
    """A Var or Array leaf's adjoint on t after sweep_for."""
    return leaf_adjoint(<Var>leaf, t, out) if type(leaf) is Var else array_leaf_adjoint(<Array>leaf, t)


# A leaf of grad's has one INPUT row on grad's tape, whose row it keeps
# (idx), unless f also used it on another tape (a `with fad.Tape()` block,
# fad.explain, a thread): then the leaf keeps its row there, and coming
# back it gets a second row here (rejoins counts those). Its adjoint on
# grad's tape is then the sum over its rows, as backward() would deposit.

cdef inline double leaf_adjoint(Var leaf, Tape t, object out):
    if t is None:
        return 1.0 if leaf is out else 0.0  # f returned the leaf itself, or a constant
    if t.rejoins == 0 and (leaf.serial == t.serial or leaf.serial == 0):
        return t.adj[leaf.idx] if leaf.serial == t.serial and leaf.idx < t.adj_n else 0.0
    return input_sums(t).get(id(leaf), 0.0)  # on another tape since


cdef dict input_sums(Tape t):
    """id(leaf) -> the sum of its INPUT rows' adjoints on t (in row order,
    as backward() adds them), made once per sweep."""
    cdef Py_ssize_t k
    cdef node_t r
    if t.input_sums is None:
        sums = {}
        for k in range(len(t.leaves)):
            leaf, r = t.leaves[k], t.in_rows[k]
            if type(leaf) is Var:
                if r < t.adj_n:
                    sums[id(leaf)] = sums.get(id(leaf), 0.0) + t.adj[r]
            elif t.arr_adj is not None and r in t.arr_adj:
                g = sums.get(id(leaf))
                sums[id(leaf)] = t.arr_adj[r] if g is None else g + t.arr_adj[r]
        t.input_sums = sums
    return t.input_sums


cdef object array_leaf_adjoint(Array leaf, Tape t):
    """An Array leaf's adjoint on t after sweep_for, or zeros: the array the
    sweep made, not a copy (the next sweep makes new ones)."""
    g = None
    if t is None or t.arr_adj is None:
        pass
    elif t.rejoins == 0 and (leaf.serial == t.serial or leaf.serial == 0):
        if leaf.serial == t.serial:
            g = t.arr_adj.get(leaf.idx)
    else:
        g = input_sums(t).get(id(leaf))  # (see leaf_adjoint)
    return np.zeros(leaf.value.shape) if g is None else g


def sweep_for(Var out, Tape own):
    """Sweep from `out` without touching any leaf's grad (grad() reads the
    adjoints of its own leaves with input_adjoints); returns out's tape,
    which must be `own`, the tape grad recorded f on, or None for a leaf
    (grad's own, or an enclosing grad's: its grad is not this sweep's)."""
    cdef Tape t = out.tape
    if t is None:
        if id(out) in enclosing_leaves(own):  # f returned an enclosing grad's leaf: its derivative
            raise_nested()                    # is the outer one's, not a constant's 0
        return None
    if t.consumed:
        raise FastADError("the function returned a value from a graph that was already swept")
    if t is not own and t.made is not None:
        # f's ops joined a Var of an enclosing grad (a closure over one of its
        # intermediate values), so they went on that grad's tape
        raise_nested()
    check_nested(t)
    t.sweep(out.idx, 1.0, False)
    return t


def input_adjoints(Tape t, list leaves, out):
    """[adjoint of each leaf's INPUT row on t] after sweep_for (Var or Array
    leaves; `out` is f's output)."""
    return [adjoint_of(leaf, t, out) for leaf in leaves]


def value_and_grad_simple(f, tuple args, tuple nums, dict kwargs, str name):
    """(value, [grad per argnum]) when every differentiated argument is a
    number, a flat list / tuple of numbers, a real ndarray or a dict of
    numbers and real ndarrays; None otherwise. `name`: the transform, for
    errors."""
    cdef list call_args = list(args)
    cdef list leaves = []
    cdef dict made_for = {}  # an argnum named twice gets its gradient twice, from one set of leaves
    for k in nums:
        made = made_for.get(k)
        if made is None:
            made = leaves_of(args[k])
            if made is None:
                return None
            made_for[k] = made
            # f gets a list or dict of its own: what it does to it (append, rebind a key)
            # leaves the leaves read back here as they were made
            call_args[k] = list(made) if type(made) is list else dict(made) if type(made) is dict else made
        leaves.append(made)
    cdef _ThreadState st = thread_state()
    cdef Tape own = Tape()  # its arrays come from the last tape's (the spare slot)
    cdef Tape t = own
    cdef int no_grad = st.no_grad  # grad records, even inside no_grad (recording_on)
    st.saved.append((st.tape, st.implicit))
    st.tape = t
    st.implicit = False
    own.made = leaves  # for a grad nested in f (check_nested)
    if no_grad:
        global _no_grad_threads
        st.no_grad = 0
        _no_grad_threads -= 1
    try:
        out = f(*call_args, **kwargs)
        if type(out) is not Var:
            from fastad._tree import scalar_output
            out = scalar_output(out, name)
        t = None
        if type(out) is Var:
            value = (<Var>out).val
            t = sweep_for(out, own)
        else:
            value = out
    finally:
        st.tape, st.implicit = st.saved.pop()
        if no_grad:
            st.no_grad = no_grad
            _no_grad_threads += 1
    return value, [grads_of(made, t, out) for made in leaves]

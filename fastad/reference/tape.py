"""The tape: a Wengert list of rows, its reverse sweep, and the thread's
current tape (the one ``with Tape():`` entered, else an implicit one that
lives as long as the Vars on it)."""
import threading
import weakref

import numpy as np

from .array_rules import _ARRAY_RULES
from .scalar_math import _ARITY, _ARRAY_INPUT, _INPUT, _PARTIALS, NAN


class FastADError(Exception):
    """Misuse of a graph: a released tape, or tapes mixed in one op."""


_RELEASED = ("this graph was already swept by backward() and released; "
             "pass retain_graph=True to the first backward() to sweep it "
             "again or to keep building on it")


class Tape:
    """A Wengert list: parallel lists, one entry per row.

    ``op[i]`` is the op code (see ops.OPS), ``a[i]``/``b[i]`` the argument
    rows (-1: none, or the constant ``c[i]``), ``val[i]`` the value (a float,
    or an ndarray for an array row), ``aux[i]`` an array row's parameters
    (axis, index, constant operands: see each op's recorder), and ``adj``
    the adjoints from the last reverse sweep (None before). ``leaves`` lists
    ``(row, leaf)`` for every INPUT and ARRAY_INPUT row.
    """

    def __init__(self):
        self.op, self.a, self.b, self.c, self.val = [], [], [], [], []
        self.aux = {}           # row -> parameters of an array row
        self.has_arrays = False  # any array row (rows() then converts values)
        self.adj = None
        self.swept_from = None  # the row the last sweep started from (explain names it)
        self.leaves = []        # (row, leaf Var or Array) of every input row
        self._row_of_leaf = {}  # id(leaf) -> its input row on this tape
        self.consumed = False   # set by backward() without retain_graph
        self.made = False       # grad's own tape (its values are being differentiated)
        self._outer = []        # tapes that were current before `with self`

    def __len__(self):
        return len(self.op)

    def append(self, code, a, b, c, val):
        """Append a row and return its index."""
        self.op.append(code)
        self.a.append(a)
        self.b.append(b)
        self.c.append(c)
        self.val.append(val)
        return len(self.op) - 1

    def input_row(self, leaf):
        """The input row of ``leaf`` (a Var or an Array) on this tape,
        appended on first use."""
        row = self._row_of_leaf.get(id(leaf))
        if row is not None and self.val[row] is not leaf._value:
            row = None  # its value was set since: a new input row, as the core does
        if row is None:
            if isinstance(leaf, Array):
                self.has_arrays = True
                row = self.append(_ARRAY_INPUT, -1, -1, 0.0, leaf._value)
            else:
                row = self.append(_INPUT, -1, -1, 0.0, leaf._value)
            self._row_of_leaf[id(leaf)] = row
            self.leaves.append((row, leaf))  # also keeps id(leaf) valid
        return row

    def sweep(self, out, seed=1.0):
        """The reverse sweep from row ``out``; returns the adjoint list.

        Walking backwards, every row's readers come after it, so its
        adjoint is complete when the loop reaches it. A row whose adjoint
        is exactly zero (all zeros, for an array row) passes nothing on:
        that skips the rows the output does not reach, and makes 0 * inf
        count as 0 (CppAD's "absolute zero" product), so an infinite
        partial the output does not depend on cannot turn a gradient into
        nan. The compiled core does the same.

        The adjoint of a scalar row is a float; that of an array row is an
        ndarray of the row's shape (0.0 until something reaches it). Scalar
        rows apply their partials right here; array rows apply their rule
        from _ARRAY_RULES, which adds into their arguments' adjoints.
        """
        op, a, b, c, val = self.op, self.a, self.b, self.c, self.val
        adj = [0.0] * len(op)
        if isinstance(val[out], np.ndarray):
            adj[out] = np.array(np.broadcast_to(seed, val[out].shape), dtype=np.float64)
        else:
            adj[out] = float(seed)
        for i in range(out, -1, -1):
            partials = _PARTIALS[op[i]]
            if partials is None:  # an input, a guard, or an array row
                rule = _ARRAY_RULES[op[i]]
                if rule is not None and _reached(adj[i]):
                    rule(self, i, adj[i], adj)
                continue
            if adj[i] == 0.0:  # unreached
                continue
            ai, bi = a[i], b[i]
            x = val[ai] if ai >= 0 else c[i]
            if _ARITY[op[i]] == 1:
                adj[ai] += adj[i] * partials(x, None, val[i])
                continue
            y = val[bi] if bi >= 0 else c[i]
            dx, dy = partials(x, y, val[i])
            if ai >= 0:
                adj[ai] += adj[i] * dx
            if bi >= 0:
                adj[bi] += adj[i] * dy
        self.adj = adj
        self.swept_from = out
        return adj

    def check_usable(self):
        if self.consumed:
            raise FastADError(_RELEASED)

    # -- introspection: the same rows(), shapes() and inputs() as the core's --

    def rows(self):
        """The rows as numpy arrays (copies). An array row's value and
        adjoint do not fit a float column: they read nan there (the arrays
        themselves are ``tape.val[i]`` and ``tape.adj[i]``; ``shapes()``
        says which rows hold arrays)."""
        n = len(self.op)
        val, adj = self.val, self.adj
        if self.has_arrays:
            scalar = [not isinstance(v, np.ndarray) for v in self.val]
            val = [v if s else NAN for v, s in zip(self.val, scalar)]
            if adj is not None:
                adj = [float(g) if s else NAN for g, s in zip(adj, scalar)]
        out_adj = None
        if adj is not None:  # rows added after the sweep have adjoint 0
            out_adj = np.zeros(n, dtype=np.float64)
            out_adj[:len(adj)] = adj
        return {
            "op": np.array(self.op, dtype=np.uint8),
            "a": np.array(self.a, dtype=np.int32),
            "b": np.array(self.b, dtype=np.int32),
            "c": np.array(self.c, dtype=np.float64),
            "val": np.array(val, dtype=np.float64),
            "adj": out_adj,
        }

    def shapes(self):
        """Per row: None where its value is a number, the shape of its array
        value where it is one."""
        return [v.shape if isinstance(v, np.ndarray) else None for v in self.val]

    def inputs(self):
        """``(row, leaf)`` for every input row, in row order."""
        return list(self.leaves)

    def watch(self, *leaves):
        """Give these leaves (Vars or Arrays) their input rows now, in this
        order, instead of at first use: traces then list inputs first."""
        for leaf in leaves:
            if not isinstance(leaf, (Var, Array)) or leaf._tape is not None:
                raise TypeError(f"watch() takes leaf Vars and Arrays, got {leaf!r}")
            self.check_usable()
            self.input_row(leaf)

    def explain(self, fmt="text", output=None):
        """The evaluation trace; the gradient of `output`, by default of the
        row the last sweep started from (else the last row)."""
        from ..explain import explain_tape
        return explain_tape(self, fmt, output=self.swept_from if output is None else output)

    # -- `with Tape() as t:` makes t the thread's current tape -------------

    def __enter__(self):
        stack = _current_stack()
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _current_stack().pop()
        return False

    def __repr__(self):
        state = " consumed" if self.consumed else ""
        return f"<reference.Tape with {len(self)} rows{state}>"


def _reached(g):
    """Whether an adjoint is not exactly zero (any element, for an array)."""
    if isinstance(g, np.ndarray):
        return bool(g.any())
    return g != 0.0


_local = threading.local()


def _current_stack():
    """The thread's stack of tapes entered with `with`."""
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _tape_for_leaves():
    """The tape an op whose arguments are all leaves records on.

    Inside ``with Tape()`` it is that tape. Otherwise it is the thread's
    implicit tape, held by a weak reference only, so that it goes away
    with the last Var on it. A consumed tape is replaced by a fresh one.
    """
    stack = _current_stack()
    if stack:
        if stack[-1].consumed:
            stack[-1] = Tape()
        return stack[-1]
    ref = getattr(_local, "implicit", None)
    tape = ref() if ref is not None else None
    if tape is None or tape.consumed:
        tape = Tape()
        _local.implicit = weakref.ref(tape)
    return tape


# Built on this module, imported once its names exist (see the package
# docstring): the tape tells a Var leaf from an Array leaf.
from .var import Var  # noqa: E402
from .array import Array  # noqa: E402

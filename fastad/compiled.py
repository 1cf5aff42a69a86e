"""Trace once, replay in C: fad.compile.

`compile(f, *example_args)` records f once on a tape and freezes the rows
into a Trace (fastad/_replay.pyx). Every later call writes the new inputs
into the INPUT rows and runs the sweeps in C: no Python per op. A recording
with array rows (NumPy code on ndarray arguments) freezes into an
ArrayTrace (fastad/_array_replay.pxi) instead, which replays each array row
by NumPy once and the scalar rows between them in C.

A recording is only valid for inputs that take the same branches. Every
comparison on a Var and every kink (abs, relu, maximum, ...) remembers the
piece it fell on; a replay that lands on another piece re-records
(on_branch_change="retrace", keeping the last few traces) or raises
BranchChanged ("raise"). float(v) and int(v) pin v's value the same way
while compile records (fastad._core's pin, `pinning`): the number they hand
Python becomes a constant of the recording, valid only while v keeps that
value. `.value` is the unguarded way out: Python code that reads it and
branches on it escapes the tape.

A recording is also only valid for the shapes it was made at. Arguments of
the same structure at other shapes (an ndarray of another shape, a 0-d
array for a float: _tree.shapeless) are recorded again, into a compiled
function of their own that the first keeps (`shapes`, the last few), as
jax.jit traces again for a new shape. Only a call that misses the recorded
shapes pays for that look-up: `_inputs` raises _Reshaped there.
"""
import concurrent.futures
import functools
import os
import threading

import numpy as np

from fastad import _scalarized, _static, _tree
from fastad import ops as _ops
from fastad._core import (Array, ArrayTrace, DropsDerivatives, FastADError, Tape, Var, array_trace,
                          check_own_leaves, debug_nans_listeners, pinning, recording_on)
from fastad._replay import BranchChanged, RecycledLists, RowQueue, Trace, live_rows, pack_numbers
from fastad.functional import _Argnums


def _array_work(rows):
    """Whether recorded rows (tape.rows()) hold array rows beyond reading
    the arguments' elements."""
    op = rows["op"]
    return bool(np.any((op >= _ops.FIRST_ARRAY_OP) & (op != _ELEM) & (op != _ARRAY_INPUT)))


_ELEM, _ARRAY_INPUT, _INPUT = (_ops.BY_NAME[name].code for name in ("elem", "array_input", "input"))


def _record_arrays(f, treedef, x):
    """f recorded with its ndarray arguments as Arrays: (ArrayTrace, output
    treedef); None if it only reads their elements (a scalar recording
    serves it better); the exception f raised, if it raised."""
    defs = _leaf_defs(treedef)
    starts = np.cumsum([0] + [_tree.size(td) for td in defs])
    made = iter(Var(float(x[s])) if td == "f" else Array(x[s:s + _tree.size(td)].reshape(td[1]))
                for td, s in zip(defs, starts))
    leaves = []

    def leaf(td):
        leaves.append(next(made))
        return leaves[-1]

    try:
        with Tape() as tape, recording_on(), pinning():
            tape.made = leaves  # for a grad nested in f (check_own_leaves)
            out = f(*_tree.rebuild(treedef, leaf))
            check_own_leaves(tape)
            outs, out_treedef = _output_parts(tape, out)
    except Exception as e:
        return e
    rows = tape.rows()
    if _array_work(rows):
        return _array_trace(tape, rows, leaves, starts, outs), out_treedef
    return None


def _constant_elements(rows):
    """A recording with one Var per number has Arrays only where f closes
    over one (a constant): its elements read there (C[1] * x) become
    constant rows holding them, so the trace stays a scalar one."""
    op, a = rows["op"], rows["a"]
    elem = np.flatnonzero(op == _ELEM)
    reads = elem[op[a[elem]] == _ARRAY_INPUT]
    if len(reads):
        rows = dict(rows, op=op.copy(), a=a.copy(), b=rows["b"].copy())
        rows["op"][reads] = _INPUT  # (its value is in val already)
        rows["a"][reads] = rows["b"][reads] = -1
    return rows


def record(f, treedef, x, scalarize=False, find_loops=True):
    """Run f once at the flat inputs x; return (trace, output treedef).
    find_loops: whether a scalar Trace looks for its loops (fastad/loops.py:
    worth it for a trace replayed many times, not for one call).

    ndarray arguments arrive as Arrays, so NumPy code records array rows and
    replays as an ArrayTrace: each array row by NumPy once, scalar rows in C.
    A function that only reads its arrays' elements (or scalarize=True) is
    recorded again with one Var per number instead: a Trace, whose sweeps
    run entirely in C without the GIL, and which forward mode, second
    order and grad_batch need."""
    has_arrays = any(td != "f" for td in _leaf_defs(treedef))
    array_error = None
    if has_arrays and not scalarize:
        recorded = _record_arrays(f, treedef, x)
        if isinstance(recorded, Exception):  # NumPy that fad.Array lacks (x.tolist(), np.linalg ...):
            array_error = recorded           # one Var per number may do
        elif recorded is not None:
            return recorded
    leaves = [Var(v) for v in x]
    try:
        with Tape() as tape, recording_on(), pinning() as pins, _scalarized.recording(scalarize):
            tape.made = leaves
            out = f(*_scalarized.scalarized(treedef, leaves))
            check_own_leaves(tape)
            outs, out_treedef = _output_parts(tape, out)
    except Exception:
        if array_error is not None:  # fails either way: the error fad.grad gives, on Arrays
            raise array_error from None
        raise
    if has_arrays and pins.floats:
        # float() took numbers out of the arguments: by the user's own hand
        # (a constant to the derivative), or NumPy's, turning an argument into
        # a float ndarray (np.asarray(x, dtype=float)), which on one Var per
        # number it does without a word: a gradient of zeros. On Arrays that
        # is fad.grad's error (the array recording runs again only for this).
        if array_error is None and scalarize:
            array_error = _record_arrays(f, treedef, x)
        if isinstance(array_error, DropsDerivatives):
            raise array_error
    rows = _constant_elements(tape.rows())
    if _array_work(rows):
        if scalarize:
            raise TypeError("forward mode and second order replay scalar recordings; this function "
                            "builds fastad Arrays of its numbers (fad.Array(...) * x ...): use "
                            "fad.grad, fad.jacobian(mode='rev') or fad.vjp, which record arrays")
        return _array_trace(tape, rows, leaves, range(len(leaves)), outs), out_treedef
    at = _input_rows(tape, leaves)
    in_rows = np.array([at.get(id(leaf), -1) for leaf in leaves], np.int32)
    out_rows = np.array([row for row, _, _ in outs], np.int32)
    out_const = np.array([0.0 if row >= 0 else const for row, _, const in outs])
    rows, in_rows, out_rows = _live_only(rows, in_rows, out_rows)
    trace = Trace(rows["op"], rows["a"], rows["b"], rows["c"], rows["val"], in_rows, out_rows, out_const,
                  find_loops=find_loops)
    return trace, out_treedef


def _leaf_defs(treedef):
    """The treedefs of the numbers and arrays of treedef, in order."""
    found = []
    _tree.rebuild(treedef, found.append)
    return found


def _output_parts(tape, out):
    """(parts, treedef) of f's output, inside its recording: parts as (row,
    shape or None, constant) per number or Array, row -1 for a constant
    (a number, or a value from outside f); an input returned as it is gets
    a row (x * 1.0). An output on another tape that reads f's arguments:
    f combined them with a value recorded there (_RECORDED_OUTSIDE)."""
    parts, treedef = _tree.flatten(out, "the output", var_type=Var, array_type=Array)
    ours, others = {id(leaf) for leaf in tape.made}, set()
    for p in parts:  # on another tape (with a value recorded outside f) and reading f's argument
        for v in ([p] if type(p) is Array else _tree.items([p])):
            other = getattr(v, "tape", None)
            if other is not None and other is not tape and id(other) not in others:
                others.add(id(other))  # (each other tape's inputs read once)
                if any(id(leaf) in ours for _, leaf in other.inputs()):
                    raise FastADError(_RECORDED_OUTSIDE)
    outs = []
    for p in parts:
        if type(p) is Array:
            if p.tape is None:
                p = p * 1.0
            outs.append((p.index, p.shape, None) if p.tape is tape else (-1, p.shape, p.value))
            continue
        for v in _tree.items([p]):
            if type(v) is Var and v.tape is None:
                v = v * 1.0
            outs.append((v.index, None, 0.0) if type(v) is Var and v.tape is tape else (-1, None, float(v)))
    return outs, treedef


_ANOTHER_TAPE = ("the function used its argument on another tape as well (a `with fad.Tape()` block, "
                 "a value recorded before the call, fad.explain, a thread) while it was recorded to "
                 "be replayed (compile, jacobian, hessian, jvp, vjp); fad.grad and value_and_grad "
                 "take that, a replay cannot")


# f read a Var or Array recorded outside it (y = x * x before the call): an
# op on it goes on y's tape, so f's work is not on the recording's.
_RECORDED_OUTSIDE = ("the function combines its argument with a value recorded on another tape (a Var "
                     "or Array computed before the call, or in a `with fad.Tape()` block inside the "
                     "function), which puts its operations on that tape: fad.grad takes that, but a "
                     "recording to be replayed (compile, jacobian, hessian, jvp, vjp) holds the "
                     "function's own operations only; pass a value from outside as an argument (to vary "
                     "or differentiate it), or use its .value (a constant)")


def _input_rows(tape, leaves):
    """{id(leaf): its INPUT row} for the leaves compile made. A leaf f also
    used on another tape (a `with fad.Tape()` block, fad.explain) comes
    back with a second row, which a trace's one row per input cannot say."""
    ours = {id(leaf) for leaf in leaves}
    at = {}
    for row, leaf in tape.inputs():
        if id(leaf) in ours:
            if id(leaf) in at:
                raise FastADError(_ANOTHER_TAPE)
            at[id(leaf)] = row
    return at


def _array_trace(tape, rows, leaves, starts, outs):
    """array_trace of a recording, its leaves located by their INPUT rows."""
    at = _input_rows(tape, leaves)
    table = [(at.get(id(leaf), -1), int(s), None if type(leaf) is Var else leaf.shape)
             for leaf, s in zip(leaves, starts)]
    return array_trace(tape, rows, table, outs)


_GUARD_CODES = np.array([s.code for s in _ops.OPS if s.kind == "guard"], np.uint8)


def _live_only(rows, in_rows, out_rows):
    """Drop the rows that neither an output nor a guard depends on (dead
    code: CasADi's SX functions drop it too) and renumber the rest. A guard
    (a comparison whose bool steered Python) stays, so a replay still
    checks its branch; a kink nothing reads does not change the outputs."""
    roots = np.concatenate([out_rows[out_rows >= 0], np.flatnonzero(np.isin(rows["op"], _GUARD_CODES))])
    live = live_rows(rows["op"], rows["a"], rows["b"], roots)
    if live.all():
        return rows, in_rows, out_rows
    new_index = np.cumsum(live, dtype=np.int64).astype(np.int32) - 1

    def renumber(idx):  # old row numbers -> new ones; -1 stays -1
        return np.where(idx >= 0, new_index[np.maximum(idx, 0)], -1).astype(np.int32)

    kept = {k: v[live] for k, v in rows.items() if v is not None}
    kept["a"], kept["b"] = renumber(kept["a"]), renumber(kept["b"])
    in_rows = np.where((in_rows >= 0) & live[np.maximum(in_rows, 0)], renumber(in_rows), -1).astype(np.int32)
    return kept, in_rows, renumber(out_rows)


def _pack_layout(treedef):
    """pack_numbers' layout entry for an argument of this structure, None
    for one it does not pack (nested, or a dict)."""
    if treedef == "f":
        return ("f", 1, None)
    if treedef[0] == "a":
        return ("a", _tree.size(treedef), treedef[1])
    if _is_flat(treedef):
        return (treedef[0], len(treedef[1]), None)
    return None


def _array_shape(v):
    """np.shape(v), or None for a ragged or non-numeric structure."""
    try:
        a = np.asarray(v)
    except ValueError:  # ragged
        return None
    return a.shape if a.dtype.kind in "fiu" else None


def _nested_shape(treedef):
    """The array shape of nested lists / tuples of numbers, as np.shape
    reads them; None where they are ragged or hold dicts."""
    if treedef == "f":
        return ()
    if treedef[0] == "a":
        return tuple(treedef[1])
    if treedef[0] is dict:
        return None
    kids = {_nested_shape(kid) for kid in treedef[1]}
    if len(kids) != 1 or None in kids:
        return None if kids else (0,)
    return (len(treedef[1]),) + kids.pop()


def _is_flat(treedef):
    """Whether treedef is a list or tuple of plain numbers. It walks the
    structure: ask once per compiled function (CompiledFunction._arg_flat),
    not per call (an lru_cache here hashed a 10,000-float argument's
    structure on every cf.grad: 40 us of 780)."""
    return treedef != "f" and treedef[0] in (list, tuple) and all(k == "f" for k in treedef[1])


_pool = None
_pool_lock = threading.Lock()


def _executor():
    """One shared thread pool, a worker per core beside the caller (the work
    releases the GIL). Made once at full size: its threads start only as
    work needs them, and a pool replaced by a bigger one would keep its
    idle threads."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1),
                                                          thread_name_prefix="fastad")
        return _pool


class _Reshaped(Exception):
    """_inputs' word to a method: the arguments have the recorded structure
    at other shapes, and `cf` is the compiled function recorded for them.
    The method calls cf after its except block, so that an error there does
    not come chained to this. (A try block costs the calls at the recorded
    shapes nothing: CPython's exceptions cost only when raised.)"""

    def __init__(self, cf):
        super().__init__()
        self.cf = cf


def _any_shape(method):
    """A method that, for arguments at other shapes (_inputs raises
    _Reshaped), runs on the compiled function recorded for them. (__call__,
    grad and value_and_grad, whose calls are timed one by one, catch
    _Reshaped themselves: this wrapper costs a call.)"""
    name = method.__name__

    @functools.wraps(method)
    def at_any_shape(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _Reshaped as e:
            other = e.cf
        return getattr(other, name)(*args, **kwargs)
    return at_any_shape


class CompiledFunction:
    """A function recorded once and replayed in C. Made by fad.compile."""

    def __init__(self, f, example_args, argnums=0, on_branch_change="retrace", cache_size=8,
                 scalarize=False, find_loops=True):
        if on_branch_change not in ("retrace", "raise"):
            raise ValueError(f"on_branch_change must be 'retrace' or 'raise', got {on_branch_change!r}")
        self.f = f
        self.scalarize = scalarize
        self._find_loops = find_loops  # False for one call (fastad.functional): see record
        self._twin = None
        self._batch_rows = None  # the row shapes grad_batch takes, worked out on first use
        self.on_branch_change = on_branch_change
        self.cache_size = cache_size
        parts, self.treedef = _tree.flatten(tuple(example_args), "the arguments")
        nums = _Argnums(argnums)  # the same checks as fad.grad's
        self.single = nums.single
        self.argnums = nums(len(example_args))
        sizes = [_tree.size(td) for td in self.treedef[1]]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._slices = [slice(starts[k], starts[k + 1]) for k in self.argnums]
        leaves = np.concatenate([[0], np.cumsum([len(_leaf_defs(td)) for td in self.treedef[1]])]).astype(int)
        self._leaf_slices = [slice(leaves[k], leaves[k + 1]) for k in self.argnums]  # of flatten's parts
        self._arg_treedefs = [self.treedef[1][k] for k in self.argnums]
        self._arg_flat = [_is_flat(td) for td in self._arg_treedefs]
        # grad of a function of one flat list: the gradient is the whole vector's tolist()
        self._one_list = (self.single and len(self.treedef[1]) == 1 and self._arg_flat[0]
                          and self._arg_treedefs[0][0] is list)
        numbers = _tree.numbers(parts)
        trace, self.out_treedef = record(f, self.treedef, numbers, scalarize, find_loops)
        self.traces = [trace]  # most recently used first
        # "raise" holds every replay to the example's branches: the twin (forward
        # mode, second order) is recorded there too, not where it is first needed
        self._example = numbers.copy() if on_branch_change == "raise" else None
        self._lay_out_arguments()
        self._lists = {}  # RecycledLists for _one_list's results, by method (_recycled; not pickled)
        self._n_in = _tree.size(self.treedef)
        self.shapes = _static.Recordings(cache_size)  # the compiled functions for other shapes (_Reshaped)

    # -- structure --

    def _inputs(self, args):
        """The arguments as a trace takes them: the flat float64 vector of
        their numbers, or for an ArrayTrace the list of flatten's parts (a
        number or an array per leaf: big arrays are not copied)."""
        if (self._flat_args is not None and len(args) == len(self._flat_args)
                and not (self._packs_arrays and isinstance(self.traces[0], ArrayTrace))):
            # (an ArrayTrace reads an ndarray argument in place: no copy)
            try:
                x = pack_numbers(list(args), self._flat_args)
            except OverflowError:  # an int beyond float64: a ValueError, as for fad.grad
                raise ValueError("an argument holds an int beyond float64's range") from None
            if x is not None:
                return x
        parts = _tree.parts_like(self.treedef, args)
        if parts is not None:
            return parts if isinstance(self.traces[0], ArrayTrace) else _tree.numbers(parts)
        parts, treedef = _tree.flatten(tuple(args), "the arguments")
        if treedef != self.treedef:
            if _tree.shapeless(treedef) == _tree.shapeless(self.treedef):  # other shapes: record them
                raise _Reshaped(self.shapes.get(treedef, self._at_shapes, treedef, args))
            raise TypeError(f"this compiled function takes arguments shaped like "
                            f"{_tree.describe(self.treedef)}, got {_tree.describe(treedef)}")
        return parts if isinstance(self.traces[0], ArrayTrace) else _tree.numbers(parts)

    def _recorded_at(self, args):
        """self, or the compiled function recorded for args' shapes."""
        try:
            self._inputs(args)
        except _Reshaped as e:
            return e.cf
        return self

    def _at_shapes(self, treedef, args):
        """f compiled at args, which have the structure of the recorded
        arguments at other shapes (treedef): kept in self.shapes."""
        if self.f is None:
            raise TypeError(f"this compiled function was recorded for arguments shaped like "
                            f"{_tree.describe(self.treedef)}; those shaped like {_tree.describe(treedef)} "
                            f"need a recording of their own, and the function did not survive "
                            f"pickling; compile it again")
        # on_branch_change="raise" holds this recording's replays to the
        # branches it records now: other shapes are another program, not a branch
        try:
            return CompiledFunction(self.f, args, self.argnums[0] if self.single else self.argnums,
                                    self.on_branch_change, self.cache_size, self.scalarize, self._find_loops)
        except Exception as e:  # (an error of f at these shapes: a matmul that does not fit ...)
            if hasattr(e, "add_note"):  # (Python 3.11)
                e.add_note(f"(fastad: recording the function again for arguments shaped like "
                           f"{_tree.describe(treedef)}; it was compiled for {_tree.describe(self.treedef)})")
            raise

    def _run(self, x, method, *more):
        """method(trace, x, *more) on a trace whose branches hold at x. For
        forward mode and second order (methods an ArrayTrace lacks) every
        trace is scalar (_scalar); a branch that records array rows sends
        the call to the scalarized twin."""
        traces, tried = self.traces, 0
        if type(x) is not list or type(traces[0]) is ArrayTrace:  # the common case first, in few steps
            result = getattr(traces[0], method)(x, *more)
            if result[-1] < 0:
                return result[:-1]
            tried = 1
        # self.traces is never changed in place, only rebound to a new list:
        # threads replaying one compiled function each walk the list they
        # read (the sweeps release the GIL between its steps). A move to the
        # front that another thread's overwrites costs an order, not a trace.
        for k in range(tried, len(traces)):
            trace = traces[k]
            if type(x) is list and not isinstance(trace, ArrayTrace):
                x = _tree.numbers(x)
            result = getattr(trace, method)(x, *more)
            if result[-1] < 0:
                if k:
                    self.traces = [trace] + [t for t in self.traces if t is not trace]
                return result[:-1]
        row = result[-1]
        if self.on_branch_change == "raise" or self.f is None:
            why = "" if self.f is not None else " (the function did not survive pickling; compile it again to retrace)"
            trace = traces[-1]  # the last trace tried: `row` is one of its rows
            op = _ops.OPS[trace.op[row]].name
            if op == "map":  # an elementwise kink on an array: name the scalar op
                op = f"{_ops.OPS[int(trace.c[row])].name}, elementwise"
            raise BranchChanged(f"the inputs take another branch than the recording at row {row} "
                                f"(op '{op}'){why}")
        trace, out_treedef = record(self.f, self.treedef, _tree.numbers(x) if type(x) is list else x,
                                    self.scalarize, self._find_loops)
        if out_treedef != self.out_treedef:
            raise FastADError("the function's output changed structure between branches")
        self.traces = [trace] + self.traces[:self.cache_size - 1]
        if isinstance(trace, ArrayTrace) and not hasattr(trace, method):
            x = _tree.numbers(x) if type(x) is list else x
            return self._make_twin(_tree.unflatten(self.treedef, x))._run(x, method, *more)
        if type(x) is list and not isinstance(trace, ArrayTrace):
            x = _tree.numbers(x)  # a scalar trace after array ones: it takes the flat vector
        result = getattr(trace, method)(x, *more)
        if result[-1] >= 0:
            raise FastADError("the function took different branches on the same inputs; "
                              "is it deterministic?")
        return result[:-1]

    def _checked_run(self, x, method, *more):
        """_run while fad.debug_nans is on (it takes _run's place then:
        _nan_checks). A replay that gives a nan records f again at x, with
        debug_nans on, which raises NanError at the op that made it: in the
        forward pass, or for a gradient in the reverse sweep. A nan that
        comes in (an argument, a constant of f, a tangent) raises nothing,
        as in a recording; nor does one that f, recorded again, does not
        make (a tangent sweep's), or a replay whose f did not survive pickling."""
        result = _plain_run(self, x, method, *more)
        if self.f is not None and _has_nan(result):
            from fastad.functional import value_and_grad  # (fastad.functional imports this module)
            numbers = _tree.numbers(x) if type(x) is list else x
            record(self.f, self.treedef, numbers, self.scalarize, find_loops=False)
            if method != "values" and self._has_scalar_output():
                value_and_grad(self.f, self.argnums)(*_tree.unflatten(self.treedef, numbers))
        return result

    @staticmethod
    def _to_tree(td, vec, flat):
        """A flat vector -> the structure td (flat lists without a tree walk;
        flat: whether td is one, _arg_flat)."""
        if td == "f":
            return float(vec[0])
        if flat:
            return vec.tolist() if td[0] is list else tuple(vec.tolist())
        if td[0] == "a":  # an ndarray: vec is a fresh vector's slice, a view will do
            return vec.reshape(td[1])
        return _tree.unflatten(td, vec)

    @staticmethod
    def _from_tree(td, value, what, flat):
        """A structure shaped like td -> its flat vector (flat lists fast)."""
        if flat and type(value) is td[0] and len(value) == len(td[1]):
            try:  # floats and ints read in C (np.array of 10k floats: 160 us, this: 15)
                vec = pack_numbers([value], [(td[0], len(td[1]), None)])
                if vec is None and not any(v is None or isinstance(v, (str, bytes)) for v in value):
                    vec = np.array(value, dtype=np.float64)  # other numbers (bools, np.float32)
                if vec is not None and vec.shape == (len(td[1]),):
                    return vec
            except (TypeError, ValueError, OverflowError):
                pass
        parts, got = _tree.flatten(value, what)
        if got != td:
            shape = _nested_shape(td)  # any array-like of the argument's shape will do, as for vjp
            if shape is None or _array_shape(value) != shape:
                raise TypeError(f"{what} must be shaped like {_tree.describe(td)}, got {_tree.describe(got)}")
            return np.asarray(value, np.float64).reshape(-1)
        return _tree.numbers(parts)

    def _recycled(self, kind, vec):
        """vec as a list of floats, in a list of `kind`'s results handed out
        before when nothing else holds it any more (RecycledLists: one per
        kind, so that a loop of g = cf.grad(x); hv = cf.hvp(x, v) recycles)."""
        return self._recycler(kind).of(vec)

    def _recycler(self, kind):
        lists = self._lists.get(kind)
        if lists is None:
            lists = self._lists[kind] = RecycledLists()
        return lists

    def _grads(self, g):
        """A gradient over all inputs -> the argnums' structures: g flat, or
        (from an ArrayTrace) a list with one part per leaf."""
        if self._one_list and type(g) is not list:
            return self._recycled("grad", g)
        if type(g) is list:
            per_arg = [_tree.unflatten_parts(td, g[s]) for td, s in zip(self._arg_treedefs, self._leaf_slices)]
        else:
            per_arg = [self._to_tree(td, g[s], flat)
                       for td, s, flat in zip(self._arg_treedefs, self._slices, self._arg_flat)]
        return per_arg[0] if self.single else tuple(per_arg)

    def _has_scalar_output(self):
        # a number, or an array of one element, as fad.grad takes (not a list or dict of one)
        return self.out_treedef == "f" or (self.out_treedef[0] == "a" and _tree.size(self.out_treedef) == 1)

    def _scalar_output(self, what):
        if not self._has_scalar_output():
            raise ValueError(f"{what} needs a function with a scalar output; "
                             "for a vector output use jacobian (or vjp)")

    # -- evaluation --

    def __call__(self, *args):
        """The function's value, replayed."""
        try:
            x = self._inputs(args)
        except _Reshaped as e:
            other = e.cf
        else:
            (y,) = self._run(x, "values")
            return float(y[0]) if self.out_treedef == "f" else _tree.unflatten(self.out_treedef, y)
        return other(*args)

    def _list_to_list(self, args):
        """(value, gradient) of a function of one flat list of floats with a
        number out, in C from list to list (Trace.grad_list: the common case
        of cf.grad); None where that does not apply."""
        if self._one_list and len(args) == 1 and type(args[0]) is list and self.out_treedef == "f" \
                and type(self.traces[0]) is Trace and not _check_nans:  # (debug_nans: _checked_run)
            return self.traces[0].grad_list(args[0], self._recycler("grad"))
        return None

    def value_and_grad(self, *args):
        both = self._list_to_list(args)
        if both is not None:
            return both
        try:
            x = self._inputs(args)
        except _Reshaped as e:
            other = e.cf
        else:
            self._scalar_output("value_and_grad")
            y, g = self._run(x, "value_and_grad")
            return float(y[0]), self._grads(g)
        return other.value_and_grad(*args)

    def grad(self, *args):
        """The gradient with respect to the argnums, replayed in C."""
        both = self._list_to_list(args)
        if both is not None:
            return both[1]
        try:
            x = self._inputs(args)
        except _Reshaped as e:
            other = e.cf
        else:
            self._scalar_output("grad")
            return self._grads(self._run(x, "value_and_grad")[1])
        return other.grad(*args)

    @_any_shape
    def vjp(self, args, cotangent):
        x = self._inputs(args)  # (first: at other shapes the output's shape may differ too)
        parts, td = _tree.flatten(cotangent, "the cotangent")
        # the output's structure, or any array-like of its Jacobian-row shape
        # (np.shape: (n,) for a list or tuple of n numbers, an array's shape)
        if td != self.out_treedef and _array_shape(cotangent) != _tree.shape(self.out_treedef):
            raise TypeError(f"the cotangent must be shaped like the output, "
                            f"{_tree.describe(self.out_treedef)}, got {_tree.describe(td)}")
        y, g = self._run(x, "vjp", _tree.numbers(parts))
        return _tree.unflatten(self.out_treedef, y), self._grads(g)

    def _scalar(self, args):
        """self, or for an array recording its scalarized twin, compiled at
        args on first need: forward mode and second order sweep a scalar
        Trace (tangent and second-order rules exist per scalar op). Not
        grad_batch: its rows must equal cf.grad's bit for bit, and the twin
        sums a matmul in another order than BLAS (on a 16x8 layer it would
        be 26x faster a row)."""
        if self.scalarize or all(isinstance(t, Trace) for t in self.traces):
            return self
        return self._make_twin(args)

    def _make_twin(self, args):
        if self._twin is None:
            self._inputs(args)  # (arguments at other shapes raise _Reshaped: their own twin, not this)
            if self.f is None:
                raise FastADError("forward mode and second order record an array function again, one "
                                  "Var per number, and this function did not survive pickling; "
                                  "compile it again")
            if self._example is not None:
                args = _tree.unflatten(self.treedef, self._example)
            self._twin = CompiledFunction(self.f, args, self.argnums[0] if self.single else self.argnums,
                                          self.on_branch_change, self.cache_size, scalarize=True,
                                          find_loops=self._find_loops)
        return self._twin

    @_any_shape
    def jvp(self, args, tangents):
        """(value, J @ tangents): tangents has the structure of the argnums."""
        if self._scalar(args) is not self:
            return self._twin.jvp(args, tangents)
        x = self._inputs(args)
        V = np.zeros(len(x))
        tangents = (tangents,) if self.single else tuple(tangents)
        if len(tangents) != len(self.argnums):
            raise TypeError(f"jvp takes one tangent per differentiated argument ({len(self.argnums)}), "
                            f"got {len(tangents)}")
        for td, s, t, flat in zip(self._arg_treedefs, self._slices, tangents, self._arg_flat):
            V[s] = self._from_tree(td, t, "the tangent", flat)
        if self._n_in:
            y, JV = self._run(x, "jvp", V)
        else:  # no input numbers: no direction to sweep
            (y,) = self._run(x, "values")
            JV = np.zeros((len(y), 1))
        return _tree.unflatten(self.out_treedef, y), _tree.unflatten(self.out_treedef, JV[:, 0])

    @_any_shape
    def jacobian(self, *args, mode="auto"):
        """d outputs / d argnums, shaped out.shape + in.shape. mode "rev" does
        one reverse sweep per output, "fwd" tangent sweeps of up to 16 inputs
        each, "auto" forward mode where there are fewer inputs than outputs."""
        if mode not in ("auto", "rev", "fwd"):
            raise ValueError(f"mode must be 'auto', 'rev' or 'fwd', got {mode!r}")
        x = self._inputs(args)
        n_out = _tree.size(self.out_treedef)
        cols = np.concatenate([np.arange(self._n_in)[s] for s in self._slices])
        if mode == "auto":  # an array recording has no tangent sweep of its own
            mode = "fwd" if len(cols) < n_out and isinstance(self.traces[0], Trace) else "rev"
        if mode == "fwd" and self._scalar(args) is not self:
            return self._twin.jacobian(*args, mode="fwd")
        if not len(cols):  # no input numbers: an empty Jacobian, no sweep
            J = np.zeros((n_out, self._n_in))
        elif mode == "rev":
            _, J = self._run(x, "jacobian_rev")
        else:
            V = np.zeros((self._n_in, len(cols)))
            V[cols, np.arange(len(cols))] = 1.0
            _, JV = self._run(x, "jvp", V)
            J = np.zeros((n_out, self._n_in))
            J[:, cols] = JV
        out_shape = _tree.shape(self.out_treedef)
        per_arg = [J[:, s].reshape(out_shape + _tree.shape(td))
                   for td, s in zip(self._arg_treedefs, self._slices)]
        return per_arg[0] if self.single else tuple(per_arg)

    @_any_shape
    def hessian(self, *args):
        """Second derivatives of a scalar output, shaped in.shape + in.shape
        for one argnum; for a tuple of them, blocks H[i][j] shaped
        arg_i.shape + arg_j.shape, as JAX nests them. From Hessian-vector
        products 16 a sweep: as few as a coloring of its sparsity pattern
        allows (Trace.hessian)."""
        self._scalar_output("hessian")
        if self._scalar(args) is not self:
            return self._twin.hessian(*args)
        lo, hi = min(s.start for s in self._slices), max(s.stop for s in self._slices)
        x = self._inputs(args)
        H = self._run(x, "hessian", lo, hi)[1] if hi > lo else np.zeros((0, 0))  # inputs lo..hi-1: the argnums'
        shapes = [_tree.shape(td) for td in self._arg_treedefs]
        blocks = tuple(tuple(H[si.start - lo:si.stop - lo, sj.start - lo:sj.stop - lo].reshape(a + b)
                             for sj, b in zip(self._slices, shapes))
                       for si, a in zip(self._slices, shapes))
        return blocks[0][0] if self.single else blocks

    @_any_shape
    def hvp(self, *args_and_v):
        """H @ v for a function of the arguments args, where v has the
        structure of the (single) argnum: cf.hvp(x, v)."""
        self._scalar_output("hvp")
        if not self.single:
            raise ValueError("hvp takes a single argnum")
        *args, v = args_and_v
        if self._scalar(args) is not self:
            return self._twin.hvp(*args_and_v)
        x = self._inputs(args)
        s = self._slices[0]
        V = np.zeros((len(x), 1))
        V[s, 0] = self._from_tree(self._arg_treedefs[0], v, "the direction", self._arg_flat[0])
        HV = self._run(x, "hvp", V)[1] if self._n_in else V  # (no input numbers: no sweep)
        if self._one_list:
            return self._recycled("hvp", HV[s, 0])
        return self._to_tree(self._arg_treedefs[0], HV[s, 0], self._arg_flat[0])

    def grad_batch(self, X, threads=None):
        """Gradients at B inputs at once: X stacks them on a first axis (the
        function takes one argument): shape (B,) + the argument's shape, or
        (B, n) with each row flat, for an argument of n numbers. The result
        has X's shape. Rows are split over `threads` threads (None: every
        core; more than the cores are not started), each sweeping without
        the GIL in its own buffers over the shared trace. A row whose inputs
        take another branch is redone through grad(). An array recording
        (NumPy rows need the GIL) runs row by row through grad()."""
        if len(self.treedef[1]) != 1 or self.argnums != (0,):
            raise ValueError("grad_batch needs a compiled function of one argument")
        self._scalar_output("grad_batch")
        _tree.refuse_masked(X, "X")
        X = np.asarray(X)
        if X.dtype.kind not in "fiu":
            raise TypeError(f"grad_batch takes a real array, got dtype {X.dtype}")
        n_in = _tree.size(self.treedef)
        if getattr(self, "_batch_rows", None) is None:  # rows like the argument (as np.shape reads it), or flat
            rows_as = [_nested_shape(self.treedef[1][0]), (n_in,)] + ([()] if n_in == 1 else [])
            self._batch_rows = list(dict.fromkeys(r for r in rows_as if r is not None))
        rows_as = self._batch_rows
        if X.ndim < 1 or X.shape[1:] not in rows_as:
            row = self._other_row_shape(X)
            if row is not None:  # rows of the argument at another shape: their own recording
                if not len(X):
                    return np.zeros(X.shape)
                other = self._recorded_at((_tree.unflatten(row, np.asarray(X[0], np.float64).reshape(-1)),))
                if other is not self:
                    return other.grad_batch(X, threads)
            shapes = " or ".join(str(("B",) + r).replace("'", "") for r in rows_as)
            raise ValueError(f"grad_batch takes X of shape {shapes} (B rows shaped like the argument, "
                             f"or flat), got shape {X.shape}")
        B = X.shape[0]
        Xf = np.ascontiguousarray(X.reshape(B, n_in), np.float64)
        G = np.empty((B, n_in))
        Y = np.empty(B)
        changed = np.zeros(B, np.int8)
        cores = os.cpu_count() or 1
        if threads is not None and not (isinstance(threads, (int, np.integer)) and not isinstance(threads, bool)):
            raise TypeError(f"threads must be an int or None, got {threads!r}")
        threads = cores if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        trace = self.traces[0]
        threads = min(threads, max(B, 1), cores)  # more threads than cores only take turns
        # 32 blocks a thread: a thread that starts late (a pool thread takes
        # a while to be scheduled) or runs slower takes fewer of them.
        rows = RowQueue(0, B, max(1, B // (32 * threads)))
        if not isinstance(trace, Trace):
            changed[:] = 1
        elif threads == 1:
            trace.grad_rows(Xf, G, Y, changed, rows)
        else:
            # The caller sweeps too (it is already running), the pool's
            # threads - 1 workers beside it.
            pool = _executor()
            futures = [pool.submit(trace.grad_rows, Xf, G, Y, changed, rows) for _ in range(threads - 1)]
            try:
                trace.grad_rows(Xf, G, Y, changed, rows)
            finally:
                for fut in futures:
                    fut.result()
        arg_td = self.treedef[1][0]
        if _check_nans:  # a row with a nan: its cf.grad raises where f makes it (_checked_run)
            for i in np.flatnonzero(np.isnan(G).any(axis=1) | np.isnan(Y)):
                self.grad(_tree.unflatten(arg_td, Xf[i]))
        for i in np.flatnonzero(changed):  # another branch: replay (or retrace) that row alone
            G[i] = _tree.numbers(_tree.flatten(self.grad(_tree.unflatten(arg_td, Xf[i])))[0])
        return G.reshape(X.shape)

    def _other_row_shape(self, X):
        """The structure of grad_batch's rows of X, (B, ...), when they are
        its argument at another shape (an ndarray or a number, whose shape
        may change: _tree.shapeless), else None."""
        arg = self.treedef[1][0]
        if X.ndim < 1 or not (arg == "f" or arg[0] == "a"):
            return None
        return "f" if X.shape[1:] == () and arg == "f" else ("a", X.shape[1:])

    def _lay_out_arguments(self):
        """Arguments that are numbers, flat lists / tuples of numbers or
        ndarrays (the common cases) are packed in C, without the tree walk
        (pack_numbers): Rosenbrock n = 10 on an ndarray, cf(x) 5.2 -> 2.3 us.
        pack_numbers trusts this layout: it is made from the treedef, here
        and after unpickling, never read from a pickle."""
        self._flat_args = [_pack_layout(td) for td in self.treedef[1]]
        if None in self._flat_args:
            self._flat_args = None
        self._packs_arrays = self._flat_args is not None and any(e[0] == "a" for e in self._flat_args)

    # -- pickling: the traces and the structure; f when it pickles --

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("_find_loops", True)  # (pickled before loops were found)
        self._lay_out_arguments()
        self._lists = {}
        if "shapes" not in state:  # (pickled before shapes were recorded again)
            self.shapes = _static.Recordings(self.cache_size)

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lists"]
        if not _static.pickles(self.f):  # a lambda or a closure: replays work, retracing does not
            state["f"] = None
        return state

    def __repr__(self):
        name = getattr(self.f, "__name__", "function")
        more = f", {len(self.shapes)} other shape(s)" if len(self.shapes) else ""
        return (f"<fastad.compile of {name}: {len(self.traces[0].op):,} rows, "
                f"{len(self.traces)} trace(s){more}>")


def _has_nan(v):
    """Whether a replay's results (numbers, arrays, tuples and lists of
    them) hold a nan."""
    if type(v) in (tuple, list):
        return any(_has_nan(e) for e in v)
    return v is not None and bool(np.isnan(np.asarray(v, np.float64)).any())


# fad.debug_nans, told by the core: while it is on, compiled functions replay
# through _checked_run and grad_batch checks its rows; while it is off they
# pay nothing for it (not even a test of a flag on every call).
_plain_run = CompiledFunction._run
_check_nans = False


def _nan_checks(on):
    global _check_nans
    _check_nans = on
    CompiledFunction._run = CompiledFunction._checked_run if on else _plain_run


debug_nans_listeners.append(_nan_checks)


def compile(f, *example_args, argnums=0, on_branch_change="retrace"):
    """Record f at example_args once; replay it in C afterwards.

    >>> import fastad as fad
    >>> cf = fad.compile(lambda x: x[0] * x[1] + fad.sin(x[0]), [2.0, 3.0])
    >>> cf.grad([2.0, 3.0])
    [2.5838531634528574, 2.0]
    >>> cf([1.0, 1.0])
    1.8414709848078965
    """
    nums = _Argnums(argnums)
    resolved = nums(len(example_args))
    static = _static.static_positions(example_args, resolved)
    if static:  # an index, a flag, a name: one trace set per value (fastad/_static.py)
        return _static.StaticArgs(f, example_args, resolved, nums.single, static, on_branch_change)
    return CompiledFunction(f, example_args, argnums, on_branch_change)

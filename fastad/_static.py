"""Static arguments of fad.compile: an index, a flag, a name.

A compiled function traces its arguments: floats and float arrays outside
`argnums` are data that may change from call to call (a batch), replayed
without recording again. An argument outside `argnums` that holds no float
(an int, a bool, a str, None, an integer array, a list of ints ...) steers
the Python instead (`x[i]`, `if mode == "sq"`), so it cannot be a traced
number: it is static, as in jax.jit's static_argnums. So is one that holds
floats beside something that is not a number (("relu", 0.5)): its floats
are constants of the recording. `StaticArgs` keeps one CompiledFunction per
value of the static arguments, made when a value is first seen (the last
`cache_size` values are kept, in `Recordings`, which a CompiledFunction
also keeps its recordings for other argument shapes in).
"""
import collections
import copy
import pickle
import threading

import numpy as np

from fastad import _tree


def holds_float(v):
    """Whether v is, or nests, a float or a float array (traced data)."""
    if isinstance(v, (float, np.floating)):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype.kind == "f" or (v.dtype == object and any(holds_float(e) for e in v.flat))
    if isinstance(v, (list, tuple)):
        return any(holds_float(e) for e in v)
    if isinstance(v, dict):
        return any(holds_float(e) for e in v.values())
    return type(v).__module__ == "fastad._core"  # a Var or Array: compile says what is wrong


def static_positions(example_args, argnums):
    """The positions of the static arguments: outside argnums, holding no
    float, or holding something besides numbers and arrays (a float beside
    a name: ("relu", 0.5)), which cannot be traced."""
    return tuple(k for k, v in enumerate(example_args)
                 if k not in argnums and (not holds_float(v) or not _traceable(v)))


def _traceable(v):
    try:
        _tree.flatten(v)
    except (TypeError, ValueError):
        return False
    return True


def key(v):
    """A hashable stand-in for a static value, equal for equal values (an
    array by its dtype, shape and bytes; 1 and True kept apart)."""
    if isinstance(v, np.ndarray):
        return (_type_name(v), v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (list, tuple)):
        return (_type_name(v), tuple(key(e) for e in v))
    if isinstance(v, dict):  # (an OrderedDict is not a dict to a function that asks)
        return (_type_name(v), tuple((k, key(e)) for k, e in v.items()))
    if isinstance(v, (float, np.floating)):  # by its bits: 0.0 and -0.0 are two values, a nan is one
        return (_type_name(v), float(v).hex())
    try:
        hash(v)
    except TypeError:
        raise TypeError(f"a static argument of a compiled function (outside argnums, not traced "
                        f"data) must be hashable or an array, list, tuple or dict; got "
                        f"{type(v).__name__}") from None
    return (_type_name(v), v)


def _type_name(v):
    """v's type as a key: its name (a function's type does not pickle)."""
    return f"{type(v).__module__}.{type(v).__qualname__}"


def own(v):
    """A copy of v's arrays, lists, tuples and dicts (keyed by content, so a
    caller who changes theirs later must not change ours); anything else,
    keyed by its hash, as it is (a module, a function, a number)."""
    if type(v) is np.ndarray:
        return v.copy()
    if type(v) is list or type(v) is tuple:
        return type(v)([own(e) for e in v])
    if type(v) is dict:
        return {k: own(e) for k, e in v.items()}
    if isinstance(v, (np.ndarray, list, tuple, dict)):  # a subclass (OrderedDict, a namedtuple ...)
        try:
            return copy.deepcopy(v)
        except Exception:  # it holds something that cannot be copied: kept as it is
            return v
    return v


class Bound:
    """f of nargs arguments with those at `positions` fixed to `values`: it
    takes the others, in order (a compiled function's traced arguments; the
    argnums' arguments of a jacobian or hessian). A class, not a closure, so a
    compiled function of a module-level f pickles whole."""

    def __init__(self, f, positions, values, nargs):
        self.f, self.positions, self.values, self.nargs = f, positions, values, nargs

    def __call__(self, *traced, **kwargs):
        it, fixed = iter(traced), dict(zip(self.positions, self.values))
        return self.f(*[fixed[k] if k in fixed else next(it) for k in range(self.nargs)], **kwargs)


class Recordings:
    """The last `size` compiled functions made, by key (a static value's,
    an argument structure), the most recently used last. Threads share it:
    a key two threads meet at once is recorded twice, and the last kept."""

    def __init__(self, size):
        self.size = size
        self.by_key = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, k, make, *args):
        """The compiled function for k, made by make(*args) if there is none."""
        with self._lock:
            cf = self.by_key.get(k)
            if cf is not None:
                self.by_key.move_to_end(k)
                return cf
        cf = make(*args)  # (recording outside the lock: other keys go on replaying)
        with self._lock:
            self.by_key[k] = cf
            while len(self.by_key) > self.size:
                self.by_key.popitem(last=False)
        return cf

    def __len__(self):
        return len(self.by_key)

    def __getstate__(self):  # a key that does not pickle (a static lambda, a module) is left out
        return {"size": self.size,
                "by_key": collections.OrderedDict((k, cf) for k, cf in self.by_key.items() if pickles(k))}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class StaticArgs:
    """A compiled function with static arguments: the methods of
    CompiledFunction, each call going to the compiled function of its static
    values (see the module's docstring)."""

    def __init__(self, f, example_args, argnums, single, positions, on_branch_change, cache_size=8):
        self.f, self.nargs, self.positions = f, len(example_args), positions
        self.on_branch_change, self.cache_size = on_branch_change, cache_size
        traced = [k for k in range(self.nargs) if k not in positions]
        inner = tuple(traced.index(k) for k in argnums)
        self.argnums = inner[0] if single else inner  # as the traced arguments number them
        self.compiled = Recordings(cache_size)  # calls from several threads share it
        self._split(example_args)

    def _split(self, args):
        """(the compiled function for args' static values, the traced args)."""
        if len(args) != self.nargs:
            raise TypeError(f"this compiled function takes {self.nargs} arguments, got {len(args)}")
        values = [args[k] for k in self.positions]
        traced = tuple(a for j, a in enumerate(args) if j not in self.positions)
        return self.compiled.get(tuple(key(v) for v in values), self._compile, values, traced), traced

    def _compile(self, values, traced):
        from fastad.compiled import CompiledFunction
        if self.f is None:
            raise TypeError("these values of the static arguments were not compiled, or were left "
                            "out of the pickle (they do not pickle), and compiling them needs the "
                            "function, which did not survive pickling; compile it again")
        # (own: copies of values keyed by content, which the caller may change later)
        return CompiledFunction(Bound(self.f, self.positions, [own(v) for v in values], self.nargs),
                                traced, self.argnums, self.on_branch_change, self.cache_size)

    def __call__(self, *args):
        cf, traced = self._split(args)
        return cf(*traced)

    def value_and_grad(self, *args):
        cf, traced = self._split(args)
        return cf.value_and_grad(*traced)

    def grad(self, *args):
        cf, traced = self._split(args)
        return cf.grad(*traced)

    def jacobian(self, *args, mode="auto"):
        cf, traced = self._split(args)
        return cf.jacobian(*traced, mode=mode)

    def hessian(self, *args):
        cf, traced = self._split(args)
        return cf.hessian(*traced)

    def hvp(self, *args_and_v):
        cf, traced = self._split(args_and_v[:-1])
        return cf.hvp(*traced, args_and_v[-1])

    def jvp(self, args, tangents):
        cf, traced = self._split(tuple(args))
        return cf.jvp(traced, tangents)

    def vjp(self, args, cotangent):
        cf, traced = self._split(tuple(args))
        return cf.vjp(traced, cotangent)

    def grad_batch(self, X, threads=None):
        raise ValueError("grad_batch needs a compiled function of one argument")

    def __getstate__(self):
        state = dict(self.__dict__)
        if not pickles(self.f):  # a lambda or a closure: the compiled values replay, new ones cannot record
            state["f"] = None
        return state

    def __setstate__(self, state):
        if not isinstance(state["compiled"], Recordings):  # pickled before Recordings: a dict
            recordings = Recordings(state["cache_size"])
            recordings.by_key.update(state["compiled"])
            state = dict(state, compiled=recordings)
        self.__dict__.update(state)

    def __repr__(self):
        name = getattr(self.f, "__name__", "function")
        return (f"<fastad.compile of {name}: static arguments {list(self.positions)}, "
                f"{len(self.compiled)} value(s) compiled>")


def pickles(v):
    """Whether v survives pickle.dumps."""
    try:
        pickle.dumps(v)
    except Exception:
        return False
    return True

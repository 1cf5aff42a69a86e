"""Function transforms: grad and value_and_grad (JAX-style, over the tape).

Each call records the function on a fresh tape (its memory is recycled
from the previous call's), sweeps it once, and returns the gradient in the
arguments' own structure.
"""
import functools

import numpy as np

from fastad._core import (Tape, Var, argument_leaf, input_adjoints, recording_on, sweep_for,
                          value_and_grad_simple)
from fastad import _tree
from fastad._static import Bound
from fastad._tree import scalar_output


def _is_index(k):
    """An int or a NumPy integer, not a bool."""
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


class _Argnums:
    """argnums (int or tuple) resolved against the number of arguments of
    each call, remembered per count: the check runs once, not per call."""

    def __init__(self, argnums):
        self.single = _is_index(argnums)
        self.argnums = argnums
        nums = (argnums,) if self.single else tuple(argnums) if isinstance(argnums, (tuple, list, range)) else ()
        if not nums or not all(_is_index(k) for k in nums):
            raise ValueError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
        self.nums = tuple(int(k) for k in nums)
        self.resolved = {}

    def __call__(self, nargs):
        nums = self.resolved.get(nargs)
        if nums is None:
            if not all(-nargs <= k < nargs for k in self.nums):
                raise ValueError(f"argnums {self.argnums!r} does not fit a call with "
                                 f"{nargs} positional argument(s)")
            nums = self.resolved[nargs] = tuple(k % nargs for k in self.nums)
        return nums


def _value_and_grad_tree(f, nums, args, kwargs, transform):
    args = list(args)
    trees, made_for = [], {}
    with Tape() as own, recording_on():
        for k in nums:
            if k not in made_for:  # an argnum named twice: one set of leaves
                parts, treedef = _tree.flatten(args[k], f"argument {k}")
                leaves = [argument_leaf(p) for p in parts]
                args[k] = _tree.unflatten_parts(treedef, leaves)
                made_for[k] = (treedef, leaves)
            trees.append(made_for[k])
        own.made = [leaves for _, leaves in trees]  # for a grad nested in f (sweep_for checks)
        out = scalar_output(f(*args, **kwargs), transform)
        tape = None
        if type(out) is Var:
            value = out.value
            tape = sweep_for(out, own)
        else:
            value = out
    return value, [_tree.unflatten_parts(td, input_adjoints(tape, leaves, out)) for td, leaves in trees]


def _transform(f, argnums, with_value):
    """grad (with_value False) or value_and_grad of f. The common case runs
    in as few Python frames as possible: per-call overhead is what a small
    function's gradient costs."""
    nums = _Argnums(argnums)
    resolved, single = nums.resolved, nums.single
    name = "value_and_grad" if with_value else "grad"

    @functools.wraps(f)
    def transformed(*args, **kwargs):
        k = resolved.get(len(args)) or nums(len(args))
        done = value_and_grad_simple(f, args, k, kwargs, name)  # numbers, flat lists, arrays, flat dicts
        value, grads = done if done is not None else _value_and_grad_tree(f, k, args, kwargs, name)
        grads = grads[0] if single else tuple(grads)
        return (value, grads) if with_value else grads
    return transformed


def value_and_grad(f, argnums=0):
    """f's value and its gradient with respect to the arguments `argnums`.

    >>> import fastad as fad
    >>> fad.value_and_grad(lambda x: x * x)(3.0)
    (9.0, 6.0)
    """
    return _transform(f, argnums, True)


def grad(f, argnums=0):
    """The gradient of a scalar function, in the structure of its arguments.

    `argnums` (int or tuple) picks the arguments to differentiate; each may
    be a float, a float64 array, or lists / tuples / dicts of them.

    >>> import fastad as fad
    >>> fad.grad(lambda p: p["w"] * p["b"] ** 2)({"w": 2.0, "b": 3.0})
    {'w': 9.0, 'b': 12.0}
    """
    return _transform(f, argnums, False)


# -- transforms built on one recording, swept in C (fastad/compiled.py) --

def _traced(f, args, argnums, scalarize=False):
    """A compiled f for one call; scalarize: one Var per number (forward mode
    and second order need a scalar recording: see compiled.record). Its
    trace does not look for loops: finding them costs more than one call
    saves (fad.jacobian of a 100 -> 100 tanh layer: 3.9 -> 11.7 ms)."""
    from fastad.compiled import CompiledFunction
    return CompiledFunction(f, args, argnums, scalarize=scalarize, find_loops=False)


def _of_argnums(f, args, argnums):
    """(g, its args, its argnums): f as a function of the argnums' arguments
    alone, the others fixed at this call's, as grad passes them through
    untouched (an index, a flag, a name); argnums renumbered for g."""
    nums = _Argnums(argnums)
    ks = nums(len(args))
    kept = sorted(set(ks))
    if len(kept) == len(args):
        return f, args, argnums
    where = {k: i for i, k in enumerate(kept)}
    fixed = tuple(k for k in range(len(args)) if k not in where)
    g = Bound(f, fixed, [args[k] for k in fixed], len(args))
    return g, tuple(args[k] for k in kept), (where[ks[0]] if nums.single else tuple(where[k] for k in ks))


def _jacobian(f, args, argnums, mode):
    g, args, argnums = _of_argnums(f, args, argnums)
    return _traced(g, args, argnums).jacobian(*args, mode=mode)


def _hessian(f, args, argnums):
    g, args, argnums = _of_argnums(f, args, argnums)
    return _traced(g, args, argnums, True).hessian(*args)


def jacobian(f, argnums=0, mode="auto"):
    """d f / d args[argnums], shaped out.shape + in.shape; mode "rev"
    (a reverse sweep per output), "fwd" (a tangent sweep per input) or
    "auto" (whichever is fewer). Where no derivative exists because a zero
    meets an infinity (sqrt(x*x) at 0), the modes may differ: nan or 0 (see
    the README's "How the tape works").

    >>> import fastad as fad, numpy as np
    >>> fad.jacobian(lambda x: [x[0] * x[1], fad.sin(x[0])])(np.array([2.0, 3.0]))
    array([[ 3.        ,  2.        ],
           [-0.41614684,  0.        ]])
    """
    return lambda *args: _jacobian(f, args, argnums, mode)


def hessian(f, argnums=0):
    """Second derivatives of a scalar f, shaped in.shape + in.shape; for a
    tuple of argnums, nested blocks H[i][j] (arg_i.shape + arg_j.shape).

    >>> import fastad as fad, numpy as np
    >>> fad.hessian(lambda x: x[0] ** 2 * x[1])(np.array([1.0, 2.0]))
    array([[4., 2.],
           [2., 0.]])
    """
    return lambda *args: _hessian(f, args, argnums)


def hvp(f):
    """(x, v) -> H(x) @ v for a scalar f of one argument, by forward over
    reverse (never forms H).

    >>> import fastad as fad, numpy as np
    >>> fad.hvp(lambda x: x[0] ** 2 * x[1])(np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    array([4., 2.])
    """
    return lambda x, v: _traced(f, (x,), 0, True).hvp(x, v)


def jvp(f, primals, tangents):
    """(f(*primals), J @ tangents), by one tangent sweep.

    >>> import fastad as fad
    >>> fad.jvp(lambda x, y: x * y, (2.0, 3.0), (1.0, 0.0))
    (6.0, 3.0)
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(tangents) != len(primals):
        raise TypeError(f"jvp takes one tangent per primal: {len(primals)} primal(s), "
                        f"{len(tangents)} tangent(s)")
    return _traced(f, primals, tuple(range(len(primals))), True).jvp(primals, tangents)


def vjp(f, *primals):
    """(f(*primals), vjp_fn) with vjp_fn(cotangent) = cotangent @ J, a
    tuple with one entry per primal.

    >>> import fastad as fad
    >>> out, pullback = fad.vjp(lambda x, y: [x * y, x + y], 2.0, 3.0)
    >>> out, pullback([1.0, 1.0])
    ([6.0, 5.0], (4.0, 3.0))
    """
    cf = _traced(f, primals, tuple(range(len(primals))))
    return cf(*primals), lambda cotangent: cf.vjp(primals, cotangent)[1]

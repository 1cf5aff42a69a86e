"""Functional transforms: ``grad`` and ``value_and_grad`` of a function of
floats and ndarrays (or nested lists, tuples and dicts of them)."""
import numbers

import numpy as np

from .array import Array
from .tape import Tape
from .var import Var


def _tree_map(fn, tree):
    """Apply fn to every leaf of nested lists / tuples / dicts."""
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_tree_map(fn, v) for v in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return fn(tree)


def _make_leaf(x):
    """A float becomes a Var leaf, an ndarray an Array leaf."""
    if isinstance(x, (Var, Array)):
        raise TypeError("the reference grad() takes floats and ndarrays, not Vars or "
                        "Arrays (it does not nest grad)")
    if isinstance(x, np.ndarray):
        leaf = Array(x)  # raises TypeError for a non-real dtype
    elif not isinstance(x, numbers.Real):
        raise TypeError(f"grad() arguments must be floats, ndarrays or nested lists / "
                        f"tuples / dicts of them, got {type(x).__name__}")
    else:
        leaf = Var(x)
    leaf._made = True  # a copy of f's argument is the argument (Var.__copy__)
    return leaf


def value_and_grad(f, argnums=0):
    """``value_and_grad(f)(*args)`` -> (f(*args), df/dargs[argnums])."""
    single = isinstance(argnums, numbers.Integral) and not isinstance(argnums, (bool, np.bool_))
    nums = (argnums,) if single else tuple(argnums) if isinstance(argnums, (tuple, list, range)) else ()
    if not nums or any(not isinstance(n, numbers.Integral) or isinstance(n, (bool, np.bool_)) for n in nums):
        raise ValueError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")

    def wrapped(*args, **kwargs):
        for n in nums:
            if not -len(args) <= n < len(args):
                raise ValueError(f"argnums {n} is out of range for {len(args)} arguments")
        nums_here = tuple(int(n) % len(args) for n in nums)  # -1 and 1 of two: one argument
        args = list(args)
        leaves = {n: _tree_map(_make_leaf, args[n]) for n in nums_here}
        for n in nums_here:
            args[n] = leaves[n]
        with Tape() as tape:
            tape.made = True
            out = _scalar_output(f(*args, **kwargs))
        if isinstance(out, Var) and out._tape is not None:
            out._tape.check_usable()
            adj = out._tape.sweep(out._index)  # no side effect on other leaves
            row_of = out._tape._row_of_leaf

            def adjoint(leaf):  # an unused argument has no input row: 0
                row = row_of.get(id(leaf))
                return adj[row] if row is not None else 0.0
        else:  # a leaf or a constant: 1 for that very leaf, 0 otherwise
            def adjoint(leaf):
                return 1.0 if leaf is out else 0.0

        def gradient(leaf):  # a float for a Var, an ndarray for an Array
            g = adjoint(leaf)
            if isinstance(leaf, Array):
                return np.array(np.broadcast_to(g, leaf.shape), dtype=np.float64)
            return float(g)
        grads = tuple(_tree_map(gradient, leaves[n]) for n in nums_here)
        return float(out), grads[0] if single else grads
    return wrapped


def grad(f, argnums=0):
    """``grad(f)(*args)`` -> df/dargs[argnums], shaped like the arguments."""
    vg = value_and_grad(f, argnums)

    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]
    return wrapped


def _scalar_output(out):
    """The output of f under grad: a Var or a number (a one-element Array
    counts as its single element)."""
    if isinstance(out, (bool, np.bool_)):
        raise ValueError("grad needs a function with a scalar output, but it returned a bool")
    if isinstance(out, (Var, numbers.Real)):
        return out
    if isinstance(out, Array):
        if out.size != 1:
            raise ValueError(f"grad needs a function with a scalar output, got an Array "
                             f"of shape {out.shape}; for a vector output use jacobian (or vjp)")
        return out.item()
    if isinstance(out, np.ndarray) and out.size == 1:
        return _scalar_output(out.reshape(-1)[0])
    if isinstance(out, (list, tuple, np.ndarray)):
        raise ValueError("grad needs a function with a scalar output; for a "
                         "vector output use jacobian (or vjp)")
    raise TypeError(f"grad needs a function returning a scalar, got {type(out).__name__}")

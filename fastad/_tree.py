"""Arguments as trees: numbers and arrays nested in lists, tuples and dicts.

`flatten` turns a tree into a list of its numbers (arrays contribute their
elements) and a `treedef`, a hashable description of the structure;
`unflatten` puts any sequence of the same length back into that structure.
`grad` flattens an argument, makes one leaf Var per number, and rebuilds
the gradient with unflatten; `compile` keeps the treedef to check calls.
"""
import math

import numpy as np

_REAL_KINDS = "fiu"  # float, signed and unsigned integer dtypes are taken as float64


def flatten(tree, where="argument", var_type=None, array_type=None):
    """(list of floats and float64 arrays, treedef). `where` names the
    argument in error messages. With var_type (fastad's Var), Vars are
    numbers too and object arrays of them are arrays; with array_type
    (fastad's Array), an Array is one array part: for outputs."""
    parts = []
    try:
        return parts, _walk(tree, where, parts, (var_type, array_type))
    except RecursionError:  # a list that holds itself, or thousands of levels
        raise ValueError(f"{where} is nested too deeply, or holds itself; fastad takes trees of "
                         "lists, tuples and dicts") from None


def refuse_masked(a, path):
    """A masked array would lose its mask here (fastad's ops read every
    number, masked or not): a TypeError, not a silently different result."""
    if type(a) is not np.ndarray and isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{_where(path)} is a masked array: fastad's ops would read the masked "
                        "numbers too; pass .filled(value) or .compressed()")


def _where(path):
    """An error message's name for a node: path is the argument's name, or
    (parent's path, index or key), spelled out only when an error needs it."""
    if type(path) is str:
        return path
    parent, k = path
    return f"{_where(parent)}[{k!r}]"


def _walk(node, path, parts, types):
    # A module-level function, not a closure: a recursive closure is a
    # reference cycle that only the garbage collector frees, once per call.
    var_type, array_type = types
    if array_type is not None and type(node) is array_type:  # an Array output: one part
        parts.append(node)
        return ("a", tuple(node.shape))
    if var_type is not None:
        if type(node) is var_type:
            parts.append(node)
            return "f"
        if isinstance(node, np.ndarray) and node.dtype == object:
            parts.append(node)
            return ("a", node.shape)
    if isinstance(node, (bool, np.bool_)):
        raise TypeError(f"{_where(path)} is a bool; fastad differentiates real numbers")
    if isinstance(node, (float, int, np.floating, np.integer)):
        try:
            parts.append(float(node))
        except OverflowError:  # (API.md's error types)
            raise ValueError(f"{_where(path)} is an int beyond float64's range") from None
        return "f"
    if isinstance(node, np.ndarray):
        if node.dtype.kind not in _REAL_KINDS:
            raise TypeError(f"{_where(path)} is an array of dtype {node.dtype}; fastad needs real numbers "
                            "(float64, or integers, which are taken as float64)")
        refuse_masked(node, path)
        parts.append(np.asarray(node, np.float64))
        return ("a", node.shape)
    if isinstance(node, (list, tuple)):
        kids = tuple([_walk(v, (path, i), parts, types) for i, v in enumerate(node)])
        return (type(node), kids)
    if isinstance(node, dict):
        keys = tuple(node)
        return (dict, keys, tuple([_walk(node[k], (path, k), parts, types) for k in keys]))
    if type(node).__module__ == "fastad._core":
        raise TypeError(f"{_where(path)} is a fastad {type(node).__name__}: grad takes numbers and arrays "
                        "and makes its own leaves (pass its .value); differentiating a function "
                        "that itself takes gradients (grad of grad) is not supported yet: for "
                        "second derivatives use fad.hessian or fad.hvp")
    raise TypeError(f"{_where(path)} is a {type(node).__name__}; fastad differentiates floats, "
                    "float64 arrays, and lists / tuples / dicts of them")


def parts_like(treedef, tree):
    """flatten's parts of a tree that has structure `treedef`, or None where
    it does not (then flatten says what differs). A compiled function
    checks each call's arguments against the structure it was made for:
    matching a known structure skips the walk's error paths and the new
    treedef, about 1 us of a small call's few."""
    parts = []
    return parts if _match(treedef, tree, parts) else None


def _match(td, node, parts):
    if td == "f":
        if type(node) is float or type(node) is int:
            parts.append(float(node))
            return True
        return False
    kind = td[0]
    if kind == "a":
        if type(node) is np.ndarray and node.shape == td[1] and node.dtype.kind in _REAL_KINDS:
            parts.append(node if node.dtype == np.float64 else node.astype(np.float64))
            return True
        return False
    if type(node) is not kind:
        return False
    if kind is dict:  # (keys in the recorded order: a Jacobian's flat axes follow it)
        return tuple(node) == td[1] and all(_match(k, node[key], parts) for k, key in zip(td[2], td[1]))
    return len(node) == len(td[1]) and all(_match(k, v, parts) for k, v in zip(td[1], node))


def size(treedef):
    """How many numbers a tree of this structure holds."""
    if treedef == "f":
        return 1
    if treedef[0] == "a":
        return math.prod(treedef[1])
    return sum(size(kid) for kid in treedef[-1])


def rebuild(treedef, leaf):
    """The structure of `treedef`, with leaf(td) called for each number
    ("f") and each array (("a", shape)), in order."""
    if treedef == "f" or treedef[0] == "a":
        return leaf(treedef)
    if treedef[0] is dict:
        return {k: rebuild(kid, leaf) for k, kid in zip(treedef[1], treedef[2])}
    kind, kids = treedef
    made = [rebuild(kid, leaf) for kid in kids]
    if kind is list:
        return made
    return kind(*made) if hasattr(kind, "_fields") else kind(made)  # namedtuples too


def unflatten(treedef, items, array_dtype=np.float64):
    """The tree of `treedef` with its numbers taken in order from `items`:
    floats for numbers, arrays of `array_dtype` for arrays. From an ndarray
    of items, arrays are its slices (views: callers pass fresh vectors)."""
    if isinstance(items, np.ndarray) and items.ndim == 1:
        pos = [0]

        def piece(td):
            k = pos[0]
            if td == "f":
                pos[0] += 1
                return float(items[k]) if array_dtype is np.float64 else items[k]
            pos[0] += math.prod(td[1])
            return np.asarray(items[k:pos[0]], dtype=array_dtype).reshape(td[1])

        return rebuild(treedef, piece)
    it = iter(items)

    def leaf(td):
        if td == "f":
            v = next(it)
            return float(v) if array_dtype is np.float64 else v
        out = np.empty(math.prod(td[1]), dtype=array_dtype)
        for k in range(out.size):
            out[k] = next(it)
        return out.reshape(td[1])

    return rebuild(treedef, leaf)


def unflatten_parts(treedef, parts):
    """The tree of `treedef` with one part per number *or array* (as
    flatten returned them, or leaves / gradients made from them)."""
    it = iter(parts)
    return rebuild(treedef, lambda td: next(it))


def numbers(parts):
    """The flat float64 vector of flatten's parts."""
    if not parts:
        return np.zeros(0)
    return np.concatenate([np.ravel(p) for p in parts]).astype(np.float64, copy=False)


def items(parts):
    """flatten's parts as one flat list (arrays contribute their elements)."""
    out = []
    for p in parts:
        out.extend(np.ravel(p).tolist() if isinstance(p, np.ndarray) else (p,))
    return out


def shape(treedef):
    """The array shape a tree stands for in a Jacobian: () for a number,
    the array's shape, (len,) for a list or tuple of numbers, else (size,)."""
    if treedef == "f":
        return ()
    if treedef[0] == "a":
        return tuple(treedef[1])
    return (size(treedef),)


def shapeless(treedef):
    """treedef without its shapes: what a compiled function's arguments keep
    from call to call, where a new shape records again (as jax.jit traces
    again). An array's shape is a shape, and a number is an array of shape
    (), so a 0-d array may stand where a float was and the other way round.
    A list's or tuple's length is structure, as a dict's keys are: the
    lists fastad's examples pass hold a fixed set of parameters that f
    reads by position (x[0] * x[1]), and a count that changes is a mistake
    better named than met inside f. A vector whose length varies from call
    to call (a minibatch) is an ndarray."""
    if treedef == "f" or treedef[0] == "a":
        return "a"
    if treedef[0] is dict:
        return (dict, treedef[1], tuple([shapeless(kid) for kid in treedef[2]]))
    return (treedef[0], tuple([shapeless(kid) for kid in treedef[1]]))


def describe(treedef):
    """A short human description of a structure, for error messages."""
    if treedef == "f":
        return "float"
    if treedef[0] == "a":
        return f"array{treedef[1]}"
    if treedef[0] is dict:
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in zip(treedef[1], treedef[2])) + "}"
    kind, kids = treedef
    parts = [describe(k) for k in kids]
    if len(parts) > 3 and len(set(parts)) == 1:  # [10000 x float], not ten thousand names
        inner = f"{len(parts)} x {parts[0]}"
    else:
        inner = ", ".join(parts)
        if len(inner) > 200:
            inner = inner[:200] + f"... ({len(parts)} items)"
    return f"[{inner}]" if kind is list else f"({inner})"


def scalar_output(out, transform):
    """The output of a function under `grad`: a Var or a plain number.
    Anything with more than one element is an error that points to jacobian."""
    from fastad._core import Array, Var
    if type(out) is Var:
        return out
    if type(out) is Array and out.size == 1:
        return out.item()
    if isinstance(out, np.ndarray) and out.size == 1 and out.dtype == object:
        return scalar_output(out.reshape(()).item(), transform)
    if isinstance(out, (float, int, np.floating, np.integer)) and not isinstance(out, (bool, np.bool_)):
        return float(out)  # the output does not depend on the inputs
    if isinstance(out, np.ndarray) and out.size == 1 and out.dtype.kind in _REAL_KINDS:
        return float(out.reshape(()))
    shape = f" of shape {out.shape}" if isinstance(out, np.ndarray) else ""
    raise ValueError(
        f"{transform} needs a function with a scalar output, but it returned a "
        f"{type(out).__name__}{shape}; for a vector output use fad.jacobian (or fad.vjp)")

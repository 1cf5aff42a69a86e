"""Arguments as trees: floats and arrays nested in lists, tuples and dicts.

`grad` turns the differentiated arguments into leaves, calls the function,
and hands the leaves' gradients back in the arguments' own structure.
"""
import numpy as np

from fastad._core import Var

_REAL_KINDS = "fiu"  # float, signed and unsigned integer dtypes are taken as float64


def to_leaves(tree, where):
    """(tree with every number replaced by a leaf Var, list of those Vars, rebuild).

    `rebuild(values)` puts one value per leaf (in the list's order) back
    into the tree's structure: floats for numbers, float64 arrays for arrays.
    `where` names the argument in error messages.
    """
    leaves = []

    def convert(node, path):
        if isinstance(node, (bool, np.bool_)):
            raise TypeError(f"{path} is a bool; fastad differentiates real numbers")
        if isinstance(node, (float, int, np.floating, np.integer)):
            leaves.append(Var(float(node)))
            k = len(leaves) - 1
            return leaves[-1], lambda vals: float(vals[k])
        if isinstance(node, np.ndarray):
            if node.dtype.kind not in _REAL_KINDS:
                raise TypeError(f"{path} is an array of dtype {node.dtype}; fastad needs real numbers "
                                "(float64, or integers, which are taken as float64)")
            start = len(leaves)
            flat = node.astype(np.float64).ravel()
            leaves.extend(Var(float(v)) for v in flat)
            vars_ = np.empty(node.shape, dtype=object)
            vars_.ravel()[:] = leaves[start:] if flat.size else []
            stop, shape = len(leaves), node.shape
            return vars_, lambda vals: np.array(vals[start:stop], dtype=np.float64).reshape(shape)
        if isinstance(node, (list, tuple)):
            parts = [convert(v, f"{path}[{i}]") for i, v in enumerate(node)]
            kind = type(node)
            made = [p[0] for p in parts]
            made = made if kind is list else (kind(*made) if hasattr(kind, "_fields") else kind(made))
            return made, lambda vals: (lambda items: items if kind is list else
                                       (kind(*items) if hasattr(kind, "_fields") else kind(items)))(
                [p[1](vals) for p in parts])
        if isinstance(node, dict):
            parts = {key: convert(v, f"{path}[{key!r}]") for key, v in node.items()}
            return ({key: p[0] for key, p in parts.items()},
                    lambda vals: {key: p[1](vals) for key, p in parts.items()})
        raise TypeError(f"{path} is a {type(node).__name__}; fastad differentiates floats, "
                        "float64 arrays, and lists / tuples / dicts of them")

    made, rebuild = convert(tree, where)
    return made, leaves, rebuild


def scalar_output(out, transform):
    """The output of a function under `grad`: a Var or a plain number.
    Anything with more than one element is an error that points to jacobian."""
    if type(out) is Var:
        return out
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

"""Check a gradient against central finite differences.

``check_grad(f, *args)`` differentiates ``f`` with respect to every argument
with the engine's ``grad`` and compares each component with a central
difference taken on plain floats / ndarrays, so the check is independent of
the derivative rules of both engines (the third oracle of STYLE.md lesson 2).
"""
import numpy as np

__all__ = ["check_grad"]


def _default_engine():
    import fastad  # lazily: the compiled core may not be built yet

    return fastad


# --- a tiny pytree: floats and float ndarrays nested in lists/tuples/dicts ---

def _flatten(tree, path=()):
    """Yield ``(path, leaf)`` for every float or ndarray leaf, in order."""
    if isinstance(tree, dict):
        for key in tree:
            yield from _flatten(tree[key], path + (key,))
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from _flatten(item, path + (i,))
    elif isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "fiu":
            raise TypeError(
                f"check_grad: an ndarray argument must hold numbers, got dtype {tree.dtype}"
            )
        yield path, tree
    elif isinstance(tree, (bool, np.bool_)) or not isinstance(tree, (int, float, np.number)):
        raise TypeError(
            "check_grad: arguments must be floats, float ndarrays, or lists/tuples/dicts "
            f"of them; got {type(tree).__name__}"
        )
    else:
        yield path, tree


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _replace(tree, path, new):
    """A copy of ``tree`` with the leaf at ``path`` replaced by ``new``."""
    if not path:
        return new
    key, rest = path[0], path[1:]
    if isinstance(tree, dict):
        out = dict(tree)
        out[key] = _replace(tree[key], rest, new)
        return out
    items = list(tree)
    items[key] = _replace(tree[key], rest, new)
    if not isinstance(tree, tuple):
        return items
    return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)  # a namedtuple: fields


def _as_float(out):
    try:
        if isinstance(out, np.ndarray) and out.size == 1:  # as grad takes a one-element array
            out = out.reshape(())
        return float(out)
    except TypeError:
        raise ValueError(
            "check_grad: f must return a scalar; for vector outputs use jacobian"
        ) from None


def check_grad(f, *args, eps=None, engine=None):
    """Max relative error between ``grad(f)`` and central finite differences.

    Every argument is differentiated. Arguments may be floats, float
    ndarrays (each element is differenced on its own) or lists / tuples /
    dicts of them. For an input ``x`` the step is
    ``h = eps**(1/3) * max(1, |x|)`` with ``eps`` the machine epsilon of
    float64 unless given; the error of one component is
    ``|g - fd| / max(1, |g|, |fd|)`` (relative for large derivatives,
    absolute for small ones, so an exact zero derivative does not turn
    rounding noise into an error of 1); above 1e-5, the step
    ``eps**(1/3)`` is tried too and the lesser error kept. Expect about 1e-9 to 1e-6 for
    a correct gradient of a smooth function; a wrong rule gives O(1).

    ``engine`` is the module whose ``grad`` is checked: ``fastad`` (the
    default) or ``fastad.reference``.

    >>> import fastad.reference as ref
    >>> err = check_grad(lambda x, y: x * y + ref.sin(x), 2.0, 3.0,
    ...                  engine=ref)
    >>> err < 1e-8
    True
    >>> check_grad(lambda x: x * x, 3.0, engine=ref) < 1e-8
    True
    """
    if engine is None:
        engine = _default_engine()
    if not args:
        raise TypeError("check_grad: give at least one argument to differentiate")
    if eps is None:
        eps = float(np.finfo(np.float64).eps)
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"check_grad: eps must be positive, got {eps!r}")
    try:
        list(_flatten(args))  # validates the arguments (a complex array would lose its imaginary part below)
    except RecursionError:  # a list that holds itself (as fad.grad says it)
        raise ValueError("check_grad: an argument is nested too deeply, or holds itself") from None
    args = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
    leaves = list(_flatten(args))

    argnums = tuple(range(len(args)))
    grads = engine.grad(f, argnums=argnums)(*args)
    if len(args) == 1 and not (isinstance(grads, tuple) and len(grads) == 1):
        # an engine that returns the bare gradient for a single argnum
        grads = (grads,)
    grads = tuple(grads)

    base = float(eps) ** (1.0 / 3.0)
    worst = 0.0
    for path, leaf in leaves:
        g_leaf = _get(grads, path)
        if isinstance(leaf, np.ndarray):
            g_arr = np.asarray(g_leaf, dtype=np.float64)
            if g_arr.shape != leaf.shape:
                raise ValueError(
                    f"check_grad: gradient shape {g_arr.shape} != argument shape {leaf.shape}"
                )
            for idx in np.ndindex(leaf.shape):
                x = float(leaf[idx])
                h = base * max(1.0, abs(x))

                def at(v, idx=idx):
                    arr = leaf.astype(np.float64)  # a copy; an int or float32 leaf would round the step
                    arr[idx] = v
                    return _as_float(f(*_replace(args, path, arr)))

                worst = max(worst, _err(float(g_arr[idx]), at, x, h, base))
        else:
            x = float(leaf)
            h = base * max(1.0, abs(x))

            def at(v):
                return _as_float(f(*_replace(args, path, v)))

            worst = max(worst, _err(float(g_leaf), at, x, h, base))
    return worst


def _err(g, at, x, h, floor):
    """The error of g against central differences at step h (relative to
    |x|) or, where that is above 1e-5, at step floor (the step at |x| <= 1),
    whichever is less: at a large |x| the relative step can span periods of
    an oscillating f (sin at 1e8: 605), the absolute one is too short for
    a steep f (x**3 at 1e8). Two steps, not a search, so a wrong derivative
    cannot meet some step's difference by chance."""
    err, _ = _err_at(g, at, x, h)
    floor = max(floor, 16.0 * float(np.spacing(abs(x))))  # a step x +- h can still take
    if err > 1e-5 and h > floor:
        short, resolved = _err_at(g, at, x, floor)
        if resolved:  # (f's two values apart by more than their rounding: 1e12 + x at 1e8 is not)
            err = min(err, short)
    return err


def _err_at(g, at, x, h):
    """(error, whether f's two values differ by more than their rounding)."""
    # (x + h) - (x - h) is the step actually taken, after rounding of x +- h
    xp, xm = x + h, x - h
    fp, fm = at(xp), at(xm)
    fd = (fp - fm) / (xp - xm)
    resolved = abs(fp - fm) > 64.0 * float(np.spacing(max(abs(fp), abs(fm))))
    if g == fd:  # also covers equal infinities
        return 0.0, resolved
    denom = max(1.0, abs(g), abs(fd))
    err = abs(g - fd) / denom
    return (float("inf") if err != err else err), resolved  # nan (e.g. inf - inf) counts as a failure

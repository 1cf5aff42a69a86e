"""When NumPy, not the user, turns a differentiated value into a float.

`float(v)` of a Var is its number: the user's own way out of the graph
(API.md), a constant to the derivative. NumPy calls the same `float(v)`
when it stores v in a float array: `b[i] = v` for a preallocated
`b = np.zeros(n)`, a NumPy function that fills a float array from its
operands (np.gradient, np.fill_diagonal), `astype(float)`. There the
derivative was lost without a word (the gradient of x0**3 built through
`b[0] = x[0]**2` came out as if b[0] were the constant 1). Which of the two
it is shows in the Python frame that is running when `float(v)` is called:
a store into a subscript, or code of NumPy's own (or of the forward-mode
twin's NumPy shim, fastad/_scalarized.py), is NumPy's. Pure Python: the
compiled core and the reference engine both ask here.
"""
import dis

_NUMPY_SHIMS = ("fastad._scalarized",)
# NumPy code that reads a number to show or compare it, not to compute
# with it (np.format_float_positional(loss), np.savetxt, np.testing)
_NUMPY_READERS = ("arrayprint", "npyio", "numpy.testing")
# b[i] = v, b[1:3] = x (STORE_SLICE from 3.12), b.flat = x
_STORES = {dis.opmap[name] for name in ("STORE_SUBSCR", "STORE_SLICE", "STORE_ATTR") if name in dis.opmap}

CAST_REFUSED = ("NumPy turned a value that fastad is differentiating into a float, which drops its "
                "derivative: a float array's element set to it (b[i] = v, b[:] = x), a NumPy "
                "function that fills a float array (np.gradient, np.fill_diagonal), or astype(float). "
                "Build the array with fad.stack or fad.concatenate, in a list, or in an object array "
                "(np.empty(n, dtype=object)); or store v.value where no derivative is needed "
                "(float(v) of your own is allowed: a constant to the derivative)")


def numpy_is_casting(frame):
    """Whether the float(v) being called now comes from NumPy (a store into
    an array element, or NumPy's own code) rather than from the user's own
    float(v), np.float64(v) or a callback of theirs: frame is the innermost
    Python frame, the one whose operation called float(v)."""
    if frame is None:
        return False
    name = frame.f_globals.get("__name__")
    if not isinstance(name, str):  # (exec with globals of one's own)
        name = ""
    if name == "numpy" or name.startswith("numpy.") or name in _NUMPY_SHIMS:
        return not any(reader in name for reader in _NUMPY_READERS)
    code = frame.f_code.co_code
    return 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] in _STORES

"""A sparse Hessian from a few Hessian-vector products.

A trace's Hessian is a sum over its rows: H = sum_i adj_i J_i^T (d2 phi_i)
J_i, where J_i holds the derivatives of row i's arguments with respect to
the inputs. So the inputs a row's arguments depend on, taken in pairs, bound
that row's part of the pattern, and a row whose second derivatives are zero
(a sum, a difference, a product with a constant, a piecewise-linear kink, a
guard) adds nothing. The pattern found so is a superset of the true one,
which is all a compression needs.

Columns whose patterns share no row may share one product: H @ (e_j + e_k)
holds column j in j's rows and column k in k's (Curtis, Powell and Reid).
A greedy distance-2 coloring groups them (Gebremedhin, Manne and Pothen,
"What color is your Jacobian?", SIAM Review 2005). Rosenbrock's tridiagonal
Hessian takes 3 products at any size instead of n. A column with many
entries gets a product of its own, and the entries of its row are read from
it by symmetry, so an arrow (one input coupled to all) takes 2.
"""
import numpy as np

from fastad import ops as _ops
from fastad._replay import live_rows

# A row depending on more inputs than this makes the Hessian too dense to
# compress (and the pattern too costly to track): the caller goes dense.
MAX_DEPENDENCIES = 64
# At most this many (row, input) dependencies are tracked, a few hundred MB
# of sets at worst; a bigger pattern goes dense.
PATTERN_BUDGET = 4_000_000

_CODE = {s.name: s.code for s in _ops.OPS}
# Ops whose second derivatives are zero everywhere (on each piece).
_FLAT = frozenset(s.code for s in _ops.OPS if s.kind in ("input", "kink", "guard")) | {
    _CODE["add"], _CODE["sub"], _CODE["neg"]}
_EMPTY = frozenset()


class HessianPlan:
    """colors[j]: the product that column j of the Hessian comes from;
    rows, cols: every entry that can be nonzero; heavy[j]: column j has a
    product of its own, and its row is read from there."""

    def __init__(self, colors, rows, cols, heavy):
        self.colors = colors
        self.n_colors = int(colors.max()) + 1 if len(colors) else 0
        self.rows, self.cols = rows, cols
        # where each entry is read: H[r, c] from product colors[c] at row r,
        # or, in a heavy row next to a light column, H[c, r] from r's product
        by_symmetry = heavy[rows] & ~heavy[cols]
        self.read_rows = np.where(by_symmetry, cols, rows)
        self.read_products = np.where(by_symmetry, colors[rows], colors[cols])

    def seeds(self):
        """The (n, n_colors) directions: column c sums the basis vectors of color c."""
        S = np.zeros((len(self.colors), self.n_colors))
        S[np.arange(len(self.colors)), self.colors] = 1.0
        return S

    def recover(self, HS):
        """The Hessian from HS = H @ seeds()."""
        H = np.zeros((len(self.colors), len(self.colors)))
        H[self.rows, self.cols] = HS[self.read_rows, self.read_products]
        return H


def hessian_plan(op, a, b, in_rows, out_row, max_dependencies=MAX_DEPENDENCIES):
    """A HessianPlan for the output at row out_row of a trace (columns op, a,
    b; in_rows[k] the INPUT row of input k, -1 if unused), or None where
    compression does not pay: a row depends on more than max_dependencies
    inputs (or half of them), the pattern outgrows PATTERN_BUDGET, or the
    coloring needs more than half as many products as there are inputs."""
    n_in = len(in_rows)
    if out_row < 0 or n_in < 2:
        return None
    input_of = {int(row): k for k, row in enumerate(in_rows) if row >= 0}
    reach = np.flatnonzero(live_rows(op, a, b, [out_row])).tolist()
    op_l, a_l, b_l = op.tolist(), a.tolist(), b.tolist()
    mul, div = _CODE["mul"], _CODE["div"]
    curved = [i for i in reach if not (op_l[i] in _FLAT or (op_l[i] == mul and (a_l[i] < 0 or b_l[i] < 0))
                                       or (op_l[i] == div and b_l[i] < 0))]
    # Only the rows a curved row reads, directly or not, need their inputs
    # (a long sum's partial sums do not: tracking them would cost n^2).
    args = [r for i in curved for r in (a_l[i], b_l[i]) if r >= 0]
    needed = np.flatnonzero(live_rows(op, a, b, args)).tolist() if args else []
    # A needed row's inputs end up in a curved row's, all pairs of which
    # need distinct colors: more than n_in / 2 of them cannot pay.
    limit, budget = min(max_dependencies, n_in // 2), PATTERN_BUDGET
    dep = {}  # row -> the inputs it depends on
    for i in needed:
        if i in input_of:
            dep[i] = frozenset((input_of[i],))
            continue
        da, db = dep.get(a_l[i], _EMPTY), dep.get(b_l[i], _EMPTY)
        d = da | db if da and db else da or db  # a chain of unary rows shares one set
        budget -= len(d)
        if len(d) > limit or budget < 0:
            return None
        dep[i] = d
    neighbours = [set() for _ in range(n_in)]  # column -> the rows where it can be nonzero
    for i in curved:
        d = dep.get(a_l[i], _EMPTY) | dep.get(b_l[i], _EMPTY)
        for j in d:
            neighbours[j] |= d
    # A column with many entries (one input coupled to all: an arrow) gets
    # a product of its own; then the others need not avoid each other in
    # its row, whose entries come from that product, by symmetry. A band
    # five or more wide has only such columns at a small n (a product each:
    # dense), so the coloring with no heavy column is tried too, and the
    # one with fewer products kept.
    heavy = np.array([len(rows) > max(4, n_in ** 0.5) for rows in neighbours])
    colors = _coloring(neighbours, heavy)
    if heavy.any():
        none_heavy = np.zeros(n_in, bool)
        light = _coloring(neighbours, none_heavy)
        if light.max() < colors.max():
            colors, heavy = light, none_heavy
    if 2 * (int(colors.max()) + 1) > n_in:
        return None
    cols = np.array([c for c in range(n_in) for _ in neighbours[c]], np.intp)
    rows = np.array([r for c in range(n_in) for r in neighbours[c]], np.intp)
    return HessianPlan(colors, rows, cols, heavy)


def _coloring(neighbours, heavy):
    """A product (color) per heavy column, then greedy distance-2 colors for
    the light ones, which must differ where two share a light row."""
    colors = np.full(len(neighbours), -1, np.intp)
    colors[heavy] = np.arange(int(heavy.sum()))
    for j in np.flatnonzero(~heavy).tolist():
        taken = {colors[k] for r in neighbours[j] if not heavy[r] for k in neighbours[r] if not heavy[k]}
        c = int(heavy.sum())
        while c in taken:
            c += 1
        colors[j] = c
    return colors

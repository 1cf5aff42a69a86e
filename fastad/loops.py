"""Finding the loops in a trace, so a replay can run them op by op.

A Python loop recorded on a tape leaves the same rows again and again:
Rosenbrock's `for i in range(n - 1)` leaves nine rows an iteration, each
row's arguments the same row of the iteration before plus a fixed stride.
A replay interprets such rows one at a time, a switch on every row. Seen as
a loop, the same rows run as P small loops instead, one per row of the body
("op-major", the rows rerolled into a loop of vector code): each of them one
operation over all iterations, with no dispatch, and GCC keeps the constant
strides in registers (fastad/_loop_sweeps.pxd).

Not every body row can run that way. A row that reads a value carried from
an earlier iteration (Rosenbrock's running total) must run in the
recording's order; such rows are the loop's "serial" rows, interpreted as
before. The others ("vector" rows) read only constants, inputs, rows before
the loop and vector rows of their own iteration.

The reverse sweep must add every adjoint in the order the recording's
sweep does, so that a replayed gradient is bit for bit the gradient of
`fad.grad`. The vector rows' products for inputs and rows before the loop
(which other iterations read too) go into a scratch buffer first and are
added in the recording's order after each chunk of iterations. A loop is
kept only if `check_order` finds that, in its schedule, every adjoint gets
the same sums in the same order, and every row's value is made before it
is read; otherwise its rows stay as they are.

plan(...) returns the loops as four int32 tables (LOOP_COLUMNS,
VECTOR_COLUMNS, SERIAL_COLUMNS, DEFERRED_COLUMNS), which the Trace in
fastad/_replay.pyx keeps (a pickle carries the rows; loading plans again)
and hands to the loop sweeps.
"""
from collections import namedtuple

import numpy as np

# Lowered codes (fastad/_sweeps.pxd, SHAPES): bits for constant arguments.
A_CONST, B_CONST = 64, 128

MIN_ITERATIONS = 32  # shorter runs of rows are not worth a loop (nor the time to find it)
MAX_PERIOD = 32      # the longest loop body looked for, in rows
CHUNK_ROWS = 2048    # rows of a loop run per chunk: its values and adjoints stay in L1/L2
SCRATCH = 2048       # doubles of the reverse sweep's deferred products (fastad/_loop_sweeps.pxd)
PREFIX_CHUNKS = 3    # chunks of a long loop checked first (checks_out)

# one row of the loop table per loop, one row of the vector table per vector body row
LOOP_COLUMNS = ("start", "period", "iterations", "chunk", "vec_lo", "vec_hi", "ser_lo", "ser_hi",
                "def_lo", "def_hi", "chain")
VECTOR_COLUMNS = ("offset", "code", "a", "a_stride", "b", "b_stride", "a_slot", "b_slot")
DEFERRED_COLUMNS = ("target", "stride")  # per scratch slot, in the order they are added
SERIAL_COLUMNS = ("offset", "other", "other_stride", "other_slot")  # the last three for a chain
OP_ADD, OP_SUB = 1, 2
CONST, INTERNAL = -2, -1  # a_slot / b_slot: no adjoint, or added straight into adj; >= 0: deferred
DEFER = -3  # (while classifying)


def plan(code, la, lb, branch0, find=True):
    """(loops, vectors, serial, deferred): the loops of a lowered trace worth
    running op-major, as int32 tables (columns LOOP_COLUMNS, VECTOR_COLUMNS,
    DEFERRED_COLUMNS, SERIAL_COLUMNS)."""
    code = np.asarray(code)
    la, lb = np.asarray(la, np.int64), np.asarray(lb, np.int64)
    loops, vectors, serial, deferred = [], [], [], []
    is_input = code == 0
    for start, period, iterations in candidates(code, la, lb) if find else ():
        # every phase of the body (where its first row is), most vector rows first
        phases = [schedule(code, la, lb, branch0, is_input, start + p, period, iterations - (p > 0))
                  for p in range(period if iterations > MIN_ITERATIONS else 1)]
        phases = sorted((b for b in phases if b is not None), key=lambda b: -len(b.vec))
        best = next((b for b in phases if checks_out(code, la, lb, b)), None)
        if best is None:
            continue
        loops.append((best.r0, best.period, best.k, best.chunk, len(vectors), len(vectors) + len(best.vec),
                      len(serial), len(serial) + len(best.ser), len(deferred),
                      len(deferred) + len(best.dfr), best.link))
        vectors.extend(best.vec)
        serial.extend(best.ser)
        deferred.extend(best.dfr)
    return (np.array(loops, np.int32).reshape(-1, len(LOOP_COLUMNS)),
            np.array(vectors, np.int32).reshape(-1, len(VECTOR_COLUMNS)),
            np.array(serial, np.int32).reshape(-1, len(SERIAL_COLUMNS)),
            np.array(deferred, np.int32).reshape(-1, len(DEFERRED_COLUMNS)))


def candidates(code, la, lb):
    """(start, period, iterations) of runs of rows that repeat with a
    period of at most MAX_PERIOD, at least MIN_ITERATIONS times, each row's
    arguments moving by a fixed stride; the longest runs first, none
    overlapping another."""
    n = len(code)
    taken = np.zeros(n, bool)
    found = []
    for period in range(1, min(MAX_PERIOD, n // MIN_ITERATIONS) + 1):
        for lo, hi in repeating(code, period, (MIN_ITERATIONS - 1) * period):
            # a constant argument must be the same constant in every iteration
            c = code[lo:hi]
            same = ((c & A_CONST) == 0) | (la[lo:hi] == la[lo + period:hi + period])
            same &= ((c & B_CONST) == 0) | (lb[lo:hi] == lb[lo + period:hi + period])
            for lo2, hi2 in runs(same, (MIN_ITERATIONS - 1) * period):
                found.append((hi2 - lo2 + period, lo + lo2, period))
    found.sort(key=lambda f: (-f[0], f[2]))
    out = []
    for rows, lo, period in found:
        lo, k = strided_run(la, lb, lo, period, rows // period)
        if k < MIN_ITERATIONS or taken[lo:lo + k * period].any():
            continue
        taken[lo:lo + k * period] = True
        out.append((lo, period, k))
    out.sort()
    return out


def repeating(code, period, min_len):
    """[lo, hi) of the runs of rows whose code is that of the row period
    later, at least min_len long. A window of min_len rows is one run when
    the count of differing rows does not grow across it: no per-run work
    for the many short runs of a trace with no loop."""
    m = len(code) - period
    if m < min_len:
        return []
    differ = np.zeros(m + 1, np.int32)
    np.cumsum(code[:m] != code[period:], out=differ[1:])
    full = np.flatnonzero(differ[min_len:] == differ[:-min_len])  # rows i..i+min_len-1 all repeat
    if not full.size:
        return []
    breaks = np.flatnonzero(np.diff(full) > 1)
    starts = np.concatenate(([full[0]], full[breaks + 1]))
    ends = np.concatenate((full[breaks], [full[-1]])) + min_len
    return zip(starts.tolist(), ends.tolist())


def runs(mask, min_len):
    """[lo, hi) of the runs of True in mask at least min_len long, longest first."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    lo, hi = edges[::2], edges[1::2]
    keep = np.flatnonzero(hi - lo >= min_len)
    keep = keep[np.argsort(lo[keep] - hi[keep], kind="stable")]
    return zip(lo[keep].tolist(), hi[keep].tolist())


def strided_run(la, lb, start, period, k):
    """(start, iterations) of the longest run among the k iterations from
    row start in which every argument moves by one stride from each
    iteration to the next."""
    rows = start + period * np.arange(k)[:, None] + np.arange(period)
    steps = np.concatenate([np.diff(arg[rows], axis=0) for arg in (la, lb)], axis=1)
    even = (steps[1:] == steps[:-1]).all(axis=1)  # iterations t, t + 1 and t + 2 agree
    for lo, hi in runs(even, 1):
        return start + lo * period, hi - lo + 2
    return start, min(k, 2)


# A loop's rows as the loop sweeps run them: the rows of its three tables,
# where it is, its chunk, link (see chain) and slots: (body offset, side,
# scratch slot) of every deferred product.
Schedule = namedtuple("Schedule", "vec ser dfr r0 period k chunk link slots")


def schedule(code, la, lb, branch0, is_input, r0, period, k):
    """The loop from row r0, period rows a body, k iterations, as vector and
    serial rows: (vector table rows, serial offsets, deferred table rows, r0,
    period, k, chunk), or None when no row can run as a vector row. check_order
    tells whether it computes what the recording does."""
    if k < MIN_ITERATIONS:
        return None
    t = np.arange(k)
    kind = [None] * period  # "input", "vector" or "serial"
    vec, ser = [], []
    for j in range(period):
        r = r0 + j
        if is_input[r]:
            kind[j] = "input"
            continue
        slots = [] if (branch0[r + period * t] < 0).all() else None  # a kink runs serial
        for arg, bit in ((la, A_CONST), (lb, B_CONST)):
            if slots is None:
                break
            first = int(arg[r])
            if code[r] & bit:
                slots += [first, 0, CONST]
                continue
            stride = int(arg[r + period] - first)
            targets = first + stride * t
            if is_input[targets].all() or targets.max() < r0:
                slots += [first, stride, DEFER]
            elif stride == period and r0 <= first < r and kind[first - r0] == "vector":
                slots += [first, stride, INTERNAL]
            else:
                slots = None  # reads a value carried from an earlier iteration
        kind[j] = "vector" if slots is not None else "serial"
        if slots is not None:
            vec.append([j, int(code[r])] + slots)
        else:
            ser.append(j)
    if not vec:
        return None
    link, ser = chain(code, la, lb, r0, period, k, ser, is_input)
    # The deferred products are added slot by slot, each slot's iterations
    # from the top: a target read in several iterations (x[i] and x[i + 1])
    # gets its terms from the latest iteration first when the slots go by
    # their first target up (check_order makes sure). A row's [.., first,
    # stride, DEFER ..] gets its slot in place of DEFER.
    defer = sorted((row[col - 2], -row[0], col, row) for rows, cols in ((vec, (4, 7)), (ser, (3,)))
                   for row in rows for col in cols if row[col] == DEFER)
    dfr, slots = [], []
    for slot, (_, _, col, row) in enumerate(defer):
        row[col] = slot
        dfr.append((row[col - 2], row[col - 1]))
        slots.append((row[0], {4: 0, 7: 1}.get(col, 1 - row[-1]), slot))
    vec = [(row[0], row[1], row[2], row[3], row[5], row[6], row[4], row[7]) for row in vec]
    ser = [tuple(row[:4]) for row in ser]
    chunk = max(1, min(k, CHUNK_ROWS // period, SCRATCH // max(len(dfr), 1)))
    return Schedule(vec, ser, dfr, r0, period, k, chunk, link, slots)


def chain(code, la, lb, r0, period, k, ser, is_input):
    """(link, serial table rows) of a loop's serial rows. link is op * 2 +
    side when they are a chain: each an add (or each a subtraction) that
    reads the serial row just before it (in the recording's order) on the
    same side (0: a, 1: b), and on the other a row with a stride or a
    constant: a running sum, `total = total + term`. Such a loop runs its
    serial rows without dispatch (fastad/_loop_sweeps.pxd, CHAINS), and the
    products for an input or a row before the loop are deferred as a vector
    row's are. Else link is -1, and the rows are interpreted. A row:
    [offset, other, other stride, slot (CONST, INTERNAL or DEFER), side]."""
    rows = []
    links = set()
    for n, j in enumerate(ser):
        r = r0 + j
        before = r0 + (ser[n - 1] if n else ser[-1] - period)  # the serial row before, as of iteration 0
        op, args = int(code[r]) & ~(A_CONST | B_CONST), ((la, A_CONST), (lb, B_CONST))
        sides = [s for s, (arg, bit) in enumerate(args)
                 if not code[r] & bit and arg[r] == before and arg[r + period] - arg[r] == period]
        if op not in (OP_ADD, OP_SUB) or len(sides) != 1:
            return -1, [[j, 0, 0, CONST, 0] for j in ser]
        arg, bit = args[1 - sides[0]]
        first = int(arg[r])
        if code[r] & bit:
            rows.append([j, first, 0, CONST, sides[0]])
        else:
            stride = int(arg[r + period] - first)
            targets = first + stride * np.arange(k)
            ext = is_input[targets].all() or targets.max() < r0
            rows.append([j, first, stride, DEFER if ext else INTERNAL, sides[0]])
        links.add(op * 2 + sides[0])
    if len(links) != 1:
        return -1, [[j, 0, 0, CONST, 0] for j in ser]
    return links.pop(), rows


def checks_out(code, la, lb, sched):
    """check_order, first on the loop's first few chunks alone: most
    schedules it refuses, it refuses there already, and at the cost of the
    whole loop a refused schedule would be paid for once per phase tried."""
    head = min(sched.k, PREFIX_CHUNKS * sched.chunk)
    return (head == sched.k or check_order(code, la, lb, sched._replace(k=head))) \
        and check_order(code, la, lb, sched)


def check_order(code, la, lb, sched):
    """Whether the loop's schedule (fastad/_loop_sweeps.pxd) computes every
    value after the values it reads, and adds every adjoint's terms in the
    order the recording's reverse sweep adds them: checked on every row of
    the loop, not argued from the body."""
    vec, r0, period, k, chunk = sched.vec, sched.r0, sched.period, sched.k, sched.chunk
    n_rows = period * k
    rows = r0 + np.arange(n_rows)
    t, j = np.divmod(np.arange(n_rows), period)
    c = t // chunk
    is_vec = np.zeros(period, bool)
    is_vec[[v[0] for v in vec]] = True
    slot = np.full((period, 2), -1)
    for j_, side, n in sched.slots:
        slot[j_, side] = n
    live = code[rows] != 0
    # Forward: per chunk, the vector rows by body offset, then the serial rows in order.
    fwd = np.where(is_vec[j], c * 3 * n_rows + j * k + t, c * 3 * n_rows + n_rows + (rows - r0))
    fwd[~live] = -1  # inputs: set before the sweep

    def made(idx):  # when rows idx (each before the loop's end) get their values
        out = np.full(idx.shape, -1, np.int64)  # rows before the loop: before it
        inside = idx >= r0
        out[inside] = fwd[idx[inside] - r0]
        return out

    # Reverse: per chunk from the top, the serial rows down, the vector rows by body offset
    # down, then the deferred products slot by slot, each iteration down.
    top = (k - 1) // chunk
    base = (top - c) * 4 * n_rows
    back_row = np.where(is_vec[j], base + n_rows + (period - 1 - j) * k + t,
                        base + (r0 + n_rows - 1 - rows))
    terms = []  # (target, recording's order, schedule's order)
    for s, (arg, bit) in enumerate(((la, A_CONST), (lb, B_CONST))):
        has = live & ((code[rows] & bit) == 0)
        tgt = arg[rows[has]]
        if (made(tgt) >= fwd[has]).any():
            return False  # a value read before it is made
        to = slot[j[has], s]
        later = np.where(to >= 0, (base + 2 * n_rows + (k - 1 - t))[has] + to * k, back_row[has])
        terms.append((tgt, 2 * (r0 + n_rows - rows[has]) + s, 2 * later + s))
    tgt, orig, new = (np.concatenate(x) for x in zip(*terms))
    order = np.lexsort((orig, tgt))
    tgt, new = tgt[order], new[order]
    same = tgt[1:] == tgt[:-1]
    if (new[1:][same] <= new[:-1][same]).any():
        return False  # some adjoint would get its terms in another order
    # and every row in the loop passes its adjoint on only after its last term came in
    inside = tgt >= r0
    inside[inside] = live[tgt[inside] - r0]
    return not (new[inside] >= 2 * back_row[tgt[inside] - r0]).any()

# cython: language_level=3, embedsignature=True, cdivision=True
"""fastad's compiled core: the tape, the Var and Array handles, recording.

Recording: every operator on a Var computes its value and its partial
derivatives with the op's rules (fastad/_rules.pxd) and appends one row
(op, a, b, da, db) to a Tape. Sweeping: `jacobian_sweep` (fastad/_sweeps.pxd)
walks the rows backwards from the output in C, without the GIL, multiplying
each row's stored partials by its adjoint; an array row's rule runs where
the loop meets it.

One extension module, in these parts (textual includes, so calls between
them are plain C calls):

    _tape.pxi         the Tape and each thread's current tape
    _record.pxi       appending a row on the tape its arguments share
    _var.pxi          Var, the scalar handle
    _math.pxi         the math functions, on Vars, Arrays and numbers
    _grad.pxi         grad()'s hot path for flat float arguments
    _array.pxi        Array, the ndarray handle, and its rows
    _elementwise.pxi  elementwise ops on whole arrays, in C
    _array_replay.pxi fad.compile's replay of recordings with array rows
"""
cimport cython
from cpython.ref cimport Py_REFCNT
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uint8_t, uint64_t, INT32_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
from libc.math cimport pow, NAN

import math
import sys
import threading
from numbers import Real

import numpy as np
cimport numpy as cnp

from fastad._ops cimport *
from fastad._rules cimport op_value, op_partials, op_record, op_branch, op_piecewise, Partials
from fastad._sweeps cimport branch_sweep, jacobian_sweep, value_sweep, SINKS
from fastad import ops as _ops_table
from fastad._numpy_casts import CAST_REFUSED, numpy_is_casting


class FastADError(Exception):
    """Misuse of a tape: a consumed graph, mixed tapes, a graph too large.

    >>> z = fad.Var(2.0) * 3.0
    >>> z.backward()
    >>> z.backward()
    Traceback (most recent call last):
    ...
    fastad._core.FastADError: backward() was already called on this graph and its tape was released; pass retain_graph=True to the first backward() to sweep it again (graphs built outside a `with fad.Tape()` block share the thread's tape: the first backward() releases all of them; give each its own block)
    """


class NanError(FastADError, FloatingPointError):
    """debug_nans: an op made a nan from inputs with no nan (a
    FloatingPointError too, as NumPy's np.seterr(invalid="raise") gives).

    >>> with fad.debug_nans():
    ...     fad.sqrt(-1.0)
    Traceback (most recent call last):
    ...
    fastad._core.NanError: fastad: op 'sqrt' made nan from inputs with no nan (-1.0,)
    """


class DropsDerivatives(TypeError):
    """An fad.Array turned into a plain ndarray of numbers (np.asarray(x,
    dtype=float)), which would drop its derivatives. (compile then tells a
    function that converts its argument from one that only needs NumPy an
    Array lacks: see compiled.record.)"""


MIXED_TAPES = ("these values were recorded on two different tapes (another thread, another "
               "`with fad.Tape()` block, or a graph already swept); an op can only combine "
               "values of one tape")
CONSUMED = ("this value belongs to a graph that backward() already swept and released; "
            "recompute it, or pass retain_graph=True to backward() to keep the graph")
SWEEPING = ("this tape is being swept in another thread: a tape takes one sweep at a time, "
            "and cannot grow while one runs; record each thread's graph on its own tape")
SWEPT_TWICE = ("backward() was already called on this graph and its tape was released; "
               "pass retain_graph=True to the first backward() to sweep it again (graphs "
               "built outside a `with fad.Tape()` block share the thread's tape: the first "
               "backward() releases all of them; give each its own block)")


# Rows a tape starts with, and the largest tape whose memory is kept for the
# next tape (a one-slot cache: building a fresh tape per grad() call would
# otherwise malloc and page-fault its arrays every time).
cdef enum:
    FIRST_ROWS = 256
    SPARE_MAX_ROWS = 1 << 18

cdef uint64_t _next_serial = 2
# A grad-made leaf whose value was set (Var.value) has this serial: on no
# tape now, but maybe on grad's before (input_row counts its next row there).
cdef enum:
    LEFT = 1
cdef bint _debug_nans = False
cdef list _array_rules = None  # op code -> its rule in fastad.array_rules.RULES, imported on first use
cdef int _no_grad_threads = 0  # threads inside `no_grad`: 0 skips the per-op check

cnp.import_array()

include "_tape.pxi"
include "_record.pxi"
include "_var.pxi"
include "_math.pxi"
include "_grad.pxi"
include "_array.pxi"
include "_elementwise.pxi"
include "_array_replay.pxi"

# cython: language_level=3
"""C-level mirror of fastad/ops.py: the row types and the op codes.

The numbers are a file format (compiled tapes pickle them): append, never
renumber. tests/test_ops.py checks every code here against ops.OPS.
"""
from libc.stdint cimport int32_t, uint8_t

ctypedef int32_t node_t  # a row index; -1 means "no argument" (or: the constant c)
ctypedef uint8_t op_t    # an op code, one of Op below

cdef enum Op:
    OP_INPUT = 0
    OP_ADD = 1
    OP_SUB = 2
    OP_MUL = 3
    OP_DIV = 4
    OP_POWER = 5
    OP_NEG = 6
    OP_SQUARE = 7
    OP_SQRT = 8
    OP_CBRT = 9
    OP_EXP = 10
    OP_EXPM1 = 11
    OP_LOG = 12
    OP_LOG1P = 13
    OP_LOG2 = 14
    OP_LOG10 = 15
    OP_SIN = 16
    OP_COS = 17
    OP_TAN = 18
    OP_ARCSIN = 19
    OP_ARCCOS = 20
    OP_ARCTAN = 21
    OP_SINH = 22
    OP_COSH = 23
    OP_TANH = 24
    OP_ERF = 25
    OP_SIGMOID = 26
    OP_RELU = 27
    OP_ABS = 28
    OP_SIGN = 29
    OP_MAXIMUM = 30
    OP_MINIMUM = 31
    OP_ARCTAN2 = 32
    OP_HYPOT = 33
    OP_LT = 34
    OP_LE = 35
    OP_GT = 36
    OP_GE = 37
    OP_EQ = 38
    OP_NE = 39
    OP_ARRAY_INPUT = 40
    OP_ELEM = 41
    OP_MAP = 42
    OP_MATMUL = 43
    OP_SUM = 44
    OP_AMAX = 45
    OP_AMIN = 46
    OP_PROD = 47
    OP_RESHAPE = 48
    OP_TRANSPOSE = 49
    OP_GETITEM = 50
    OP_CONCATENATE = 51
    OP_STACK = 52
    OP_WHERE = 53
    OP_EINSUM = 54
    OP_LOGSUMEXP = 55
    OP_COMPARE = 56
    OP_LOG_SOFTMAX = 57
    N_OPS = 58
    FIRST_ARRAY_OP = 40  # codes from here on are array rows

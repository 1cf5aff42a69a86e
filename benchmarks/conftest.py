"""pytest-benchmark setup for fastad's benchmarks.

    python -m pytest benchmarks                    # full sizes (several minutes)
    python -m pytest benchmarks --quick-bench      # small sizes, a smoke run
    FASTAD_BENCH_QUICK=1 python -m pytest benchmarks

The normal test run does not collect this folder (``testpaths = ["tests"]``).
At the end of the session the ratio tables are printed: for every scalar
workload and phase, median(reference) / median(fastad) and median(fastad) /
median(float); the arrays table (against the same NumPy code without
gradients) and the compile table (fad.compile's replays against fad.grad);
then the targets of the issues (reported, never asserted).

The reference's benchmarks run after every other benchmark of every file
(see ``pytest_collection_modifyitems``), and the untimed agreement checks
after those. NumPy's BLAS is pinned to one thread (``--bench-blas-threads``).
"""
import gc
import math
import os
import time

import pytest

from fastad import _workloads as W

_RESULTS = pytest.StashKey()


def pytest_addoption(parser):
    parser.addoption("--quick-bench", action="store_true", default=False,
                     help="fastad benchmarks at small sizes (also FASTAD_BENCH_QUICK=1)")
    parser.addoption("--bench-blas-threads", type=int, default=1, metavar="N",
                     help="run NumPy's BLAS on N threads in the fastad benchmarks "
                          "(default 1; 0 leaves it as it is)")


def quick_mode(config):
    env = os.environ.get("FASTAD_BENCH_QUICK", "").strip().lower()
    return config.getoption("--quick-bench") or env in ("1", "true", "yes", "on")


def pytest_configure(config):
    config.stash[_RESULTS] = {"medians": {}, "tapes": {}, "workloads": {},
                              "arrays": {}, "compile": {}, "array_wls": {}, "compile_wls": {},
                              "borrowed": set()}
    n = config.getoption("--bench-blas-threads", 0)
    if n:
        from fastad.bench import pin_blas_threads
        pin_blas_threads(n)


def pytest_collection_modifyitems(session, config, items):
    """Benchmarks of floats, NumPy and the core first (the scalar suite's
    first, then in file order), then the reference's, then the untimed
    checks. Recording millions of
    reference objects leaves the allocator's heap fragmented for the rest of
    the process, which slows later float code by up to 2x and would flatter
    the fastad/float ratios; the agreement checks record the reference too."""
    def rank(item):
        if "benchmark" not in getattr(item, "fixturenames", ()):
            return (2, False)
        params = getattr(getattr(item, "callspec", None), "params", {})
        module = getattr(item, "module", None)
        first = module is not None and module.__name__.endswith("test_scalar")
        return (1 if params.get("engine_name") == "reference" else 0, not first)
    items[:] = sorted(items, key=rank)  # stable: file and parameter order kept


@pytest.fixture(scope="session")
def quick(pytestconfig):
    return quick_mode(pytestconfig)


@pytest.fixture(scope="session")
def catalogue(quick, pytestconfig):
    """Every workload at this run's sizes, built once. The program rows are
    then frozen out of the cycle collector: they are the harness's data, not
    what is timed, and a 1M-row program would otherwise weigh on every
    full collection the engines trigger."""
    wls = {wl.name: wl for wl in W.catalogue(quick=quick)}
    pytestconfig.stash[_RESULTS]["workloads"] = wls
    gc.collect()
    gc.freeze()
    yield wls
    gc.unfreeze()


@pytest.fixture(scope="session")
def array_catalogue(quick, pytestconfig):
    """The array workloads at this run's sizes."""
    wls = {wl.name: wl for wl in W.array_catalogue(quick=quick)}
    pytestconfig.stash[_RESULTS]["array_wls"] = wls
    return wls


@pytest.fixture(scope="session")
def compile_catalogue(quick, pytestconfig):
    """The compile workloads at this run's sizes (compiled on first use)."""
    wls = {wl.name: wl for wl in W.compile_catalogue(quick=quick)}
    pytestconfig.stash[_RESULTS]["compile_wls"] = wls
    return wls


@pytest.fixture(scope="session")
def compile_bodies(compile_catalogue, engines):
    """``compile_bodies(name)``: ``{(engine, phase): Phase}`` of a compile
    workload, its function compiled once per session (a 1M-node DAG takes
    seconds to record)."""
    cache = {}

    def bodies(name):
        if name not in cache:
            wl = compile_catalogue[name]
            got = {}
            for eng in (engines["fastad"], engines["reference"]):
                if eng is not None:
                    got.update(W.compile_phases(wl, eng))
            gc.collect()
            gc.freeze()  # a DAG program made here for the first time
            cache[name] = got
        return cache[name]

    yield bodies
    cache.clear()


@pytest.fixture(scope="session")
def engines():
    fast, ref = W.engines()
    return {"float": W.FLOAT, "numpy": W.NUMPY, "fastad": fast, "reference": ref}


# Seconds of rounds to aim for per body, fewest and most rounds. Full-size
# reference bodies take seconds a round (the 1M-node DAG), so they get the
# fewest rounds.
BUDGET = {True: (0.3, 3, 200), False: (3.0, 3, 200)}
MIN_ROUND_S = 0.002  # bodies faster than this are looped (pedantic iterations)


def rounds_for(ph, quick):
    """(rounds, iterations) for a Phase, from one untimed run."""
    budget, lo, hi = BUDGET[quick]
    args = ph.setup() if ph.setup else ()
    t0 = time.perf_counter()
    ph.run(*args)
    once = max(time.perf_counter() - t0, 1e-9)
    iterations = 1 if ph.setup else max(1, math.ceil(MIN_ROUND_S / once))
    rounds = int(min(hi, max(lo, budget / (once * iterations))))
    return rounds, iterations


@pytest.fixture
def time_phase(quick):
    """``time_phase(benchmark, phase)``: time a :class:`fastad._workloads.Phase`
    with pytest-benchmark, rounds and iterations from one untimed run."""
    def run(benchmark, ph):
        rounds, iterations = rounds_for(ph, quick)
        if ph.setup:
            setup = ph.setup
            benchmark.pedantic(ph.run, setup=lambda: (setup(), {}), rounds=rounds, iterations=1)
        else:
            benchmark.pedantic(ph.run, rounds=rounds, iterations=iterations)
    return run


@pytest.fixture
def scalar_median(pytestconfig):
    """``scalar_median(workload, engine, phase)``: the median test_scalar
    recorded in this session (seconds per call), if it timed that body on
    the same workload at the same size; else None."""
    def get(wl, engine_name, phase):
        res = pytestconfig.stash[_RESULTS]
        timed = res["workloads"].get(wl.name)
        if timed is None or timed.size != wl.size:
            return None
        return res["medians"].get((wl.name, engine_name, phase))
    return get


@pytest.fixture
def record_median(pytestconfig):
    """``record_median(section, key, benchmark, calls=1)``: keep the median
    (seconds per call: a round of the body divided by ``calls``) of an
    ``arrays`` or ``compile`` benchmark for the summary tables; a float in
    place of ``benchmark`` is a median test_scalar took, kept as it is."""
    def record(section, key, benchmark, calls=1):
        if isinstance(benchmark, float):  # a median taken elsewhere (test_scalar)
            pytestconfig.stash[_RESULTS][section][key] = benchmark
            pytestconfig.stash[_RESULTS]["borrowed"].add(key[0])
            return
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: nothing was measured
            return
        pytestconfig.stash[_RESULTS][section][key] = stats.stats.median / calls
    return record


@pytest.fixture
def record_result(pytestconfig):
    """``record_result(wl, engine_name, phase, benchmark)``: keep the median
    (seconds per call) for the summary table."""
    def record(wl, engine_name, phase, benchmark):
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: nothing was measured
            return
        median = stats.stats.median / wl.calls
        pytestconfig.stash[_RESULTS]["medians"][(wl.name, engine_name, phase)] = median
    return record


@pytest.fixture(scope="session")
def tape_size(pytestconfig):
    """``tape_size(wl, engine)``: :func:`fastad._workloads.tape_info`, once
    per workload and engine (a full-size reference recording takes seconds).
    The table reports the core's tapes, or the reference's where the core
    did not run."""
    cache = {}

    def size(wl, engine):
        key = (wl.name, engine.name)
        if key not in cache:
            cache[key] = info = W.tape_info(wl, engine)
            tapes = pytestconfig.stash[_RESULTS]["tapes"]
            if engine.name == "fastad" or wl.name not in tapes:
                tapes[wl.name] = info
        return cache[key]
    return size


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    res = config.stash.get(_RESULTS, None)
    if not res or not (res["medians"] or res["arrays"] or res["compile"]):
        return
    from fastad.bench import header, report, report_arrays, report_compile

    mode = "quick" if quick_mode(config) else "full"
    tr = terminalreporter
    tr.write_sep("=", f"fastad ratio tables ({mode} sizes)")
    for line in header():
        tr.write_line(line)
    if res["medians"]:
        order = [w for w in W.NAMES if w in res["workloads"]]
        wls = [res["workloads"][w] for w in order]
        fast, ref = W.engines()
        layout = W.row_bytes(fast or ref)
        tr.write_line("")
        tr.write_line("## scalar")
        tr.write_line("")
        for line in report(wls, res["medians"], res["tapes"], layout):
            tr.write_line(line)
        tr.write_line("")
        tr.write_line("(pytest-benchmark times above are per round of a body: the seed "
                      f"workload's bodies run {W.SEED_CALLS:,} calls a round; this table is per call)")
    if res["arrays"]:
        wls = [res["array_wls"][w] for w in W.ARRAY_NAMES if w in res["array_wls"]]
        tr.write_line("")
        tr.write_line("## arrays")
        tr.write_line("")
        for line in report_arrays(wls, res["arrays"]):
            tr.write_line(line)
        tr.write_line("")
        tr.write_line(f"(pytest-benchmark times above are per round: the small-array bodies "
                      f"run {W.SMALL_OPS} ops a round; this table is per op)")
    if res["compile"]:
        wls = [res["compile_wls"][w] for w in W.COMPILE_NAMES if w in res["compile_wls"]]
        tr.write_line("")
        tr.write_line("## compile")
        tr.write_line("")
        for line in report_compile(wls, res["compile"], res["borrowed"]):
            tr.write_line(line)

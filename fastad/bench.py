"""``python -m fastad bench [--quick|--full]``: the compiled core against the
pure-Python reference and plain Python floats, as a Markdown table.

The workloads and the timed phases are those of ``fastad/_workloads.py``
(shared with the pytest-benchmark suite in ``benchmarks/``). Timing is
self-contained: ``time.perf_counter``, each figure the median of several
repeats, each repeat long enough for the clock (short bodies are looped).
Times are per call of the workload (one gradient, one training step ...).

Three sections, each a table with its targets: ``scalar`` (the scalar
workloads, phase by phase), ``arrays`` (NumPy code on ``fad.Array`` against
the same code on plain ndarrays) and ``compile`` (``fad.compile``'s C
replays against recording with ``fad.grad``); ``--only`` takes section
names as well as workload names.
"""
import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time

from . import _workloads as W

# Per workload and pass: (seconds one timed repeat of a body should at
# least last, seconds of repeats to aim for, fewest repeats, most repeats).
# The reference pass gets fewer: its 1M-node DAG takes ~25 s a repeat.
BUDGET = {("quick", "fast"): (0.005, 1.0, 5, 15), ("quick", "ref"): (0.005, 1.0, 3, 15),
          ("full", "fast"): (0.05, 10.0, 5, 25), ("full", "ref"): (0.05, 10.0, 3, 25)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _once(ph, loops):
    """Seconds per call of one timed repeat of a Phase (setup untimed)."""
    if ph.setup:
        args = ph.setup()
        t0 = time.perf_counter()
        ph.run(*args)
        return (time.perf_counter() - t0) / ph.calls
    run = ph.run
    t0 = time.perf_counter()
    for _ in range(loops):
        run()
    return (time.perf_counter() - t0) / (loops * ph.calls)


def time_group(phases, mode, which="fast"):
    """Median seconds per call of each Phase in ``{key: Phase}``.

    The bodies' repeats are interleaved (a, b, c, a, b, c, ...), so a slow
    drift of the machine (frequency, neighbours, allocator state) falls on
    every body alike and the ratios between them stay honest.
    """
    round_s, budget_s, min_rep, max_rep = BUDGET[mode, which]
    gc.collect()
    loops, cost = {}, 0.0
    for key, ph in phases.items():
        t0 = time.perf_counter()
        first = _once(ph, 1) * ph.calls  # warm-up, and a first estimate
        cost += time.perf_counter() - t0  # setup included: it is paid every repeat
        loops[key] = 1 if ph.setup else max(1, math.ceil(round_s / max(first, 1e-9)))
        cost += first * (loops[key] - 1)
    repeats = int(min(max_rep, max(min_rep, budget_s / max(cost, 1e-9))))
    times = {key: [] for key in phases}
    for _ in range(repeats):
        for key, ph in phases.items():
            times[key].append(_once(ph, loops[key]))
    return {key: statistics.median(ts) for key, ts in times.items()}


def fmt_time(s):
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def _ratio(num, den):
    return num / den if num and den else None


SECTIONS = ("scalar", "arrays", "compile")


def select(only):
    """``{section: [workload names]}`` for ``--only``'s names (None: everything).
    A section name selects all of its workloads."""
    names = {"scalar": list(W.NAMES), "arrays": list(W.ARRAY_NAMES),
             "compile": list(W.COMPILE_NAMES)}
    if not only:
        return names
    return {sec: [w for w in ws if sec in only or w in only] for sec, ws in names.items()}


def run(mode="quick", only=None, out=sys.stdout, err=sys.stderr):
    """Time every selected workload; print the report to ``out``; return the
    medians, ``{section: {(workload, engine, phase): seconds per call}}``."""
    fast, ref = W.engines()
    if fast is None:
        print("fastad bench: the compiled core (fastad._core) is not built, timing the "
              "reference alone; build it with `python setup.py build_ext --inplace`",
              file=err)
    quick = mode == "quick"
    chosen = select(only)
    wls = [w for w in W.catalogue(quick=quick) if w.name in chosen["scalar"]]
    awls = [w for w in W.array_catalogue(quick=quick) if w.name in chosen["arrays"]]
    cwls = [w for w in W.compile_catalogue(quick=quick) if w.name in chosen["compile"]]
    gc.collect()
    gc.freeze()  # the workloads' program rows are not what is timed: keep them out of GC passes
    medians = {sec: {} for sec in SECTIONS}
    tapes, borrowed, start = {}, set(), time.perf_counter()

    def timed(title, label, bodies, which):
        if not bodies:
            return {}
        print(f"[bench] {title}: {label} ...", end="", file=err, flush=True)
        t0 = time.perf_counter()
        got = time_group(bodies, mode, which)
        print(f" {time.perf_counter() - t0:.1f} s", file=err, flush=True)
        return got

    # Two passes: floats, NumPy and the core first, the reference after.
    # Recording millions of Python objects leaves the allocator's heap
    # fragmented for the rest of the process, which slows later float code
    # by up to 2x (the core much less); so the reference must not run before
    # the fastad/float ratios are taken. Within a pass, bodies interleave.
    for engines in ([W.FLOAT, fast], [ref]):
        engines = [e for e in engines if e is not None]
        which = "ref" if ref in engines else "fast"
        title = " + ".join(e.name for e in engines)
        for wl in wls:
            bodies = {}
            for eng in engines:
                for ph in (W.PHASES if eng.is_ad else ("eval",)):
                    bodies[(wl.name, eng.name, ph)] = W.phase(wl, eng, ph)
                if eng.is_ad and (eng is fast or fast is None):
                    tapes[wl.name] = W.tape_info(wl, eng)
            medians["scalar"].update(timed(title, wl.label, bodies, which))
        if fast is None:
            continue  # arrays and compile compare the core with the rest
        by_name = {"float": W.FLOAT, "numpy": W.NUMPY, "fastad": fast, "reference": ref}
        for wl in awls:
            bodies = {(wl.name, e, ph): W.array_phase(wl, by_name[e], ph)
                      for e, ph in W.ARRAY_BODIES[wl.name] if by_name[e] in engines
                      or (e == "numpy" and fast in engines)}
            medians["arrays"].update(timed(title + ("" if which == "ref" else " + numpy"),
                                           "arrays: " + wl.label, bodies, which))
        for wl in cwls:
            bodies = {}
            for (e, ph), body in W.compile_phases(wl, engines[-1]).items():
                key = (wl.name, e, ph)
                base = wl.info.get("base")
                scalar_key = (base.name, e, ph) if base is not None else None
                same = base is not None and any((w.name, w.size) == (base.name, base.size)
                                                for w in wls)
                if e == "reference" and same and scalar_key in medians["scalar"]:
                    # the same body was timed by the scalar section in this run
                    medians["compile"][key] = medians["scalar"][scalar_key]
                    borrowed.add(wl.name)
                    continue
                bodies[key] = body
            gc.collect()
            gc.freeze()  # a DAG program made here for the first time
            medians["compile"].update(timed("compiled" if which == "fast" else title,
                                            "compile: " + wl.label, bodies, which))
            if which == "fast":
                wl.info.pop("cf", None)  # a compiled 1M-node trace: let it go

    print(f"# fastad bench ({mode})\n", file=out)
    for line in header():
        print(line, file=out)
    if wls:
        print("\n## scalar\n", file=out)
        for line in report(wls, medians["scalar"], tapes, W.row_bytes(fast or ref)):
            print(line, file=out)
    if awls and medians["arrays"]:
        print("\n## arrays\n", file=out)
        for line in report_arrays(awls, medians["arrays"]):
            print(line, file=out)
    if cwls and medians["compile"]:
        print("\n## compile\n", file=out)
        for line in report_compile(cwls, medians["compile"], borrowed):
            print(line, file=out)
    print(f"\n(total time {time.perf_counter() - start:.1f} s)", file=out)
    return medians


_BLAS = {"note": None}
# OpenBLAS's thread-count setters, by the names its builds export them under.
_BLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
                 "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")
_BLAS_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_",
                 "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")


def pin_blas_threads(n=1):
    """Run NumPy's BLAS (the MLP's matmuls) on ``n`` threads; return a line
    saying what was done. With its default of one thread per core, OpenBLAS
    stalls for whole scheduler ticks when another process holds a core: on a
    2-core machine a 16x784 @ 784x256 product went from 0.25 ms to 8-20 ms
    and back from run to run. One thread makes NumPy and the AD engines (the
    same BLAS calls) comparable. Uses threadpoolctl where installed, else
    the OpenBLAS library NumPy loaded (found in /proc/self/maps)."""
    import importlib
    importlib.import_module("numpy")  # loads the BLAS library
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        before = [i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "blas"]
        threadpool_limits(n, user_api="blas")
        note = f"{n} (pinned with threadpoolctl; was {before[0] if before else 'n/a'})"
    except ImportError:
        note = _pin_openblas(n)
    _BLAS["note"] = note
    return note


def _pin_openblas(n):
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower()
                           and line.split()[-1].startswith("/")})
    except OSError:
        libs = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _BLAS_SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, s) for s in _BLAS_GETTERS if hasattr(lib, s)), None)
        if setter is None:
            continue
        before = getter() if getter is not None else "n/a"
        setter(int(n))
        return f"{n} (OpenBLAS pinned; was {before})"
    return "left as NumPy set them (no OpenBLAS found to pin; install threadpoolctl)"


def _loadavg():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):  # not on every platform
        return "n/a"


def header():
    """Machine lines that head a report."""
    return [
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores)",
        f"- Python: {platform.python_implementation()} {platform.python_version()} "
        f"on {platform.system()} {platform.machine()}",
        f"- load average: {_loadavg()} (other work on the machine skews the times)",
        f"- BLAS threads: {_BLAS['note'] or 'as NumPy set them'}",
        "- times are medians per call of the workload; `float` is the same Python code on floats",
        "- phases: record = leaves + forward (implicit tape); sweep = backward() alone; "
        "grad = whole gradient via grad() (mlp: one training step)",
    ]


def report(wls, medians, tapes, layout=None):
    """The Markdown tables and the target lines, as a list of lines.

    ``medians[(workload, engine, phase)]`` is seconds per call (engines
    ``fastad``, ``reference``, and ``float`` with phase ``eval``);
    ``tapes[workload]`` is :func:`fastad._workloads.tape_info`'s dict,
    ``layout`` :func:`fastad._workloads.row_bytes` of the same engine.
    Used by ``python -m fastad bench`` and by ``benchmarks/conftest.py``.
    """
    lines = ["| workload | nodes | phase | fastad | reference | float "
             "| reference/fastad | fastad/float |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for wl in wls:
        fl = medians.get((wl.name, "float", "eval"))
        rows = tapes.get(wl.name, {}).get("rows")
        for ph in W.PHASES:
            f = medians.get((wl.name, "fastad", ph))
            r = medians.get((wl.name, "reference", ph))
            if f is None and r is None:
                continue
            lines.append(f"| {wl.label} | {rows or 0:,} | {ph} | {fmt_time(f)} | {fmt_time(r)} "
                         f"| {fmt_time(fl)} | {fmt_ratio(_ratio(r, f))} | {fmt_ratio(_ratio(f, fl))} |")
    have_fast = any(e == "fastad" for _, e, _ in medians)
    engine = "fastad" if have_fast else "reference"
    lines += ["", f"| workload | {engine} tape rows | tape.nbytes | bytes/row recorded "
                  "| bytes/row swept | record ns/row | sweep ns/row | grad ns/row |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    per = lambda v: f"{v:.1f}" if v is not None else "n/a"  # noqa: E731
    for wl in wls:
        t = tapes.get(wl.name)
        if not t or not t["rows"]:
            continue
        rows = t["rows"]

        def ns(ph):
            m = medians.get((wl.name, engine, ph))
            return f"{m / rows * 1e9:.1f}" if m else "n/a"

        nb = f"{t['nbytes']:,}" if t["nbytes"] is not None else "n/a"
        lines.append(f"| {wl.label} | {rows:,} | {nb} | {per(t['bytes_per_row'])} "
                     f"| {per(t['bytes_per_row_swept'])} | {ns('record')} | {ns('sweep')} "
                     f"| {ns('grad')} |")
    if layout:
        lines += ["", f"Row layout of the {engine} tape (from its growth): {per(layout[0])} bytes "
                      f"per row of capacity (adjoints included), {per(layout[1])} after a sweep. bytes/row above is "
                      "tape.nbytes / len(tape): capacity slack included (a small tape may sit in "
                      "a bigger one's recycled arrays)."]
    if have_fast:
        lines += ["", "Targets (reported, not asserted):", ""]
        lines += [f"- {line}" for line in W.check_targets(medians, tapes, layout)]
    return lines


def report_arrays(wls, medians):
    """The arrays table and its target lines. ``medians[(workload, engine,
    phase)]`` in seconds per call (per op for the small-array workload)."""
    lines = ["Each AD row against the same NumPy code on plain ndarrays, without "
             "gradients (`plain`; for the list-of-Vars rows, the loop on a list of floats).",
             "",
             "| workload | phase | fastad | reference | plain | reference/fastad | fastad/plain |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for wl in wls:
        labels = W.ARRAY_PHASE_LABELS[wl.name]
        for e, ph in W.ARRAY_BODIES[wl.name]:
            if e != "fastad":
                continue
            f = medians.get((wl.name, "fastad", ph))
            r = medians.get((wl.name, "reference", ph))
            fl = medians.get((wl.name, "float" if ph.endswith("-list") else "numpy", "eval"))
            if f is None and r is None:
                continue
            lines.append(f"| {wl.label} | {labels[ph]} | {fmt_time(f)} | {fmt_time(r)} "
                         f"| {fmt_time(fl)} | {fmt_ratio(_ratio(r, f))} "
                         f"| {fmt_ratio(_ratio(f, fl))} |")
    return lines + _target_lines("arrays", medians)


def _phase_table(label, medians, w, rows, against):
    """One workload's phases as a table: each row's time ((engine, phase,
    text) per row, skipped when not timed) and its ratio to each of the
    phases in `against` ((column header, (engine, phase)) pairs)."""
    lines = []
    for e, ph, text in rows:
        t = medians.get((w, e, ph))
        if t is not None:
            ratios = " | ".join(fmt_ratio(_ratio(t, medians.get((w,) + base))) for _, base in against)
            lines.append(f"| {text} | {fmt_time(t)} | {ratios} |")
    if not lines:  # not timed in this run (--only, or pytest -k)
        return []
    return ["", f"| {label} | time | " + " | ".join(h for h, _ in against) + " |",
            "|---|---:|" + "---:|" * len(against)] + lines


def report_compile(wls, medians, borrowed=()):
    """The compile tables and their target lines. ``medians[(workload,
    engine, phase)]``, engine ``cf`` the compiled function; ``borrowed``
    names the workloads whose reference time comes from the scalar section."""
    m = lambda w, e, ph: medians.get((w, e, ph))  # noqa: E731
    lines = []
    replay = [wl for wl in wls if wl.name in ("cf-rosenbrock", "cf-dag")]
    if replay:
        lines += ["`cf = fad.compile(lambda x: fn(x, fad), x0)` on a list of floats; `fad.grad` "
                  "records and sweeps every call; `float` is fn on floats.", "",
                  "| workload | trace rows | float eval | cf(x) | cf.value_and_grad | cf.grad "
                  "| cf.hvp | fad.grad | reference grad | fad.grad/cf.grad | reference/cf.grad "
                  "| value_and_grad/cf(x) | hvp/cf.grad |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for wl in replay:
            w = wl.name
            g = m(w, "cf", "grad")
            ref_t = fmt_time(m(w, "reference", "grad")) + ("*" if w in borrowed else "")
            lines.append(
                f"| {wl.label} | {wl.info.get('rows', 0):,} | {fmt_time(m(w, 'float', 'eval'))} "
                f"| {fmt_time(m(w, 'cf', 'eval'))} | {fmt_time(m(w, 'cf', 'value_and_grad'))} "
                f"| {fmt_time(g)} | {fmt_time(m(w, 'cf', 'hvp'))} "
                f"| {fmt_time(m(w, 'fastad', 'grad'))} | {ref_t} "
                f"| {fmt_ratio(_ratio(m(w, 'fastad', 'grad'), g))} "
                f"| {fmt_ratio(_ratio(m(w, 'reference', 'grad'), g))} "
                f"| {fmt_ratio(_ratio(m(w, 'cf', 'value_and_grad'), m(w, 'cf', 'eval')))} "
                f"| {fmt_ratio(_ratio(m(w, 'cf', 'hvp'), g))} |")
        if borrowed:
            lines += ["", "\\* the reference's time from the scalar section / test_scalar "
                          "of this run (the same body)."]
        rows = []
        for wl in replay:
            w = wl.name
            e, vg, g = (m(w, "cf", ph + "-ndarray") for ph in ("eval", "value_and_grad", "grad"))
            if e is not None:
                rows.append(f"| {wl.label} | {fmt_time(e)} | {fmt_time(vg)} | {fmt_time(g)} "
                            f"| {fmt_ratio(_ratio(vg, e))} "
                            f"| {fmt_ratio(_ratio(m(w, 'fastad', 'grad'), g))} |")
        if rows:
            lines += ["", "The same functions compiled and called on an ndarray: no list to read, "
                      "and the gradient an ndarray, not a list of Python floats.", "",
                      "| workload | cf(x) | cf.value_and_grad | cf.grad | value_and_grad/cf(x) "
                      "| fad.grad (list)/cf.grad |", "|---|---:|---:|---:|---:|---:|"] + rows
    for wl in wls:
        w = wl.name
        if w == "grad_batch":
            one = m(w, "cf", "threads=1")
            rows = []
            for ph, text in (("loop", "Python loop of cf.grad"),
                             ("threads=1", "grad_batch threads=1"),
                             ("threads=2", "grad_batch threads=2"),
                             ("threads=None", f"grad_batch threads=None ({os.cpu_count()} cores)")):
                t = m(w, "cf", ph)
                if t is None:
                    continue
                rows.append(f"| {text} | {fmt_time(t)} | {wl.size / t:,.0f} "
                            f"| {fmt_ratio(_ratio(one, t))} |")
            if rows:
                lines += ["", f"| {wl.label} | time per batch | rows/s | throughput vs threads=1 |",
                          "|---|---:|---:|---:|"] + rows
        if w == "jacobian":
            lines += _phase_table(wl.label, medians, w, (
                ("float", "eval", "float eval (one value, no derivative)"),
                ("cf", "fwd", 'cf.jacobian(x, mode="fwd")'),
                ("cf", "rev", 'cf.jacobian(x, mode="rev")'),
                ("fastad", "rev", 'fad.jacobian(f, mode="rev") (records each call)')),
                (("vs float eval", ("float", "eval")), ("vs cf.jacobian rev", ("cf", "rev"))))
        if w == "hessian":
            lines += _phase_table(wl.label, medians, w, (
                ("cf", "grad", "cf.grad(x)"),
                ("cf", "hvp-loop", f"{wl.size} calls of cf.hvp(x, e_i)"),
                ("cf", "hvp-blocks", f"H @ I, {wl.size} products 16 a sweep (the dense route)"),
                ("cf", "hessian", "cf.hessian(x): 3 products, its pattern colored"),
                ("fastad", "hessian", "fad.hessian(f)(x) (records each call)")),
                (("vs cf.grad", ("cf", "grad")), ("vs the cf.hvp loop", ("cf", "hvp-loop"))))
        if w in W.ARRAY_COMPILED:
            lines += _phase_table(f"{wl.label}, compiled over its parameter dict", medians, w, (
                ("numpy", "eval", "NumPy forward (no derivative)"),
                ("cf", "eval", "cf(params): replay, each array row by NumPy"),
                ("cf", "value_and_grad", "cf.value_and_grad(params)"),
                ("fastad", "grad", "fad.value_and_grad (records each call)"),
                ("reference", "grad", "reference value_and_grad")),
                (("vs NumPy forward", ("numpy", "eval")),
                 ("vs cf.value_and_grad", ("cf", "value_and_grad"))))
    lines = lines[1:] if lines and not lines[0] else lines
    return lines + _target_lines("compile", medians)


def _target_lines(section, medians):
    met = W.check_ratio_targets(section, medians)
    if not met:
        return []
    return ["", "Targets (reported, not asserted):", ""] + [f"- {line}" for line in met]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastad bench",
        description="Time fastad against its pure-Python reference and plain floats.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small sizes, well under a minute (the default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="full sizes: chain 100k, DAG 1M, Rosenbrock 10k, MLP 100 points; "
                           "arrays: MLP batch 64, element loop 10k; grad_batch B=2,000")
    known = SECTIONS + W.NAMES + W.ARRAY_NAMES + W.COMPILE_NAMES
    parser.add_argument("--only", metavar="NAMES",
                        help=f"comma-separated sections or workloads, of: {', '.join(known)}")
    parser.add_argument("--blas-threads", type=int, default=1, metavar="N",
                        help="run NumPy's BLAS on N threads (default 1: OpenBLAS's threads "
                             "stall when the machine is shared; 0 leaves them as they are)")
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    args = parser.parse_args(argv)
    only = None
    if args.only is not None:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        if not only:
            parser.error("--only needs at least one section or workload name")
        unknown = only - set(known)
        if unknown:
            parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; "
                         f"expected: {', '.join(known)}")
    if args.blas_threads < 0:
        parser.error(f"--blas-threads takes 0 or more, got {args.blas_threads}")
    if args.blas_threads:
        pin_blas_threads(args.blas_threads)
    run(args.mode or "quick", only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

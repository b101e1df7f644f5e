"""`lab run` and `lab profile`: a selection measured (or traced) through the one run loop."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from lab.core.errors import UsageError
from lab.reports import terminal as table
from lab.running import executors
from lab.running import loop as session
from lab.store import reader as results


def selection(args) -> session.Selection:
    """The selection flags shared by run and profile, as a Selection."""
    explicit = {}
    for item in args.shape or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--shape expects key=value, got {item!r}")
        try:
            explicit[key] = int(value)
        except ValueError:
            raise UsageError(f"--shape {key} expects an integer, got {value!r}") from None
    named = {key: getattr(args, key) for key in session.NAMED_SHAPE_KEYS
             if getattr(args, key, None) is not None}
    from lab.commands.suites import default_backends, suite_selection

    chosen, size_shape = suite_selection(args)
    explicit.update(size_shape)
    return session.Selection(
        workloads=chosen, backends=args.backend or default_backends(chosen), modes=args.mode,
        device=args.device,
        precision=getattr(args, "precision", None), dtype=getattr(args, "dtype", None),
        named_shape=named, shape=explicit, threads=args.threads,
        repeats=getattr(args, "repeats", None), latency=getattr(args, "latency", False),
        cold_l2=getattr(args, "cold_l2", False), cuda_graphs=getattr(args, "cuda_graphs", False),
        allow_nan=getattr(args, "allow_nan", False),
        full_size=getattr(args, "full_size", False),
        allow_large=getattr(args, "allow_large", False), stored_runs=getattr(args, "out", None),
        ranks=getattr(args, "ranks", None), parallel=getattr(args, "parallel", None),
        envs=getattr(args, "env", None))


def _exit_code(result: session.SessionResult, console) -> int:
    """0: every cell ok or skipped for a stated reason; 1: some cell failed; 130: interrupted."""
    if result.interrupted:
        console.print("interrupted: finished cells are kept; the run is marked incomplete")
        return 130
    failed = result.failed
    if failed:
        console.print(f"{len(failed)} of {len(result.recorder.outcomes)} cells did not pass: "
                      + ", ".join(f"{o.spec.workload} {o.spec.mode} {o.label} ({o.status})"
                                  for o in failed[:6]) + (" ..." if len(failed) > 6 else ""))
        return 1
    return 0


def cmd_run(args) -> int:
    chosen = selection(args)
    chosen.on_this_machine = args.executor == "local"
    session.check_run_options(timeout_s=args.timeout, processes=args.processes,
                              executor=args.executor, ray_address=args.ray_address)
    counts = getattr(args, "counts", False)
    if counts:  # refused before any cell runs or any folder is made
        from lab.profiling.counts_pass import unavailable

        why = unavailable()
        if why:
            raise UsageError(f"--counts: {why}")
    cells, device = session.plan(chosen, timeout_s=args.timeout)
    resume = _resume(args, cells)
    if resume is not None:
        cells = resume.remaining(cells)
    executor = executors.get(args.executor, **({"address": args.ray_address}
                                               if args.executor == "ray" else {}))
    console = table.make_console()

    def after(recorder):
        if args.profile:  # a separate pass: timing is already stored
            from lab.profiling.trace_pass import profile_recorded_cells

            profile_recorded_cells(recorder, console, timeout_s=args.timeout)
        if counts:  # a separate pass under valgrind: timing is already stored
            from lab.profiling.counts_pass import count_recorded_cells

            count_recorded_cells(recorder, console, timeout_s=args.timeout,
                                 steps=getattr(args, "counts_steps", None),
                                 cycles=getattr(args, "counts_cycles", False))

    with _progress_display(console, len(cells)) as (on_start, on_progress):
        result = session.run_cells(
            cells, out=args.out, label=device, argv=sys.argv[1:], executor=executor,
            timeout_s=args.timeout, processes=args.processes, on_start=on_start,
            progress=on_progress, after=after, resume=resume)
    doc = results.load(result.path)
    table.render(doc, console)
    from lab.judge import scorecard

    scorecard.render(scorecard.summarize(results.cells(doc)), console)  # suites only
    from lab.reports import keras_table

    keras_table.render(keras_table.rows(results.cells(doc)), console)  # the keras suite only
    console.print(f"stored: {result.path}")
    return _exit_code(result, console)


def _resume(args, cells):
    """The stored run --resume names, checked against this selection and machine; None when
    the run starts afresh. --resume-anyway without --resume is refused: it would do nothing."""
    if getattr(args, "resume", None) is None:
        if getattr(args, "resume_anyway", False):
            raise UsageError("--resume-anyway goes with --resume RUN")
        return None
    from lab.running import resume
    from lab.store import provenance

    fp = provenance.fingerprint(threads=cells[0].spec.threads if cells else None)
    return resume.prepare(args.resume, args.out, cells, fp, anyway=args.resume_anyway)


@contextmanager
def _progress_display(console, total: int):
    """(on_start, progress) for the run loop. On a terminal: a bar with the running cell, its
    last finished phase and an estimate of the time left. Piped or in CI: one line on stderr
    per finished phase and cell (`[1/4] mlp infer torch-compile: cold compile 10.8 s`), so a
    log shows where a long run is, and stdout keeps only the table."""
    if not console.is_terminal:
        def line(event: session.Progress) -> None:
            print(event.line(), file=sys.stderr, flush=True)

        yield None, line
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("left"), TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("cells", total=total)

        def on_start(cell):
            progress.update(bar, description=f"{cell.spec.workload} {cell.spec.mode} "
                                             f"{cell.choice.label}")

        def on_progress(event: session.Progress) -> None:
            if event.status is not None:
                progress.update(bar, completed=event.done)
            else:
                progress.update(bar, description=f"{event.cell}: {event.phase} "
                                                 f"{event.seconds:.1f} s")

        yield on_start, on_progress


def cmd_profile(args) -> int:
    from lab.profiling.trace_pass import print_entry

    cells, device = session.plan(selection(args), timeout_s=args.timeout)
    console = table.make_console()

    def on_start(cell):
        console.print(f"profiling {cell.spec.workload} {cell.spec.mode} {cell.choice.label}")

    def on_done(cell, outcome, run_dir):
        title = f"{cell.spec.workload} {cell.spec.mode} {cell.choice.label}"
        if "profile" in outcome.extra:
            print_entry(outcome.extra["profile"], title, run_dir, console)
        else:
            console.print(f"{title}: {outcome.status} ({outcome.result.reason})")

    result = session.run_cells(
        cells, out=args.out, label=f"{device}-profile", argv=sys.argv[1:],
        executor=executors.get("local"), timeout_s=args.timeout, trace=True,
        on_start=on_start, on_done=on_done)
    console.print(f"stored: {result.path}")
    return _exit_code(result, console)

"""Counts: a cell's steps measured in instructions and estimated cycles under Valgrind's
callgrind (docs/counts.md), beside its wall time. A simulated CPU counts the same work the same
way whatever else the machine runs, so a 1-2% change stays visible on a shared, loaded runner.

    client   the client requests (start/stop/zero/dump), compiled on first use (in the cell)
    inner    the counted steps inside the cell process (the COUNTS pass of lab.cell.main)
    tool     valgrind's command line and its output files, parsed (in the lab process)
    gate     the gate's verdict on counts, beside the wall-time one

The counts pass of a cell, and of every cell of a run (`lab run --counts`), is
lab.profiling.counts_pass: it launches cell processes, so it sits above the cell.
"""

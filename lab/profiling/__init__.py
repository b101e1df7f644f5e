"""Profiling: the trace pass, Nsight, hot-kernel tables."""

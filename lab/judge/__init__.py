"""Judging stored runs: claims, verdicts, the regression gate, history."""

"""Claim files (TOML): performance claims stated as checks a run can decide.

One `[[claim]]` table per claim (the grammar, with examples, is in docs/verdicts.md):

    [[claim]]
    id = "compile-2x"                  # unique; letters, digits, '-', '_'
    quote = "torch.compile delivers up to 2x speedups"   # the claim in its own words
    metric = "speedup"                 # speedup | throughput | time | memory | latency
    backend = "torch-compile"          # the backend the claim is about
    versus = "torch-eager"             # optional: compare against this backend's cells
    workload = ["mlp", "transformer"]  # a name, a file.py:factory, or a list
    mode = ["infer", "train"]
    expect = "up_to"                   # at_least | at_most | about | between | up_to
    value = 2.0                        # or range = [1.3, 1.5] for between
    tolerance = 0.05                   # relative slack for about / between
    device = "any"                     # any | cpu | cuda ("cuda": needs a GPU)
    precision = "fp32"                 # fp32 | tf32 | bf16 | fp16 | amp-bf16 | amp-fp16, or
                                       # "default": the device's (fp32 CPU, amp-bf16 CUDA);
                                       # dtype = "float32" (the older key) means fp32
    ranks = 2                          # data-parallel cells (lab run --ranks N), with metric
                                       # scaling, throughput or time; strategy = "fsdp" picks
                                       # one (lab.judge.scaling)

Errors name the file, the line and the reason, and are raised as ClaimError.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# memory: eager / backend step peak (in-process), or versus / backend across cells;
# latency: per-call p50 of eager / backend (--latency cells), or versus / backend;
# scaling: a data-parallel cell's scaling efficiency, or backend's over versus's
METRICS = ("speedup", "throughput", "time", "memory", "latency", "scaling")
EXPECTS = ("at_least", "at_most", "about", "between", "up_to")
DEVICES = ("any", "cpu", "cuda")
AGGREGATES = ("all", "best")
DEFAULT_TOLERANCE = 0.05
DEFAULT_REACH = 0.75  # "up to X" holds when the best case reaches at least this share of X
_KEYS = {"id", "quote", "source", "note", "metric", "backend", "versus", "workload", "mode",
         "expect", "value", "range", "tolerance", "reach", "aggregate", "device", "dtype",
         "precision", "shape", "suite", "size", "at",  # these three: lab.judge.suite_claims
         "ranks", "strategy"}  # lab.judge.scaling
DEFAULT_PRECISION = "default"  # a claim's precision that means the device's (lab.core.precision)
_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class ClaimError(ValueError):
    """A malformed claim file; the message is one line: file:line: reason."""


@dataclass(frozen=True)
class Claim:
    id: str
    quote: str
    metric: str
    backend: str
    workloads: tuple[str, ...]
    modes: tuple[str, ...]
    expect: str
    low: float  # the claimed interval for the ratio: [low, high]
    high: float
    tolerance: float
    reach: float
    aggregate: str
    device: str
    # the precision the claim's cells run in: a lab.core.precision name, or DEFAULT_PRECISION
    precision: str = "fp32"
    versus: str | None = None
    shape: dict = field(default_factory=dict)
    source: str | None = None
    note: str | None = None
    line: int = 0
    # a claim over a suite's distribution (lab.judge.suite_claims): its suite, what is judged
    # (geomean, share or pass_rate) and, for a share, the speedup a model must reach
    suite: str | None = None
    suite_kind: str | None = None
    at: float | None = None
    # a claim over data-parallel cells (lab.judge.scaling): their ranks, the strategies named
    ranks: int | None = None
    strategy: tuple[str, ...] = ()

    def describe_expectation(self) -> str:
        if self.suite_kind in ("share", "pass_rate"):  # a fraction of the suite's models
            low, high = f"{100 * self.low:.3g}%", f"{100 * self.high:.3g}%"
            return {"at_least": f">= {low}", "at_most": f"<= {high}"}.get(
                self.expect, f"{low} to {high}")
        x = self.unit
        if self.expect == "at_least":
            return f">= {self.low:g}{x}"
        if self.expect == "at_most":
            return f"<= {self.high:g}{x}"
        if self.expect == "up_to":
            return f"up to {self.high:g}{x} (best case >= {self.low:g}{x})"
        return f"{self.low:.3g}{x} to {self.high:.3g}{x}"

    @property
    def unit(self) -> str:
        """"x" after a ratio; nothing after a scaling efficiency, which is a fraction."""
        return "" if self.metric == "scaling" and not self.versus else "x"


def _claim_lines(text: str) -> list[int]:
    """Line number (1-based) of each [[claim]] header, in order."""
    return [i + 1 for i, line in enumerate(text.splitlines())
            if re.match(r"^\s*\[\[\s*claim\s*\]\]", line)]


def _key_line(text: str, start: int, key: str) -> int:
    """Line of `key = ...` in the claim whose header is at `start`; the header when not found."""
    lines = text.splitlines()
    for i in range(start, len(lines)):  # lines[start] is the line after the header
        if re.match(r"^\s*\[", lines[i]):
            break
        if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start


def _strings(value, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v
                                                           for v in items):
        raise ValueError(f"{what} must be a non-empty string or list of strings")
    return tuple(items)


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _parse_one(table: dict) -> Claim:
    """Validate one claim table; ValueError(reason, key) on the first problem."""
    from lab import compile as backends
    from lab import workloads

    def fail(key: str, reason: str):
        raise _KeyedError(key, reason)

    from lab.judge import suite_claims

    given = table
    try:
        table = suite_claims.expand(table)  # a suite's models as the claim's workloads
    except KeyError as exc:
        fail(*exc.args)
    suite_kind = ("pass_rate" if given.get("metric") in suite_claims.SUITE_METRICS
                  else given.get("aggregate")) if "suite" in given else None

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        fail(unknown[0], f"unknown key {unknown[0]!r}; valid: {', '.join(sorted(_KEYS))}")
    for key in ("id", "quote", "metric", "backend", "workload", "expect"):
        if key not in table:
            fail("id", f"claim lacks {key!r}")
    if not isinstance(table["id"], str) or not _ID.match(table["id"]):
        fail("id", "id must be letters, digits, '-' or '_'")
    if not isinstance(table["quote"], str) or not table["quote"].strip():
        fail("quote", "quote must be the claim's own words (a non-empty string)")
    metric = table["metric"]
    if metric not in METRICS:
        fail("metric", f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    for key in ("backend", "versus"):
        if key in table:
            try:
                backends.resolve(table[key] if isinstance(table[key], str) else "")
            except backends.UnknownBackend as exc:
                fail(key, str(exc))
    from lab.judge import scaling

    try:
        ranks, strategies = scaling.validate(table)
    except KeyError as exc:
        fail(*exc.args)
    if metric == "speedup" and not backends.resolve(table["backend"]).info.compiles:
        fail("backend", f"metric 'speedup' needs a compiling backend, not {table['backend']!r}")
    if metric == "speedup" and "versus" in table \
            and not backends.resolve(table["versus"]).info.compiles:
        fail("versus", "metric 'speedup' compares two compiling backends' speedups")
    if metric in ("throughput", "time") and "versus" not in table:
        fail("metric", f"metric {metric!r} is a ratio of two backends: give 'versus'")
    if metric in ("memory", "latency") and "versus" not in table \
            and not backends.resolve(table["backend"]).info.compiles:
        fail("backend", f"metric {metric!r} without 'versus' compares a backend with its own "
                        f"eager side; {table['backend']!r} has none: give 'versus'")
    try:
        names = _strings(table["workload"], "workload")
    except ValueError as exc:
        fail("workload", str(exc))
    try:
        modes = _strings(table.get("mode", "infer"), "mode")
    except ValueError as exc:
        fail("mode", str(exc))
    for mode in modes:
        if mode not in workloads.MODES:
            fail("mode", f"unknown mode {mode!r}; valid: {', '.join(workloads.MODES)}")
    expect = table["expect"]
    if expect not in EXPECTS:
        fail("expect", f"unknown expect {expect!r}; valid: {', '.join(EXPECTS)}")
    tolerance = table.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 <= tolerance < 1:
        fail("tolerance", f"tolerance must be a number in [0, 1), got {tolerance!r}")
    reach = table.get("reach", DEFAULT_REACH)
    if isinstance(reach, bool) or not isinstance(reach, (int, float)) or not 0 < reach <= 1:
        fail("reach", f"reach must be a number in (0, 1], got {reach!r}")
    if expect == "between":
        rng = table.get("range")
        if not isinstance(rng, list) or len(rng) != 2:
            fail("range" if "range" in table else "expect",
                 "expect 'between' needs range = [low, high]")
        try:
            low, high = _number(rng[0], "range low"), _number(rng[1], "range high")
        except ValueError as exc:
            fail("range", str(exc))
        if low > high:
            fail("range", f"range low {low:g} is above high {high:g}")
        low, high = low / (1 + tolerance), high * (1 + tolerance)
    else:
        if "value" not in table:
            fail("expect", f"expect {expect!r} needs value = <ratio>")
        try:
            value = _number(table["value"], "value")
        except ValueError as exc:
            fail("value", str(exc))
        low, high = {
            "at_least": (value, float("inf")),
            "at_most": (0.0, value),
            "about": (value / (1 + tolerance), value * (1 + tolerance)),
            "up_to": (reach * value, value),
        }[expect]
    if suite_kind in ("share", "pass_rate"):
        try:
            suite_claims.check_fraction(low, high, suite_kind.replace("_", " "))
        except KeyError as exc:
            fail(*exc.args)
    aggregate = table.get("aggregate", "best" if expect == "up_to" else "all")
    if aggregate not in AGGREGATES:
        fail("aggregate", f"unknown aggregate {aggregate!r}; valid: {', '.join(AGGREGATES)}")
    device = table.get("device", "any")
    if device not in DEVICES:
        fail("device", f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    claim_precision = _precision(table, fail)
    shape = table.get("shape", {})
    if not isinstance(shape, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              and v > 0 for v in shape.values()):
        fail("shape", "shape must be a table of positive integers, e.g. {batch = 32}")
    having = set()
    for name in names:  # a claim about an unknown workload or shape could never be decided
        try:
            workload = workloads.get(name, validate_user=False)
        except ValueError as exc:
            fail("workload", str(exc))
        try:
            workload.shape_for("cpu", shape)
        except ValueError as exc:
            fail("shape", str(exc))
        having.update(workload.modes)
    if not having & set(modes):  # a mode no workload of the claim has: no cell to judge
        fail("mode", f"none of the claim's workloads ({', '.join(names)}) has mode "
                     f"{', '.join(modes)}")
    for key in ("source", "note"):
        if key in table and not isinstance(table[key], str):
            fail(key, f"{key} must be a string")
    return Claim(
        id=table["id"], quote=table["quote"].strip(), metric=metric, backend=table["backend"],
        versus=table.get("versus"), workloads=names, modes=modes, expect=expect, low=low,
        high=high, tolerance=float(tolerance), reach=float(reach), aggregate=aggregate,
        device=device, precision=claim_precision, shape=dict(shape), source=table.get("source"),
        note=table.get("note"), suite=given.get("suite"), suite_kind=suite_kind,
        at=float(given["at"]) if "at" in given else None, ranks=ranks, strategy=strategies,
    )


def _precision(table: dict, fail) -> str:
    """The claim's precision: `precision`, or the older `dtype` (float32 -> fp32); fp32 when
    neither is given, as claims were judged on float32 cells before precisions existed."""
    from lab.core import precision as precisions

    if "dtype" in table and "precision" in table:
        fail("dtype", "give precision or dtype, not both (dtype = \"float32\" is precision = "
                      "\"fp32\")")
    if "dtype" in table:
        if table["dtype"] not in precisions.DTYPE_PRECISION:
            fail("dtype", f"unknown dtype {table['dtype']!r}; valid: "
                          f"{', '.join(precisions.DTYPE_PRECISION)}")
        return precisions.DTYPE_PRECISION[table["dtype"]].value
    name = table.get("precision", precisions.Precision.FP32.value)
    if name != DEFAULT_PRECISION and name not in precisions.NAMES:
        fail("precision", f"unknown precision {name!r}; valid: {', '.join(precisions.NAMES)}, "
                          f"{DEFAULT_PRECISION}")
    return name


class _KeyedError(ValueError):
    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key, self.reason = key, reason


def parse(text: str, name: str = "<claims>") -> list[Claim]:
    """All claims in a claim file's text; ClaimError('name:line: reason') on the first problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's tomllib puts the place only in the text: "... (at line 3, column 9)"
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = found.group(1) if found else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        where = f"{name}:{line}" if line else name
        raise ClaimError(f"{where}: not valid TOML: {message}") from None
    extra = sorted(set(doc) - {"claim"})
    if extra:
        raise ClaimError(f"{name}:1: unknown top-level key {extra[0]!r}; "
                         f"a claim file holds [[claim]] tables")
    tables = doc.get("claim")
    if not isinstance(tables, list) or not tables:
        raise ClaimError(f"{name}:1: no [[claim]] tables")
    headers = _claim_lines(text)
    claims, seen = [], {}
    for i, table in enumerate(tables):
        start = headers[i] if i < len(headers) else 1
        try:
            claim = _parse_one(table)
        except _KeyedError as exc:
            raise ClaimError(f"{name}:{_key_line(text, start, exc.key)}: claim "
                             f"{table.get('id', i + 1)!s}: {exc.reason}") from None
        if claim.id in seen:
            raise ClaimError(f"{name}:{start}: claim id {claim.id!r} repeats the one at line "
                             f"{seen[claim.id]}")
        seen[claim.id] = start
        claims.append(Claim(**{**claim.__dict__, "line": start}))
    return claims


def load(path: str | Path) -> list[Claim]:
    path = Path(path)
    if not path.is_file():
        raise ClaimError(f"{path}: no such claim file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaimError(f"{path}: cannot read: {exc}") from None
    return parse(text, str(path))

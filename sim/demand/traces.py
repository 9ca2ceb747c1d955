"""Request traces: CSV files of (timestamp, prompt tokens, output tokens).

A trace file has a header line naming its columns, then one request per line.  Recognised
column names (case-insensitive):

============  =====================================================================
meaning       accepted names
============  =====================================================================
time          ``timestamp_s``, ``time_s``, ``arrival_s`` (seconds, decimal);
              ``timestamp_ms`` (milliseconds, decimal);
              ``timestamp`` (seconds, decimal, *or* an ISO date-time such as
              ``2023-11-16 18:17:03.9799600``, as in the Azure traces)
prompt        ``prompt_tokens``, ``input_tokens``, ``input_length``, ``ContextTokens``
output        ``output_tokens``, ``output_length``, ``GeneratedTokens``
============  =====================================================================

Other columns are ignored.  Arrival times are returned relative to the earliest timestamp
(the replay starts at t = 0); rows are sorted stably by time and the number of rows that
were out of order is reported.  Date-times are parsed to the nanosecond (Azure's seven
fractional digits are kept), so relative times are exact to float64 rounding.

A row is malformed when it has the wrong number of fields, a time that does not parse or is
not finite, or a token count that is not an integer >= 1.  Blank lines are not rows and are
ignored.  ``on_bad_rows="refuse"`` raises :class:`sim.core.errors.UserError` naming the file, the
first bad line and what is wrong (with the count and first line numbers of all bad rows);
``on_bad_rows="skip"`` drops them, logs and warns with the count and line numbers, and keeps
them in :attr:`Trace.bad_rows` so a run summary can carry :meth:`Trace.report`.  Never silent.
"""
from __future__ import annotations

import csv
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sim.core.errors import UserError

log = logging.getLogger(__name__)

TIME_SECONDS = ("timestamp_s", "time_s", "arrival_s")
TIME_MS = ("timestamp_ms",)
TIME_AUTO = ("timestamp",)
PROMPT_NAMES = ("prompt_tokens", "input_tokens", "input_length", "contexttokens")
OUTPUT_NAMES = ("output_tokens", "output_length", "generatedtokens")
ON_BAD_ROWS = ("refuse", "skip")
MAX_LINES_LISTED = 20
#: bounds of a valid row. assumption: far beyond real traces (contexts of ~1 M tokens; a
#: trace spanning 31,700 years), so only corrupt values are refused
MAX_TOKENS_PER_ROW = 1 << 24
MAX_ABS_TIME_S = 1e12

_DT = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


class TraceWarning(UserWarning):
    """Rows of a trace were skipped (``on_bad_rows = "skip"``)."""


@dataclass(frozen=True)
class BadRow:
    line: int  # 1-based line number in the file (the header is line 1)
    reason: str


@dataclass(frozen=True, eq=False)
class Trace:
    path: str
    times_s: np.ndarray  # float64, sorted, relative to the earliest timestamp (first is 0.0)
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    bad_rows: tuple[BadRow, ...] = ()
    out_of_order_rows: int = 0
    first_timestamp: str = ""
    on_bad_rows: str = "refuse"
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_s)

    @property
    def span_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0]) if len(self.times_s) else 0.0

    def report(self) -> dict:
        """JSON-able description for a run summary (what was read, what was skipped)."""
        return {
            "path": self.path,
            "rows_used": int(len(self)),
            "bad_rows": len(self.bad_rows),
            "bad_lines": [b.line for b in self.bad_rows[:MAX_LINES_LISTED]],
            "bad_reasons": [f"line {b.line}: {b.reason}" for b in self.bad_rows[:MAX_LINES_LISTED]],
            "on_bad_rows": self.on_bad_rows,
            "out_of_order_rows": int(self.out_of_order_rows),
            "first_timestamp": self.first_timestamp,
            "span_s": self.span_s,
        }


def _parse_datetime_ns(text: str) -> int:
    m = _DT.match(text)
    if not m:
        raise ValueError
    base = datetime.fromisoformat(m.group(1).replace(" ", "T"))
    tz = m.group(3)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        offset_s = sign * (hh * 3600 + mm * 60)
    else:
        offset_s = 0  # naive date-times are read as UTC; only differences matter for replay
    whole_s = int(base.replace(tzinfo=timezone.utc).timestamp()) - offset_s
    frac = (m.group(2) or "").ljust(9, "0")
    return whole_s * 1_000_000_000 + int(frac)


def _parse_tokens(text: str) -> int:
    t = text.strip()
    if not t or not (t.isdigit() or (t[0] == "+" and t[1:].isdigit())):
        raise ValueError
    v = int(t)
    if v < 1:
        raise ValueError
    if v > MAX_TOKENS_PER_ROW:   # beyond any context window (and, further, int64)
        raise ValueError(f"is above {MAX_TOKENS_PER_ROW} tokens")
    return v


def _is_seconds(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v)


def _decoded_lines(raw: bytes, bad: list[BadRow]):
    """The file's lines as text, one per physical line (so the csv reader's line numbers are
    the file's); a line that is not UTF-8 is recorded in ``bad`` under its own number and
    read as blank."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, b in enumerate(lines, start=1):
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.append(BadRow(n, f"not UTF-8 text (byte 0x{b[err.start]:02x} at column {err.start + 1})"))
            text = ""
        if n == 1 and text.startswith("\ufeff"):
            text = text[1:]   # a byte-order mark
        yield text + "\n"


def _find(header_lc: list[str], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in header_lc:
            return header_lc.index(n)
    return None


def load_trace(path: str | Path, on_bad_rows: str = "refuse") -> Trace:
    """Read a trace CSV (see the module docstring for the format and the bad-row policy)."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise UserError(f"on_bad_rows: {on_bad_rows!r} is not allowed; allowed: refuse, skip")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such trace file")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise UserError(f"{p}: cannot read trace: {err.strerror}") from None
    bad: list[BadRow] = []
    reader = csv.reader(_decoded_lines(raw, bad))
    cols = _read_header(p, reader, bad)
    rows = _read_rows(reader, cols, bad)
    times = _parse_times(rows, cols, bad)
    bad.sort(key=lambda b: b.line)
    if bad and on_bad_rows == "refuse":
        raise UserError(
            f"{p}: line {bad[0].line}: {bad[0].reason} ({len(bad)} malformed row{'s' if len(bad) > 1 else ''}: "
            f"line{'s' if len(bad) > 1 else ''} {_listed_lines(bad)}; set on_bad_rows = \"skip\" to drop them)")
    if not times.prompts:
        raise UserError(f"{p}: no valid request rows" + (f" ({len(bad)} malformed)" if bad else ""))
    trace = _assemble(p, times, bad, on_bad_rows)
    if bad:
        msg = (f"{p}: skipped {len(bad)} malformed row{'s' if len(bad) > 1 else ''} (lines {_listed_lines(bad)}); "
               f"first: line {bad[0].line}: {bad[0].reason}")
        log.warning(msg)
        warnings.warn(msg, TraceWarning, stacklevel=2)
    return trace


@dataclass(frozen=True)
class _Columns:
    """Where the header puts the three fields, and how the time column is written."""

    header: list[str]
    i_time: int
    time_mode: str            # "s", "ms" or "auto" (ISO date-times or seconds)
    i_prompt: int
    i_output: int


@dataclass
class _ParsedRows:
    """The valid rows' fields, in file order; times in seconds or, for date-times, nanoseconds."""

    dt_mode: bool
    t_float: list[float] = field(default_factory=list)
    t_ns: list[int] = field(default_factory=list)
    raw_ts: list[str] = field(default_factory=list)
    prompts: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


def _listed_lines(bad: list[BadRow]) -> str:
    return ", ".join(str(b.line) for b in bad[:MAX_LINES_LISTED]) + (", ..." if len(bad) > MAX_LINES_LISTED else "")


def _read_header(p: Path, reader, bad: list[BadRow]) -> _Columns:
    """The header row: which column holds the time (and its unit), the prompt and the output."""
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{p}: line 1: empty file, expected a header (timestamp, prompt_tokens, output_tokens)") from None
    except csv.Error as err:
        raise UserError(f"{p}: line 1: unreadable header ({err})") from None
    if bad and bad[0].line == 1:
        raise UserError(f"{p}: line 1: unreadable header ({bad[0].reason})")
    hl = [h.strip().lower() for h in header]
    i_prompt, i_output = _find(hl, PROMPT_NAMES), _find(hl, OUTPUT_NAMES)
    i_time, time_mode = None, None
    for names, mode in ((TIME_SECONDS, "s"), (TIME_MS, "ms"), (TIME_AUTO, "auto")):
        i = _find(hl, names)
        if i is not None:
            i_time, time_mode = i, mode
            break
    missing = []
    if i_time is None:
        missing.append("time (" + ", ".join(TIME_SECONDS + TIME_MS + TIME_AUTO) + ")")
    if i_prompt is None:
        missing.append("prompt tokens (" + ", ".join(PROMPT_NAMES) + ")")
    if i_output is None:
        missing.append("output tokens (" + ", ".join(OUTPUT_NAMES) + ")")
    if missing:
        raise UserError(f"{p}: line 1: header {header!r} lacks a column for " + "; ".join(missing))
    return _Columns(header, i_time, time_mode, i_prompt, i_output)


def _read_rows(reader, cols: _Columns, bad: list[BadRow]) -> list[tuple[int, str, int, int]]:
    """Rows whose field count and token counts are valid, as (line, raw time, prompt, output).

    Their times are parsed afterwards, once the time format is decided from the valid rows (a
    garbled first time does not decide it).
    """
    header, ncol = cols.header, len(cols.header)
    rows: list[tuple[int, str, int, int]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            bad.append(BadRow(reader.line_num, f"unreadable row ({err})"))
            continue
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != ncol:
            bad.append(BadRow(line, f"{len(row)} fields, the header has {ncol}"))
            continue
        tokens = []
        for i in (cols.i_prompt, cols.i_output):
            try:
                tokens.append(_parse_tokens(row[i]))
            except ValueError as err:
                bad.append(BadRow(line, f"{header[i].strip()} {row[i]!r} {str(err) or 'is not an integer >= 1'}"))
                break
        if len(tokens) == 2:
            rows.append((line, row[cols.i_time].strip(), tokens[0], tokens[1]))
    return rows


def _parse_times(rows: list[tuple[int, str, int, int]], cols: _Columns, bad: list[BadRow]) -> _ParsedRows:
    """Parse every valid row's time in the format most valid rows carry; a bad time is a bad row."""
    dt_mode = False
    if cols.time_mode == "auto":   # ISO date-times or seconds: whichever most rows carry
        n_dt = sum(1 for r in rows if _DT.match(r[1]))
        dt_mode = n_dt > 0 and n_dt >= sum(1 for r in rows if _is_seconds(r[1]))
    name = cols.header[cols.i_time].strip()
    out = _ParsedRows(dt_mode)
    for line, ts, pr, ou in rows:
        try:
            if dt_mode:
                tv: float | int = _parse_datetime_ns(ts)
            else:
                tv = float(ts)
                if cols.time_mode == "ms":
                    tv = tv / 1000.0
                if not (math.isfinite(tv) and abs(tv) <= MAX_ABS_TIME_S):
                    raise ValueError
        except ValueError:
            if dt_mode:
                bad.append(BadRow(line, f"{name} {ts!r} is not an ISO date-time"))
            else:
                kind = "a finite number of milliseconds" if cols.time_mode == "ms" else "a finite number of seconds"
                bad.append(BadRow(line, f"{name} {ts!r} is not {kind} (within +-{MAX_ABS_TIME_S:g} s)"))
            continue
        (out.t_ns if dt_mode else out.t_float).append(tv)
        out.raw_ts.append(ts)
        out.prompts.append(pr)
        out.outputs.append(ou)
    return out


def _assemble(p: Path, parsed: _ParsedRows, bad: list[BadRow], on_bad_rows: str) -> Trace:
    """Sort the valid rows by time (stable: ties keep file order) and shift them to start at 0."""
    if parsed.dt_mode:
        ns = np.asarray(parsed.t_ns, dtype=np.int64)
        order = np.argsort(ns, kind="stable")
        ns = ns[order]
        times = (ns - ns[0]).astype(np.float64) / 1e9
    else:
        tf = np.asarray(parsed.t_float, dtype=np.float64)
        order = np.argsort(tf, kind="stable")
        tf = tf[order]
        times = tf - tf[0]
    return Trace(
        path=str(p),
        times_s=times,
        prompt_tokens=np.asarray(parsed.prompts, dtype=np.int64)[order],
        output_tokens=np.asarray(parsed.outputs, dtype=np.int64)[order],
        bad_rows=tuple(bad),
        out_of_order_rows=int(np.count_nonzero(order != np.arange(len(order)))),
        first_timestamp=parsed.raw_ts[int(order[0])],
        on_bad_rows=on_bad_rows,
    )

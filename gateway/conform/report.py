"""The verdicts as a table for people, or as JSON lines for tests and CI; and, when a case
failed, the worker's last output lines (its own account of what went wrong).

It exists so that the shape of the output is decided in one place: the table's columns
(case, PASS / FAIL / n/a, what conform saw) and the JSON keys (`case`, `outcome`, `saw`,
and `worker_output` on a failure) are what scripts and docs/conform.md rely on.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from gateway.conform.cases import Verdict

__all__ = ["OUTPUT_LINES", "render_json", "render_table"]

OUTPUT_LINES = 15
"""How many of the worker's last output lines a failure shows."""


def render_table(
    verdicts: Sequence[Verdict], worker_output: Sequence[str], preamble: Sequence[str] = ()
) -> str:
    width = max(len("case"), *(len(v.case) for v in verdicts))
    lines = [*preamble, f"{'case':<{width}}  {'result':<6}  what conform saw"]
    lines += [f"{v.case:<{width}}  {v.outcome:<6}  {v.saw}" for v in verdicts]
    failed = [v.case for v in verdicts if v.outcome == "FAIL"]
    if failed:
        tail = list(worker_output)[-OUTPUT_LINES:]
        lines += ["", f"FAILED: {', '.join(failed)}. The worker's last output lines:"]
        lines += [f"  | {line}" for line in tail] or ["  (none)"]
    else:
        lines += ["", "every claimed case passed"]
    return "\n".join(lines)


def render_json(verdicts: Sequence[Verdict], worker_output: Sequence[str]) -> str:
    """One JSON object a line, one line a case."""
    tail = list(worker_output)[-OUTPUT_LINES:]
    rows = []
    for v in verdicts:
        row: dict[str, object] = {"case": v.case, "outcome": v.outcome, "saw": v.saw}
        if v.outcome == "FAIL":
            row["worker_output"] = tail
        rows.append(orjson.dumps(row).decode())
    return "\n".join(rows)

"""Figures: a name, a value, and (for some) a target. A missed target is reported, never raised."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "results.json"


@dataclass
class Figure:
    name: str
    value: float | int | None
    unit: str = ""
    target: str | None = None  # e.g. ">= 0.90"; None: reported for information
    met: bool | None = None
    note: str = ""

    def shown_value(self) -> str:
        v = self.value
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if isinstance(v, int):
            return f"{v:,}"
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.3f}"


def info(name: str, value: float | int | None, unit: str = "", note: str = "") -> Figure:
    return Figure(name, value, unit, None, None, note)


def at_least(name: str, value: float | None, bound: float, unit: str = "", note: str = "") -> Figure:
    met = value is not None and not math.isnan(value) and value >= bound
    return Figure(name, value, unit, f">= {bound:g}", met, note)


def at_most(name: str, value: float | None, bound: float, unit: str = "", note: str = "") -> Figure:
    met = value is not None and not math.isnan(value) and value <= bound
    return Figure(name, value, unit, f"<= {bound:g}", met, note)


class Report:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.errors: dict[str, str] = {}
        self.started = datetime.now(timezone.utc)

    def add(self, figure: Figure) -> None:
        self.figures[figure.name] = figure
        target = f"  (target {figure.target}: {'met' if figure.met else 'MISSED'})" if figure.target else ""
        unit = f" {figure.unit}" if figure.unit else ""
        note = f"\n      {figure.note}" if figure.note else ""
        print(f"  {figure.name} = {figure.shown_value()}{unit}{target}{note}", flush=True)

    def table(self) -> str:
        rows = [("name", "value", "unit", "target", "met")]
        for f in self.figures.values():
            met = "" if f.met is None else ("yes" if f.met else "NO")
            rows.append((f.name, f.shown_value(), f.unit, f.target or "", met))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) if j != 1 else cell.rjust(w)
                                   for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def write(self, path: Path = RESULTS_PATH) -> None:
        """Figures of this run replace those of the same name; figures of benchmarks this run did
        not include stay (each carries `measured_at`, so a stale one shows)."""
        data: dict[str, object] = {}
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict):
            data.update({k: v for k, v in previous.items() if k != "_run" and isinstance(v, dict)})
        measured_at = self.started.isoformat(timespec="seconds")
        for name, figure in self.figures.items():
            body = asdict(figure)
            body.pop("name")
            if isinstance(body["value"], float) and math.isnan(body["value"]):
                body["value"] = None
            body["measured_at"] = measured_at
            data[name] = body
        data["_run"] = {
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(),
            "errors": self.errors,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")

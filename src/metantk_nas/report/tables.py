"""Aggregate the result tree into copies of the paper's Tables 1 and 2 (LaTeX, markdown, CSV) and a comparison.

Per run: the mean accuracy over episodes (fewshot.json), #params (metrics.json), search cost (cost.json).  Per
table cell: mean +- population std (ddof=0) of the per-seed means; a cell from a single seed prints its mean
alone (no +-).  The notes under each table say so, with the number of seeds, and name the device and NTK backend
the search cost was measured with.  Rows the paper quotes from other work come from
config/literature.yaml and are marked as quoted; a missing run renders as "--" and is listed, never filled in.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..config import Run
from ..methods import TABLE1_METHODS, TABLE2_METHODS, method

log = logging.getLogger(__name__)
DATASET_TITLES = {"mini": "mini-ImageNet", "tiered": "tiered-ImageNet", "synthetic": "synthetic", "cifar_fs": "CIFAR-FS",
                  "fc100": "FC100"}
QUOTED_DATASETS = ("mini", "tiered")   # the datasets the paper's (and its quoted rows') numbers were measured on
TICK = "✓"
# Table 2's rows: (method, label, MetaNTK, NTK, linear regions), read off the methods' entries
TABLE2_ROWS = [(n, method(n).label, *(TICK if method(n).kernel == k else "" for k in ("MetaNTK", "NTK")),
                TICK if method(n).regions else "") for n in TABLE2_METHODS]


@dataclass
class Stat:
    mean: float | None
    std: float | None
    n: int = 0

    def fmt(self, digits: int = 2) -> str:
        if self.mean is None:
            return "--"
        return f"{self.mean:.{digits}f}" if self.std is None else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Collected:
    per_seed: dict[tuple[str, str, int, int], list[float]] = field(default_factory=dict)  # (dataset, method, cells, shots)
    params: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    cost_h: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    backends: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)


def collect(results: Path, runs: Iterable[Run], shots: Iterable[int]) -> Collected:
    col = Collected()
    shots = list(shots)
    for run in runs:
        d = results / run.path
        few, met, cost = d / "fewshot.json", d / "metrics.json", d / "cost.json"
        if not few.exists():
            col.missing.append(run.tag)
            continue
        res = json.loads(few.read_text())["results"]
        col.inputs.append(few)
        for s in shots:
            if f"{s}shot" in res:
                col.per_seed.setdefault((run.dataset, run.method, run.cells, s), []).append(res[f"{s}shot"]["mean"])
        if met.exists():
            col.inputs.append(met)
            col.params.setdefault((run.dataset, run.method, run.cells), []).append(json.loads(met.read_text())["params"] / 1e6)
        if cost.exists() and method(run.method).searched:
            c = json.loads(cost.read_text())
            col.inputs.append(cost)
            col.cost_h.setdefault((run.dataset, run.method, run.cells), []).append(c["device_hours"])
            col.devices.add(c["device"])
            backend = c.get("ntk_backend", "unrecorded")   # null: a search without a kernel (linreg, random)
            if backend:
                col.backends.add(backend)
    return col


def stat(values: list[float] | None) -> Stat:
    """Mean and population std (ddof=0) over seeds; one seed has no std."""
    if not values:
        return Stat(None, None)
    return Stat(float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None, len(values))


def seeds_note(col: Collected, keys: Iterable[tuple[str, str, int, int]] | None = None) -> str:
    """What every "a ± b" of ours means, with the seed counts behind the table's cells."""
    counts = sorted({len(v) for k, v in col.per_seed.items() if keys is None or k in keys})
    if not counts:
        n = "seeds"
    elif len(counts) == 1:
        n = f"{counts[0]} seed{'s' if counts[0] > 1 else ''}"
    else:
        n = f"{counts[0]}–{counts[-1]} seeds per cell"
    return (f"Ours: mean ± population std (ddof=0) over {n} of each run's mean accuracy over its test episodes (%); "
            "a cell from a single seed shows its mean alone.")


def _quoted_stat(pair: list[float] | None) -> Stat:
    return Stat(None, None) if pair is None else Stat(pair[0], pair[1])


def _fmt_params(vals: list[float] | None) -> str:
    return "--" if not vals else f"{np.mean(vals):.2f}M"


def _fmt_hours(h: float | None) -> str:
    if h is None:
        return "--"
    return f"{h:.2f} hr" if h >= 0.1 else f"{h:.4f} hr"


# ---------------------------------------------------------------------------------------------------------------
# table model: rows of cells, each a (text, Stat | None) so that bold marks can be decided on numbers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    header_groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[list[Any]]          # str or Stat
    quoted: list[bool]
    bold_groups: list[list[int]]   # row indices among which the best value per numeric column is bold
    caption: str
    notes: list[str]
    source_column: bool = True     # the frame's last column says ours / quoted (False: every row is ours)

    def _best(self) -> set[tuple[int, int]]:
        best: set[tuple[int, int]] = set()
        for group in self.bold_groups:
            for j in range(len(self.columns)):
                vals = [(self.rows[i][j].mean, i) for i in group
                        if isinstance(self.rows[i][j], Stat) and self.rows[i][j].mean is not None]
                if vals:
                    top = max(v for v, _ in vals)
                    best |= {(i, j) for v, i in vals if v == top}
        return best

    def cell_text(self, i: int, j: int) -> str:
        c = self.rows[i][j]
        return c.fmt() if isinstance(c, Stat) else str(c)

    def latex(self) -> str:
        best = self._best()
        ncol = len(self.columns)
        lines = ["% generated by metantk_nas.report.tables; requires \\usepackage{booktabs}",
                 "\\begin{table*}[t]", "\\centering", "\\small",
                 f"\\begin{{tabular}}{{{'l' * (ncol - sum(n for _, n in self.header_groups if _))}{'c' * sum(n for _, n in self.header_groups if _)}}}",
                 "\\toprule"]
        if any(t for t, _ in self.header_groups):
            cells, rules, col = [], [], 1
            for title, n in self.header_groups:
                cells.append(f"\\multicolumn{{{n}}}{{c}}{{{_tex(title)}}}" if title else " & ".join([""] * n))
                if title:
                    rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
                col += n
            lines.append(" & ".join(cells) + " \\\\")
            lines.append(" ".join(rules))
        lines.append(" & ".join(_tex(c) for c in self.columns) + " \\\\")
        lines.append("\\midrule")
        for i, row in enumerate(self.rows):
            texts = []
            for j in range(ncol):
                t = _tex(self.cell_text(i, j)).replace(" ± ", " $\\pm$ ")
                if (i, j) in best:
                    t = f"\\textbf{{{t}}}"
                texts.append(t)
            if self.quoted[i]:
                texts[0] += "$^{q}$"
            lines.append(" & ".join(texts) + " \\\\")
            if i + 1 < len(self.rows) and self.quoted[i] and not self.quoted[i + 1]:
                lines.append("\\midrule")
        lines.append("\\bottomrule")
        for note in self.notes:
            lines.append(f"\\multicolumn{{{ncol}}}{{l}}{{\\footnotesize {_tex(note)}}} \\\\")
        lines += ["\\end{tabular}", f"\\caption{{{_tex(self.caption)}}}", "\\end{table*}", ""]
        return "\n".join(lines)

    def frame(self) -> pd.DataFrame:
        cols = [f"{g} {c}".strip() if g else c for g, c in zip(self._group_per_column(), self.columns)]
        source = [["quoted" if q else "ours"] if self.source_column else [] for q in self.quoted]
        data = [[self.cell_text(i, j) for j in range(len(self.columns))] + source[i] for i in range(len(self.rows))]
        return pd.DataFrame(data, columns=cols + (["source"] if self.source_column else []))

    def _group_per_column(self) -> list[str]:
        out = []
        for title, n in self.header_groups:
            out += [title] * n
        return out

    def markdown(self) -> str:
        best = self._best()
        df = self.frame()
        for (i, j) in best:
            df.iat[i, j] = f"**{df.iat[i, j]}**"
        return tabulate(df.values.tolist(), headers=list(df.columns), tablefmt="github") + "\n\n" + \
            "\n".join(f"- {n}" for n in self.notes) + "\n"


def _tex(s: str) -> str:
    return (s.replace("✓", "\\checkmark").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_").replace("#", "\\#")
            .replace("–", "--").replace("†", "$^\\dagger$").replace("τ", "$\\tau$").replace("ρ", "$\\rho$")
            .replace("κ", "$\\kappa$"))


# ---------------------------------------------------------------------------------------------------------------
def table1(col: Collected, lit: dict[str, Any], datasets: list[str], cells: list[int]) -> Table:
    groups = [("", 4)] + [(f"{DATASET_TITLES.get(d, d)} 5-way", 4) for d in datasets]
    columns = ["Model", "Arch.", "#Cells", "Train"] + ["#Param.", "Search Cost", "1-shot", "5-shot"] * len(datasets)
    rows, quoted, ours = [], [], []
    for q in lit["table1"]["quoted"]:
        # a quoted number appears only under the dataset it was measured on (never next to synthetic results)
        entries = [q.get(d) if d in QUOTED_DATASETS else None for d in datasets]
        if all(e is None for e in entries):
            continue
        row: list[Any] = [q["model"], q["arch"], q["cells"], q["train"]]
        for entry in entries:
            if entry is None:
                row += ["--", "--", Stat(None, None), Stat(None, None)]
            else:
                row += [entry["params"], _fmt_hours(entry["cost"]), _quoted_stat(entry["shot1"]), _quoted_stat(entry["shot5"])]
        rows.append(row)
        quoted.append(True)
    metanas_cost = lit["table1"]["metanas_search_cost_hours"]
    bold = []
    for c in cells:
        group = []
        for name in TABLE1_METHODS:
            row = [method(name).label, "Cells", str(c), "RFS"]
            for d in datasets:
                cost = (f"{metanas_cost} hr (q)" if d in QUOTED_DATASETS else "n/a") if not method(name).searched \
                    else _fmt_hours(float(np.mean(col.cost_h[(d, name, c)])) if (d, name, c) in col.cost_h else None)
                row += [_fmt_params(col.params.get((d, name, c))), cost,
                        stat(col.per_seed.get((d, name, c, 1))), stat(col.per_seed.get((d, name, c, 5)))]
            group.append(len(rows))
            rows.append(row)
            quoted.append(False)
        bold.append(group)
    devices = ", ".join(sorted(col.devices)) or "n/a"
    backends = ", ".join(sorted(col.backends)) or "n/a"
    keys = [(d, m, c, s) for d in datasets for m in TABLE1_METHODS for c in cells for s in (1, 5)]
    plural = "s" if len(col.backends) > 1 else ""
    notes = [f"Search cost: mean over seeds of the search's device-hours, measured on {devices} with the {backends} "
             f"NTK backend{plural}; the paper's hours are the original's Opacus search on a V100. (q) and rows marked q: "
             "quoted from the paper's Table 1 (config/literature.yaml), not produced by this pipeline.",
             seeds_note(col, keys)]
    unquoted = [DATASET_TITLES.get(d, d) for d in datasets if d not in QUOTED_DATASETS]
    if unquoted:
        notes.append(f"The paper quotes no numbers for {', '.join(unquoted)}: no quoted row or cost appears under it; "
                     "compare those columns only with each other.")
    if col.missing:
        notes.append(f"Missing runs rendered as --: {len(col.missing)}.")
    return Table(groups, columns, rows, quoted, bold, "Comparison on few-shot image classification benchmarks (copy of "
                 "Table 1 of MetaNTK-NAS, CVPR 2022).", notes)


def table2(col: Collected, dataset: str, cells: list[int]) -> Table:
    groups = [("", 4), ("1-shot", len(cells)), ("5-shot", len(cells))]
    columns = ["Model", "MetaNTK", "NTK", "Linear Region"] + [f"{c} Cells" for c in cells] * 2
    rows = []
    for meth, name, m, n, r in TABLE2_ROWS:
        rows.append([name, m, n, r] + [stat(col.per_seed.get((dataset, meth, c, s))) for s in (1, 5) for c in cells])
    return Table(groups, columns, rows, [False] * len(rows), [list(range(len(rows)))],
                 f"Ablation study on {DATASET_TITLES.get(dataset, dataset)} (copy of Table 2 of MetaNTK-NAS).",
                 [seeds_note(col, [(dataset, m, c, s) for m, *_ in TABLE2_ROWS for c in cells for s in (1, 5)])])


def comparison(col: Collected, lit: dict[str, Any], datasets: list[str], cells: list[int]) -> pd.DataFrame:
    """Ours next to the paper's value, with the difference, for every cell we produce."""
    rows = []
    paper = lit["paper_rows"]
    for d in datasets:
        key = d if d in QUOTED_DATASETS else None
        for meth in sorted({m for (dd, m, _, _) in col.per_seed if dd == d}):
            for c in cells:
                for s in (1, 5):
                    ours = stat(col.per_seed.get((d, meth, c, s)))
                    if ours.mean is None:
                        continue
                    ref = None
                    if key == "mini" and meth in paper["table2"]:
                        ref = paper["table2"][meth].get(str(c), {}).get(f"shot{s}")
                    elif key and meth in paper["table1"]:
                        ref = paper["table1"][meth].get(str(c), {}).get(key, {}).get(f"shot{s}")
                    none = f"no paper value for {DATASET_TITLES.get(d, d)} data" if key is None else "--"
                    rows.append({"dataset": d, "method": meth, "cells": c, "shots": s, "ours": ours.fmt(),
                                 "paper": none if ref is None else f"{ref[0]:.2f} ± {ref[1]:.2f}",
                                 "difference": "--" if ref is None else f"{ours.mean - ref[0]:+.2f}",
                                 "seeds": ours.n})
    return pd.DataFrame(rows, columns=["dataset", "method", "cells", "shots", "ours", "paper", "difference", "seeds"])

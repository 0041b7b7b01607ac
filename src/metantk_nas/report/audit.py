"""Provenance audit: walk from an artifact back to the raw data through the ``.prov.json`` records.

For every artifact: its record exists and lists it with the sha256 it has now; every input of the record exists
with the recorded sha256 and is itself audited (an input without a record is a leaf: a raw dataset file or a
config file, checked by hash only); every record names a known code commit with a clean tree.  The first
problem of each kind is reported naming the file; the walk continues so that all broken links are listed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..provenance import read_provenance, sha256_file


@dataclass
class AuditReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def _key(path: Path) -> str:
    return str(path.resolve())


def audit(target: str | Path, allow_dirty: bool = False) -> AuditReport:
    report = AuditReport()
    _walk(Path(target), report, 0, allow_dirty, leaf_ok=False)
    return report


def _walk(path: Path, rep: AuditReport, depth: int, allow_dirty: bool, leaf_ok: bool,
          expected: str | None = None) -> None:
    pad = "  " * depth
    if not path.exists():
        rep.problems.append(f"{path}: missing file")
        rep.lines.append(f"{pad}MISSING {path}")
        return
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        rep.problems.append(f"{path}: sha256 {digest[:12]} differs from the recorded {expected[:12]} (file changed)")
        rep.lines.append(f"{pad}CHANGED {path}")
    if _key(path) in rep.visited:
        return
    rep.visited.add(_key(path))
    rec = read_provenance(path)
    if rec is None:
        if leaf_ok:
            rep.lines.append(f"{pad}{path} [source {digest[:12]}]")
        else:
            rep.problems.append(f"{path}: no provenance record ({path.name}.prov.json)")
            rep.lines.append(f"{pad}NO RECORD {path}")
        return
    own = {_key(Path(p)): h for p, h in rec["outputs"].items()}
    if _key(path) not in own:
        rep.problems.append(f"{path}: its provenance record does not list it as an output")
    elif own[_key(path)] != digest:
        rep.problems.append(f"{path}: sha256 {digest[:12]} differs from the recorded {own[_key(path)][:12]} (file changed)")
    code = rec.get("code", {})
    if code.get("commit", "unknown") == "unknown":
        rep.problems.append(f"{path}: produced by an unknown code version")
    elif code.get("dirty") and not allow_dirty:
        rep.problems.append(f"{path}: produced by uncommitted code (commit {code['commit'][:10]} + local changes)")
    slurm = rec.get("slurm") or {}
    job = f" slurm {slurm.get('job_id')}" if slurm.get("job_id") else ""
    rep.lines.append(f"{pad}{path} [{rec['stage']} @ {code.get('commit', '?')[:10]}{'+dirty' if code.get('dirty') else ''}"
                     f"{job}, config {rec.get('config_hash', '?')[:10]}]")
    for inp, h in rec["inputs"].items():
        _walk(Path(inp), rep, depth + 1, allow_dirty, leaf_ok=True, expected=h)

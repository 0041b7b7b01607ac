#!/usr/bin/env python
"""Does the code use a torch name that the oldest supported torch lacks?  A static audit for pyproject.toml's range.

The oldest supported torch (2.11) cannot be imported on a CPU-only machine from the package index: its Linux wheel
needs CUDA's libraries (several GB).  Its Python sources can still be read.  This lists every identifier that the
installed torch's sources define and the given wheel's do not, and reports those that the project writes after
`torch.` (in src/, scripts/, bench/, tests/, workflow/).  It does not see methods called on tensors or modules, nor
C++-only changes: the GPU check on a machine with that torch is the proof (README: GPU).

  pip download torch==2.11.0 --no-deps -d /tmp/torch-old          # about 0.5 GB, nothing installed
  .venv/bin/python bench/torch_api_audit.py /tmp/torch-old/torch-2.11.0-*.whl

Seen on 2026-12-08 against torch 2.11.0 (the installed torch 2.13.0): none.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
TORCH_NAME = re.compile(r"\btorch(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def wheel_identifiers(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {i for n in z.namelist() if n.startswith("torch/") and n.endswith((".py", ".pyi"))
                for i in IDENT.findall(z.read(n).decode(errors="ignore"))}


def tree_identifiers(root: Path) -> set[str]:
    return {i for f in root.rglob("*") if f.suffix in (".py", ".pyi")
            for i in IDENT.findall(f.read_text(errors="ignore"))}


def used_names(root: Path = ROOT) -> dict[str, set[str]]:
    """Each attribute written after ``torch.`` in the project -> the files that write it."""
    used: dict[str, set[str]] = {}
    for folder in ("src", "scripts", "bench", "tests", "workflow"):
        for f in (root / folder).rglob("*"):
            if f.suffix in (".py", ".smk"):
                for m in TORCH_NAME.finditer(f.read_text()):
                    for part in m.group(0).split(".")[1:]:
                        used.setdefault(part, set()).add(str(f.relative_to(root)))
    return used


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wheel", help="the older torch's wheel (pip download torch==X --no-deps)")
    args = p.parse_args(argv)
    import torch

    new = tree_identifiers(Path(torch.__file__).parent)
    old = wheel_identifiers(Path(args.wheel))
    hits = {name: files for name, files in used_names().items() if name in new - old}
    print(f"installed torch {torch.__version__} against {Path(args.wheel).name}: "
          f"{len(new - old)} identifiers only in the installed one; used by the project: "
          + (", ".join(f"{n} ({', '.join(sorted(f))})" for n, f in sorted(hits.items())) or "none"))
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())

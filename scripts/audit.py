#!/usr/bin/env python
"""audit: prove where an artifact came from. Walks the provenance records from TARGET (a table, a model, a
genotype, ...) back to the raw data: every recorded sha256 must match the file on disk, every stage must name a
committed code version. Prints the tree; exits 1 naming every broken link (changed or missing file, missing
record, dirty or unknown code).

Example:
  .venv/bin/python scripts/audit.py results/smoke/tables/table1.tex
"""
import argparse
import sys

from metantk_nas.report.audit import audit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="+", help="artifact(s) to audit")
    p.add_argument("--allow-dirty", action="store_true", help="accept artifacts made by uncommitted code")
    p.add_argument("--quiet", action="store_true", help="print only problems and the verdict")
    args = p.parse_args(argv)
    ok = True
    for t in args.target:
        rep = audit(t, allow_dirty=args.allow_dirty)
        if not args.quiet:
            print("\n".join(rep.lines))
        for prob in rep.problems:
            print(f"audit: {prob}", file=sys.stderr)
        print(f"audit {t}: {'OK' if rep.ok else 'FAILED'} ({len(rep.visited)} artifacts checked, "
              f"{len(rep.problems)} problems)")
        ok &= rep.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Sampled mutation score of one module (bench/mutation.sh SAMPLE=M runs it in the module's scratch copy).

mutmut generates every mutant of the module; this draws a seeded random sample of M of them, runs each (mutmut runs
the tests that reach the mutated function, with its own timeout), and appends each outcome to ``sampled.tsv`` as
soon as it is known, so a rerun resumes after the last finished one. It prints killed/M with a 95% Wilson interval:
the score to quote. A timeout counts as killed and is shown separately.

Example (inside $MUTATION_DIR/<module>, where bench/mutation.sh wrote setup.cfg):
  python bench/mutation_sample.py --mutmut .venv/bin/mutmut --module search/pruning.py --sample 120 --seed 0
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("mutation_sample")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
STATUS = re.compile(r"^\s*(\S+):\s*(killed|survived|no tests|timeout|suspicious|skipped|segfault|not checked|"
                    r"caught by type check)\s*$")


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def statuses(mutmut: str) -> dict[str, str]:
    """Every mutant of this copy and its status (`mutmut results --all true`)."""
    out = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for line in out.splitlines() if (m := STATUS.match(line))}


def read_done(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = (line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {r[0]: r[1] for r in rows if len(r) >= 2}


def sample(names: list[str], m: int, seed: int) -> list[str]:
    """M names drawn without replacement from the sorted list (the same sample for the same mutants and seed)."""
    return random.Random(seed).sample(sorted(names), min(m, len(names)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mutmut", required=True, help="the mutmut executable")
    p.add_argument("--module", required=True, help="the module's path under src/metantk_nas/ (for the report)")
    p.add_argument("--sample", type=int, default=120, help="mutants to draw (default 120)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument("--max-children", type=int, default=2, help="mutmut's parallel workers")
    p.add_argument("--batch", type=int, default=4, help="mutants per mutmut call: outcomes are saved after each")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path("sampled.tsv")
    names = list(statuses(args.mutmut))
    if not names:   # first run in this copy: mutmut generates the mutants and its test map; no mutant runs
        subprocess.run([args.mutmut, "run", "--max-children", str(args.max_children), "no_such_mutant"],
                       capture_output=True, text=True)
        names = list(statuses(args.mutmut))
    if not names:
        log.error("mutation_sample: mutmut generated no mutants here (see run.log)")
        return 2
    chosen = sample(names, args.sample, args.seed)
    done = read_done(out)
    if not out.exists():
        out.write_text(f"# {args.module}: {len(chosen)} of {len(names)} mutants, seed {args.seed}\n")
    todo = [n for n in chosen if n not in done]
    log.info("%s: %d mutants, sample %d (seed %d), %d done, %d to run", args.module, len(names), len(chosen),
             args.seed, len(chosen) - len(todo), len(todo))
    for i in range(0, len(todo), args.batch):
        batch, t0 = todo[i:i + args.batch], time.perf_counter()
        subprocess.run([args.mutmut, "run", "--max-children", str(args.max_children), *batch], capture_output=True,
                       text=True)
        now = statuses(args.mutmut)
        with out.open("a") as f:
            for n in batch:
                f.write(f"{n}\t{now.get(n, 'not checked')}\t{(time.perf_counter() - t0) / len(batch):.1f}\n")
        log.info("  %d/%d", min(i + args.batch, len(todo)) + len(chosen) - len(todo), len(chosen))
    done = read_done(out)
    res = [done[n] for n in chosen if n in done]
    killed = sum(s in KILLED for s in res)
    lo, hi = wilson(killed, len(res))
    survived = [n for n in chosen if done.get(n) == "survived"]
    print(f"{args.module:<28} sampled {len(res):>4} of {len(names):>5}  killed {killed:>4} (timeouts "
          f"{sum(s == 'timeout' for s in res)})  survived {len(survived):>3}  other "
          f"{len(res) - killed - len(survived):>3}  score {100 * killed / max(len(res), 1):.0f}% "
          f"[{100 * lo:.0f}%, {100 * hi:.0f}%]")
    for n in survived:
        print(f"  survived: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

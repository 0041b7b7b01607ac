#!/usr/bin/env python
"""Sampled mutation score of one module (bench/mutation.sh SAMPLE=M runs it in the module's scratch copy).

mutmut generates every mutant of the module; this draws a seeded random sample of M of them and runs them in one
``mutmut run`` (mutmut runs the tests that reach the mutated function, fastest first, stopping at the first failure,
with its own timeout). mutmut saves each verdict as it comes; this polls them and appends each outcome to
``sampled.tsv`` as soon as it is known, so a rerun (after a kill) resumes with the mutants still unrun. One call, not
one per few mutants: every ``mutmut run`` first runs the clean tests of its mutants once, which for the kernels'
tests cost as much as the mutants themselves. It prints killed/M with a 95% Wilson interval: the score to quote. A
timeout counts as killed and is shown separately.

Example (inside $MUTATION_DIR/<module>, where bench/mutation.sh wrote setup.cfg):
  .venv/bin/python bench/mutation_sample.py --mutmut .venv/bin/mutmut --module search/pruning.py --sample 120 --seed 0
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


def record(out: Path, todo: list[str], seen: set[str], now: dict[str, str], t0: float) -> int:
    """Append the verdicts of ``todo`` that mutmut has saved and ``seen`` lacks; returns how many were new."""
    new = [n for n in todo if n not in seen and now.get(n, "not checked") != "not checked"]
    with out.open("a") as f:
        for n in new:
            f.write(f"{n}\t{now[n]}\t{time.perf_counter() - t0:.1f}\n")
    seen.update(new)
    return len(new)


def run_sample(mutmut: str, max_children: int, todo: list[str], out: Path, total: int, poll: float) -> None:
    """One ``mutmut run`` of ``todo``; every verdict is appended to ``out`` (name, status, seconds since the start)
    within ``poll`` seconds of mutmut saving it; any mutmut leaves unrun stay out of it (a rerun runs them)."""
    if not todo:
        return
    seen: set[str] = set()
    t0 = time.perf_counter()
    with subprocess.Popen([mutmut, "run", "--max-children", str(max_children), *todo], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as proc:
        while proc.poll() is None:
            time.sleep(poll)
            if record(out, todo, seen, statuses(mutmut), t0):
                log.info("  %d/%d", total - len(todo) + len(seen), total)
    record(out, todo, seen, statuses(mutmut), t0)
    missing = [n for n in todo if n not in seen]
    if missing:   # mutmut stopped before them (its clean run failed?): say so, a rerun tries them again
        log.warning("mutation_sample: mutmut (exit %d) left %d mutants unrun: %s", proc.returncode, len(missing),
                    " ".join(missing[:5]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mutmut", required=True, help="the mutmut executable")
    p.add_argument("--module", required=True, help="the module's path under src/metantk_nas/ (for the report)")
    p.add_argument("--sample", type=int, default=120, help="mutants to draw (default 120)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument("--max-children", type=int, default=2, help="mutmut's parallel workers")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between reads of mutmut's verdicts")
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
    run_sample(args.mutmut, args.max_children, todo, out, len(chosen), args.poll)
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

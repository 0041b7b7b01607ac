"""One line per finished job: ``snakemake --quiet rules host reason ... 2>&1 | python -m metantk_nas.progress``.

Snakemake's quiet mode still prints a timestamp, "Finished jobid: N (Rule: R)", "k of n steps (p%) done" and
"Select jobs to execute..." per job.  This filter folds each finished job into one line,

    [ 12/79  15%  1m02s] search

and passes every other line through unchanged (errors, warnings, a job's own output), so nothing is hidden.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Iterable, Iterator, TextIO

_NOISE = re.compile(r"^(\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]|Select jobs to execute\.\.\.|Execute \d+ jobs\.\.\.|"
                    r"Assuming unrestricted shared filesystem usage\.|host: .*|Building DAG of jobs\.\.\.|"
                    r"Using shell: .*|Provided cores: \d+|Rules claiming more threads will be scaled down\.|)$")
_TABLE_ROW = re.compile(r"^(job +count|-+ +-+|\w+ +\d+)$")   # rows of the "Job stats:" table
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
_STEPS = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done$")


def fold(lines: Iterable[str], clock=time.monotonic) -> Iterator[str]:
    start = clock()
    rule = None
    in_stats = False
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("Job stats:"):
            in_stats = True
            yield line
            continue
        if in_stats:
            in_stats = bool(line.strip())
            if _TABLE_ROW.match(line.strip()):
                yield line
                continue
        m = _FINISHED.match(line)
        if m:
            rule = m.group(2)
            continue
        m = _STEPS.match(line)
        if m:
            secs = int(clock() - start)
            done, total, pct = m.groups()
            yield f"[{int(done):>4}/{total} {int(pct):>3}% {secs // 60:>3}m{secs % 60:02d}s] {rule or ''}".rstrip()
            rule = None
            continue
        if _NOISE.match(line.strip()):
            continue
        yield line


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    for line in fold(stdin):
        print(line, file=stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo's terminal output: one line per finished job, everything else Snakemake says passes through."""
from metantk_nas.progress import fold

SNAKEMAKE_QUIET = """Building DAG of jobs...
Job stats:
job       count
------  -------
all           1
train        20

Select jobs to execute...
Execute 1 jobs...
[Wed Dec  2 13:07:06 2026]
Finished jobid: 12 (Rule: search)
1 of 79 steps (1%) done
Error in rule train:
    jobid: 7
[Wed Dec  2 13:09:06 2026]
Finished jobid: 1 (Rule: tables)
79 of 79 steps (100%) done
"""


def test_each_finished_job_is_one_line_and_errors_pass_through():
    times = iter([0.0, 5.0, 125.0])
    out = list(fold(SNAKEMAKE_QUIET.splitlines(True), clock=lambda: next(times)))
    assert out == ["Job stats:", "job       count", "------  -------", "all           1", "train        20",
                   "[   1/79   1%   0m05s] search", "Error in rule train:", "    jobid: 7",
                   "[  79/79 100%   2m05s] tables"]

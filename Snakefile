# MetaNTK-NAS reproduction DAG. What runs is decided by the config (see config/README.md), never by editing rules:
#   snakemake --cores 2 --configfile config/smoke.yaml     # the embedded synthetic demo (what `make demo` runs)
#   snakemake --profile slurm                               # the paper grid on a SLURM cluster
#   snakemake study --cores 2 --configfile config/smoke.yaml   # the score-vs-accuracy study (Table 3), not in `all`


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/study.smk"


rule all:
    default_target: True
    input:
        f"{RES}/tables/table1.tex",
        f"{RES}/tables/table2.tex",
        [f"{RES}/{c.stem}.png" for c in COMPARISONS],

TABLE_FILES = [
    f"{t}.{e}" for t in ("table1", "table2") for e in ("tex", "md", "csv")
] + ["comparison.csv", "comparison.md", "summary.txt"]


rule tables:
    """Every run's fewshot/metrics/cost + config/literature.yaml -> Tables 1 and 2 (tex, md, csv) + comparison."""
    input:
        fewshot=[f"{RES}/{r.path}/fewshot.json" for r in RUNS],
        metrics=[f"{RES}/{r.path}/metrics.json" for r in RUNS],
        literature=config["tables"]["literature"],
    output:
        [
            (
                report(
                    f"{RES}/tables/{f}",
                    caption="../report/tables.rst",
                    category="Tables",
                )
                if f.endswith(".csv")
                else f"{RES}/tables/{f}"
            )
            for f in TABLE_FILES
        ],
    log:
        f"{RES}/logs/tables.log",
    conda:
        stage_env("tables")
    threads: stage_threads("tables")
    resources:
        **stage_resources("tables"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        results=results_dir,
        out=output_dir,
        cfg=params_hash("tables"),
    shell:
        "{params.py} scripts/tables.py --configfile {params.configfiles} --results {params.results} --out {params.out} 2> {log}"

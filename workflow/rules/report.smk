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


rule compare_cells:
    """The cells of every method of one (dataset, cells, seed) side by side, for the report."""
    input:
        genotypes=lambda wc: [
            f"{RES}/{wc.dataset}/{m}/cells{wc.cells}/seed{wc.seed}/genotype.json"
            for m in compared(wc).methods
        ],
    output:
        png=report(
            f"{RES}/figures/cells-{{dataset}}-{{cells}}-{{seed}}.png",
            caption="../report/compare_cells.rst",
            category="Cells",
            subcategory="{dataset} {cells} cells: every method",
        ),
        pdf=f"{RES}/figures/cells-{{dataset}}-{{cells}}-{{seed}}.pdf",
    log:
        f"{RES}/logs/compare_cells/{{dataset}}-{{cells}}-{{seed}}.log",
    conda:
        stage_env("export_genotype")
    threads: stage_threads("export_genotype")
    resources:
        **stage_resources("export_genotype"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        specs=lambda wc, input: " ".join(
            f"{m}={p}" for m, p in zip(compared(wc).methods, input.genotypes)
        ),
        stem=lambda wc, output: output.png[: -len(".png")],
    shell:
        "{params.py} scripts/compare_cells.py --configfile {params.configfiles} --genotypes {params.specs} "
        "--title '{wildcards.dataset}, {wildcards.cells} cells, seed {wildcards.seed}: every method' "
        "--out {params.stem} 2> {log}"

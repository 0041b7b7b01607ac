rule search:
    """Pruning search (metantk, tenas, linreg) or a random cell -> search.json, cost.json."""
    input:
        f"{PREP}/{{dataset}}/manifest.json",
    output:
        search=f"{RUN_DIR}/search.json",
        cost=f"{RUN_DIR}/cost.json",
    wildcard_constraints:
        method=SEARCHED,
    params:
        out=lambda w: RUN_DIR.format(**w),
        cfg=params_hash("search"),
    log:
        f"{RES}/logs/search/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    threads: stage_threads("search")
    resources:
        **stage_resources("search"),
    shell:
        "{PY} scripts/search.py --configfile {CONFIGFILES} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--prepared {PREP}/{wildcards.dataset} --out {params.out} 2> {log}"


rule export_genotype:
    """search.json -> genotype.json, the DARTS string, cell diagrams."""
    input:
        search=f"{RUN_DIR}/search.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        genotype=f"{RUN_DIR}/genotype.json",
        text=f"{RUN_DIR}/genotype.txt",
        diagram=report(f"{RUN_DIR}/cell_normal.png", caption="../report/cell.rst", category="Cells",
                       subcategory="{dataset} {method} {cells} cells"),
    wildcard_constraints:
        method=SEARCHED,
    params:
        out=lambda w: RUN_DIR.format(**w),
        cfg=sha256_json(config["export"])[:16],
    log:
        f"{RES}/logs/export_genotype/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    threads: stage_threads("export_genotype")
    resources:
        **stage_resources("export_genotype"),
    shell:
        "{PY} scripts/export_genotype.py --configfile {CONFIGFILES} --search {input.search} "
        "--prepared {PREP}/{wildcards.dataset} --out {params.out} 2> {log}"


rule published_genotype:
    """method=metanas: the published MetaNAS v2 cell (config/genotypes.yaml), no search."""
    input:
        config["tables"]["genotypes"],
    output:
        genotype=f"{RUN_DIR}/genotype.json",
        text=f"{RUN_DIR}/genotype.txt",
        diagram=report(f"{RUN_DIR}/cell_normal.png", caption="../report/cell.rst", category="Cells",
                       subcategory="{dataset} {method} {cells} cells"),
    wildcard_constraints:
        method="metanas",
    params:
        out=lambda w: RUN_DIR.format(**w),
    log:
        f"{RES}/logs/export_genotype/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    threads: stage_threads("export_genotype")
    resources:
        **stage_resources("export_genotype"),
    shell:
        "{PY} scripts/export_genotype.py --configfile {CONFIGFILES} --published metanas_in_v2 --out {params.out} 2> {log}"

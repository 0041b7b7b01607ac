rule search:
    """Pruning search (metantk, tenas, linreg) or a random cell -> search.json, cost.json."""
    input:
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        search=f"{RUN_DIR}/search.json",
        cost=f"{RUN_DIR}/cost.json",
    log:
        f"{RES}/logs/search/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    wildcard_constraints:
        method=SEARCHED,
    conda:
        stage_env("search")
    threads: stage_threads("search")
    resources:
        **stage_resources("search"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        prepared=prepared_dir,
        out=run_dir,
        cfg=params_hash("search"),
    shell:
        "exec {params.py} scripts/search.py --configfile {params.configfiles} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--prepared {params.prepared} --out {params.out} 2> {log}"


rule export_genotype:
    """search.json -> genotype.json, the DARTS string, cell diagrams."""
    input:
        search=f"{RUN_DIR}/search.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        genotype=f"{RUN_DIR}/genotype.json",
        text=f"{RUN_DIR}/genotype.txt",
        diagram=report(
            f"{RUN_DIR}/cell_normal.png",
            caption="../report/cell.rst",
            category="Cells",
            subcategory="{dataset} {method} {cells} cells",
        ),
    log:
        f"{RES}/logs/export_genotype/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    wildcard_constraints:
        method=SEARCHED,
    conda:
        stage_env("export_genotype")
    threads: stage_threads("export_genotype")
    resources:
        **stage_resources("export_genotype"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        prepared=prepared_dir,
        out=run_dir,
        cfg=params_hash("export_genotype"),
    shell:
        "{params.py} scripts/export_genotype.py --configfile {params.configfiles} --search {input.search} "
        "--prepared {params.prepared} --out {params.out} "
        "--title '{wildcards.dataset}, {wildcards.method}, {wildcards.cells} cells, seed {wildcards.seed}' "
        "2> {log}"


rule published_genotype:
    """The published method (metanas): the MetaNAS v2 cell (config/genotypes.yaml), no search."""
    input:
        config["tables"]["genotypes"],
    output:
        genotype=f"{RUN_DIR}/genotype.json",
        text=f"{RUN_DIR}/genotype.txt",
        diagram=report(
            f"{RUN_DIR}/cell_normal.png",
            caption="../report/cell.rst",
            category="Cells",
            subcategory="{dataset} {method} {cells} cells",
        ),
    log:
        f"{RES}/logs/export_genotype/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    wildcard_constraints:
        method=PUBLISHED_METHOD,
    conda:
        stage_env("export_genotype")
    threads: stage_threads("export_genotype")
    resources:
        **stage_resources("export_genotype"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        out=run_dir,
    shell:
        "{params.py} scripts/export_genotype.py --configfile {params.configfiles} --published metanas_in_v2 --out {params.out} "
        "--title '{wildcards.dataset}, {wildcards.method}, {wildcards.cells} cells, seed {wildcards.seed}' "
        "2> {log}"

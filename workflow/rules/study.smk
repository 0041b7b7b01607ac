# The score-vs-accuracy study (docs/study.md): `snakemake study`. Not part of `all`. Its architectures are runs
# of the grid's tree: N random cells (the search rule with method random, seeds first_seed ..) plus the grid's
# searched cells. Their accuracies come from the same train/evaluate rules: the grid's own runs with the full
# recipe and episodes, or (a study.budgets recipe, or study.episodes) the same rules on results/{exp}/study-runs.
rule study_score:
    """The training-free scores of one architecture: MetaNTK kappa (MAML, ANIL), NTK kappa, linear regions, #params."""
    input:
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        f"{RUN_DIR}/scores.json",
    log:
        f"{RES}/logs/study_score/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
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
        cfg=params_hash("study_score"),
    shell:
        "{params.py} scripts/study_score.py --configfile {params.configfiles} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--genotype {input.genotype} --prepared {params.prepared} --out {params.out} 2> {log}"


use rule train as study_train with:
    input:
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        model=f"{STUDY_RUN_DIR}/model.pt",
        log_csv=f"{STUDY_RUN_DIR}/train_log.csv",
        curve=f"{STUDY_RUN_DIR}/train_curve.png",
        metrics=f"{STUDY_RUN_DIR}/metrics.json",
    log:
        f"{RES}/logs/study_train/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    params:
        out=study_run_dir,
        cfg=params_hash("study_train"),
        study="--study",


use rule evaluate as study_evaluate with:
    input:
        model=f"{STUDY_RUN_DIR}/model.pt",
        metrics=f"{STUDY_RUN_DIR}/metrics.json",
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        f"{STUDY_RUN_DIR}/fewshot.json",
    log:
        f"{RES}/logs/study_evaluate/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    params:
        out=study_run_dir,
        cfg=params_hash("study_evaluate"),
        study="--study",


rule study:
    """Every architecture's scores and accuracy -> Table 3a (tau, rho over the random sample, bootstrap CIs), 3b (the
    searched cells within it), stability against chance, scatter plots."""
    input:
        scores=[f"{RES}/{r.path}/scores.json" for r in STUDY_RUNS],
        fewshot=[f"{STUDY_TREE}/{r.path}/fewshot.json" for r in STUDY_RUNS],
        genotypes=[f"{RES}/{r.path}/genotype.json" for r in STUDY_GRID],
    output:
        [f"{STUDY_OUT}/{f}" for f in STUDY_TABLES],
        [
            report(
                f"{STUDY_OUT}/{n}.csv",
                caption=f"../report/{n}.rst",
                category="Study",
                subcategory="Tables",
            )
            for n in ("study", "searched", "stability")
        ],
        [
            report(
                f"{STUDY_OUT}/{f}",
                caption="../report/scatter.rst",
                category="Study",
                subcategory=scatter_subcategory(f),
            )
            for f in study_figures(config)
        ],
    log:
        f"{RES}/logs/study.log",
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
        cfg=params_hash("study"),
    shell:
        "{params.py} scripts/study.py --configfile {params.configfiles} --results {params.results} --out {params.out} 2> {log}"

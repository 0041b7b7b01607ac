rule train:
    """RFS pre-training of the evaluation network (resumes from {RUN_DIR}/checkpoints after a kill)."""
    input:
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        model=f"{RUN_DIR}/model.pt",
        log_csv=f"{RUN_DIR}/train_log.csv",
        curve=report(
            f"{RUN_DIR}/train_curve.png",
            caption="../report/train_curve.rst",
            category="Training curves",
            subcategory="{dataset} {method} {cells} cells",
        ),
        metrics=f"{RUN_DIR}/metrics.json",
    log:
        f"{RES}/logs/train/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    conda:
        stage_env("train")
    threads: stage_threads("train")
    resources:
        **stage_resources("train"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        prepared=prepared_dir,
        out=run_dir,
        cfg=params_hash("train"),
        study="",
    shell:
        "exec {params.py} scripts/train.py --configfile {params.configfiles} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--genotype {input.genotype} --prepared {params.prepared} --out {params.out} {params.study} 2> {log}"


rule evaluate:
    """Few-shot evaluation on the test classes -> fewshot.json."""
    input:
        model=f"{RUN_DIR}/model.pt",
        metrics=f"{RUN_DIR}/metrics.json",
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        f"{RUN_DIR}/fewshot.json",
    log:
        f"{RES}/logs/evaluate/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    conda:
        stage_env("evaluate")
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    params:
        py=PY,
        configfiles=CONFIGFILES,
        prepared=prepared_dir,
        out=run_dir,
        cfg=params_hash("evaluate"),
        study="",
    shell:
        "{params.py} scripts/evaluate.py --configfile {params.configfiles} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--model {input.model} --genotype {input.genotype} --prepared {params.prepared} --out {params.out} {params.study} 2> {log}"

rule train:
    """RFS pre-training of the evaluation network (resumes from {RUN_DIR}/checkpoints after a kill)."""
    input:
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        model=f"{RUN_DIR}/model.pt",
        log_csv=f"{RUN_DIR}/train_log.csv",
        curve=report(f"{RUN_DIR}/train_curve.png", caption="../report/train_curve.rst", category="Training curves",
                     subcategory="{dataset} {method} {cells} cells"),
        metrics=f"{RUN_DIR}/metrics.json",
    params:
        out=lambda w: RUN_DIR.format(**w),
        cfg=params_hash("train"),
    log:
        f"{RES}/logs/train/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    threads: stage_threads("train")
    resources:
        **stage_resources("train"),
    shell:
        "{PY} scripts/train.py --configfile {CONFIGFILES} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--genotype {input.genotype} --prepared {PREP}/{wildcards.dataset} --out {params.out} 2> {log}"


rule evaluate:
    """Few-shot evaluation on the test classes -> fewshot.json."""
    input:
        model=f"{RUN_DIR}/model.pt",
        genotype=f"{RUN_DIR}/genotype.json",
        data=f"{PREP}/{{dataset}}/manifest.json",
    output:
        f"{RUN_DIR}/fewshot.json",
    params:
        out=lambda w: RUN_DIR.format(**w),
        cfg=params_hash("evaluate"),
    log:
        f"{RES}/logs/evaluate/{{dataset}}-{{method}}-{{cells}}-{{seed}}.log",
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    shell:
        "{PY} scripts/evaluate.py --configfile {CONFIGFILES} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--cells {wildcards.cells} --seed {wildcards.seed} --threads {threads} --no-progress "
        "--model {input.model} --genotype {input.genotype} --prepared {PREP}/{wildcards.dataset} --out {params.out} 2> {log}"

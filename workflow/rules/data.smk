PREPARED_FILES = ["manifest.json"] + [f"{s}_{k}.npy" for s in ("train", "val", "test") for k in ("images", "labels")]


rule prepare_data:
    """Raw RFS files (or the synthetic generator) -> the prepared, memory-mappable format."""
    output:
        [f"{PREP}/{{dataset}}/{f}" for f in PREPARED_FILES],
    params:
        cfg=lambda w: params_hash("prepare_data", w.dataset),
    log:
        f"{RES}/logs/prepare_data/{{dataset}}.log",
    threads: stage_threads("prepare_data")
    resources:
        **stage_resources("prepare_data"),
    shell:
        "{PY} scripts/prepare_data.py --configfile {CONFIGFILES} --dataset {wildcards.dataset} "
        "--out {PREP}/{wildcards.dataset} 2> {log}"

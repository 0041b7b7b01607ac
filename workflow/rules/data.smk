PREPARED_FILES = ["manifest.json"] + [
    f"{s}_{k}.npy" for s in ("train", "val", "test") for k in ("images", "labels")
]


rule prepare_data:
    """Raw RFS files (or the synthetic generator) -> the prepared, memory-mappable format."""
    input:
        raw_inputs,
    output:
        [f"{PREP}/{{dataset}}/{f}" for f in PREPARED_FILES],
    log:
        f"{RES}/logs/prepare_data/{{dataset}}.log",
    conda:
        stage_env("prepare_data")
    threads: stage_threads("prepare_data")
    resources:
        **stage_resources("prepare_data"),
    params:
        prepared=output_dir,
        py=PY,
        configfiles=CONFIGFILES,
        cfg=lambda w: params_hash("prepare_data", w.dataset),
    shell:
        "{params.py} scripts/prepare_data.py --configfile {params.configfiles} --dataset {wildcards.dataset} "
        "--out {params.prepared} 2> {log}"

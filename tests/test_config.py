"""The config: the paper config against the paper, merging, the schema's one-line errors naming the key, every
script's refusal of a bad config, the device and determinism switches, the recording view of a config."""
import copy

import pytest
import yaml

from metantk_nas.config import (iter_runs, kernel_spec, load_config, search_config, train_config, validate_config)
from metantk_nas.errors import ConfigError

from helpers import ROOT

PAPER = [ROOT / "config/config.yaml"]
SMOKE = PAPER + [ROOT / "config/smoke.yaml"]


def paper():
    return load_config(PAPER)


def test_paper_grid_is_the_papers():
    runs = list(iter_runs(paper()))
    # mini x 5 methods x 2 cell counts x 3 seeds + tiered x 2 methods x 2 x 3
    assert len(runs) == 5 * 2 * 3 + 2 * 2 * 3


def test_paper_kernels_follow_the_original_scripts():
    cfg = paper()
    assert kernel_spec(cfg, "mini", 5).inner == "maml" and kernel_spec(cfg, "mini", 5).inner_time == float("inf")
    k = kernel_spec(cfg, "mini", 8)
    assert (k.inner, k.inner_time, k.reg) == ("anil", 1.0, 1e-5)
    k = kernel_spec(cfg, "tiered", 8)
    assert (k.inner, k.inner_time, k.reg) == ("anil", float("inf"), 1e-3)


def test_paper_training_recipes():
    cfg = paper()
    m = train_config(cfg, "mini", 8, 0)
    assert (m.lr, m.epochs, m.decay_epochs, m.batch_size, m.drop_path) == (0.02, 100, (60, 80), 40, 0.2)
    t = train_config(cfg, "tiered", 5, 0)
    assert (t.lr, t.epochs, t.decay_epochs, t.batch_size, t.drop_path) == (0.01, 60, (30, 40, 50), 64, 0.1)
    assert (t.momentum, t.weight_decay) == (0.9, 5e-4)


def test_smoke_overlays_the_paper_config():
    cfg = load_config(SMOKE)
    assert cfg["experiment"] == "smoke" and cfg["search"]["precision"] == 3  # inherited
    assert search_config(cfg, "synthetic", "metantk", 5, 1).kernel.inner == "maml"


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["search"].update(repeats="three"), "search.repeats: expected integer"),
    (lambda c: c["search"].update(repats=3), "search: unknown key(s) 'repats'"),
    (lambda c: c["train"].update(momentum=1.5), "train.momentum: expected a value <= 1"),
    (lambda c: c["evaluate"].update(solver="svm"), "evaluate.solver: expected one of"),
    (lambda c: c["grid"][0].update(methods=["metantk", "darts"]), "grid.0.methods.1: expected one of"),
    (lambda c: c["grid"][0].update(dataset="imagenet"), "grid: dataset 'imagenet' is not defined"),
    (lambda c: c["search"]["kernels"]["mini"]["8"].update(inner="reptile"), "search.kernels.mini.8.inner"),
])
def test_bad_config_gives_one_line_naming_the_key(mutate, message):
    cfg = copy.deepcopy(paper())
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(PAPER + [bad])
    with pytest.raises(ConfigError, match="file not found"):
        load_config([tmp_path / "nope.yaml"])


SCRIPT_ARGS = {   # the required arguments of every script that reads the config (paths need not exist)
    "prepare_data": ["--dataset", "mini", "--out", "x"],
    "search": ["--dataset", "mini", "--method", "metantk", "--cells", "5", "--seed", "0", "--prepared", "p", "--out", "o"],
    "train": ["--dataset", "mini", "--method", "metantk", "--cells", "5", "--seed", "0", "--genotype", "g.json",
              "--prepared", "p", "--out", "o"],
    "evaluate": ["--dataset", "mini", "--method", "metantk", "--cells", "5", "--seed", "0", "--model", "m.pt",
                 "--genotype", "g.json", "--prepared", "p", "--out", "o"],
    "tables": ["--results", "r", "--out", "o"],
    "export_genotype": ["--search", "s.json", "--out", "o"],
    "make_dvc": ["--out", "dvc.yaml"],
    "compare_cells": ["--genotypes", "metantk=g.json", "--out", "o/cells"],
    "study_score": ["--dataset", "mini", "--method", "random", "--cells", "5", "--seed", "1000", "--genotype", "g.json",
                    "--prepared", "p", "--out", "o"],
    "study": ["--results", "r", "--out", "o"],
}


def test_every_script_rejects_a_bad_config_with_the_one_line_schema_error(tmp_path):
    from helpers import run_scripts

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochs_typo": 3}}))
    expected = ("error: config: train: unknown key(s) 'epochs_typo'; allowed: channels, channels_last, color_jitter, "
                "crop_padding, image_size, mixed_precision, momentum, recipes, weight_decay")
    scripts = list(SCRIPT_ARGS)
    procs = run_scripts([(ROOT / f"scripts/{s}.py", "--configfile", ROOT / "config/config.yaml", bad, *SCRIPT_ARGS[s])
                         for s in scripts], cwd=tmp_path)
    for script, proc in zip(scripts, procs):
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [expected], (script, proc.stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


def test_every_script_has_a_help_with_an_example():
    from helpers import run_scripts

    scripts = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
    for script, proc in zip(scripts, run_scripts([(f"scripts/{s}.py", "--help") for s in scripts])):
        assert proc.returncode == 0 and "usage" in proc.stdout and "Example" in proc.stdout, script
        assert f"scripts/{script}.py" in (ROOT / "README.md").read_text(), f"README lists no scripts/{script}.py"


def test_the_script_driver_reports_each_scripts_own_status_and_streams(tmp_path):
    """run_scripts against separate interpreters: the same return codes and stdout/stderr, script by script."""
    from helpers import run_script, run_scripts

    (tmp_path / "a.py").write_text("import sys, logging\nlogging.basicConfig()\nlogging.getLogger('x').warning('w')\n"
                                   "print('out'); sys.exit(int(sys.argv[1]))\n")
    (tmp_path / "b.py").write_text("import sys\nsys.exit('bye ' + sys.argv[1])\n")
    (tmp_path / "c.py").write_text("raise ValueError('boom')\n")
    jobs = [(tmp_path / "a.py", "3"), (tmp_path / "b.py", "x"), (tmp_path / "a.py", "0"), (tmp_path / "c.py",)]
    for job, got in zip(jobs, run_scripts(jobs)):
        want = run_script(*job, check=False)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), job
        assert got.stderr.splitlines()[-1] == want.stderr.splitlines()[-1], (got.stderr, want.stderr)


def test_the_search_refuses_metanas_whose_cell_is_published_with_one_line(tmp_path):
    from helpers import run_script

    args = [a if a != "metantk" else "metanas" for a in SCRIPT_ARGS["search"]]
    proc = run_script(ROOT / "scripts/search.py", "--configfile", ROOT / "config/config.yaml", *args, check=False,
                      cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "argument --method: invalid choice: 'metanas' (choose from 'metantk', 'tenas', 'linreg', 'random')")


def test_a_job_given_a_gpu_never_falls_back_to_the_cpu_silently():
    """device auto with a CPU torch: the CPU, unless the scheduler gave the job a GPU (SLURM_JOB_GPUS,
    SLURM_STEP_GPUS, CUDA_VISIBLE_DEVICES; empty, -1 and SLURM's NoDevFiles mean none): then one line naming the
    installed torch and how to install a CUDA build. device cpu stays the explicit way to run it on the CPU."""
    import torch

    from metantk_nas.cli import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA torch with a device: the fallback cannot happen here")
    assert resolve_device({"device": "auto"}, env={}) == torch.device("cpu")
    for none in ({"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}, {"SLURM_JOB_GPUS": "NoDevFiles"}):
        assert resolve_device({"device": "auto"}, env=none) == torch.device("cpu"), none
    assert resolve_device({"device": "cpu"}, env={"SLURM_JOB_GPUS": "0"}) == torch.device("cpu")
    for env, why in (({"SLURM_JOB_GPUS": "0"}, "'auto' in a job given a GPU (SLURM_JOB_GPUS=0)"),
                     ({"CUDA_VISIBLE_DEVICES": "1,2"}, "'auto' in a job given a GPU (CUDA_VISIBLE_DEVICES=1,2)"),
                     ({}, None)):
        cfg = {"device": "auto" if why else "cuda"}
        with pytest.raises(ConfigError) as e:
            resolve_device(cfg, env=env)
        msg = str(e.value)
        assert msg.startswith(f"config: device: {why or repr('cuda') + ' requested'}, but this torch is ")
        assert f"torch {torch.__version__}" in msg and "download.pytorch.org/whl/cu128" in msg
        assert msg.endswith("or set device: cpu to run on the CPU") and "\n" not in msg


def test_the_training_script_in_a_gpu_job_stops_at_once_with_the_one_line_error(tmp_path):
    import os

    from helpers import run_script

    env = {**os.environ, "SLURM_JOB_GPUS": "0"}
    proc = run_script(ROOT / "scripts/train.py", "--configfile", ROOT / "config/config.yaml", *SCRIPT_ARGS["train"],
                      check=False, cwd=tmp_path, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: config: device: 'auto' in a job given a GPU (SLURM_JOB_GPUS=0)")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def torch_determinism(monkeypatch):
    """torch's global determinism flags and CUBLAS_WORKSPACE_CONFIG, restored after the test."""
    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    yield torch
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


def test_deterministic_sets_torchs_flags_on_cuda_only(torch_determinism, monkeypatch):
    """deterministic: true -> torch's deterministic algorithms with warnings, cuBLAS's workspace setting (":4096:8",
    torch's documented value), no cuDNN autotuning; strict -> errors instead of warnings; false and the CPU: torch's
    defaults untouched. A device object of type cuda needs no GPU, so this runs on the CPU."""
    import os

    from metantk_nas.cli import set_determinism

    torch = torch_determinism
    cuda = torch.device("cuda")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    for mode, dev in ((False, cuda), (True, torch.device("cpu")), ("strict", torch.device("cpu"))):
        set_determinism(mode, dev)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark, (mode, dev)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    set_determinism(True, cuda)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
    set_determinism("strict", cuda)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")   # a user's own (smaller) workspace stays
    set_determinism(True, cuda)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_key_is_validated(tmp_path):
    for value, ok in (("true", True), ("false", True), ("strict", True), ("'yes'", False), ("2", False)):
        over = tmp_path / "d.yaml"
        over.write_text(f"deterministic: {value}\n")
        if ok:
            load_config([ROOT / "config/config.yaml", over])
        else:
            with pytest.raises(ConfigError, match=r"^config: deterministic: expected one of \[True, False, 'strict'\]"):
                load_config([ROOT / "config/config.yaml", over])


def test_the_recording_mapping_records_what_is_read_and_nothing_else():
    """What tests/test_stage_params.py counts as a stage's reads, by hand: a leaf returned, a mapping iterated
    (``**``, ``dict``, ``items``) as the whole path; ``in`` and a nested view taken without reading nothing."""
    from metantk_nas.config import RecordingMapping, stage_config_subset

    cfg = {"search": {"ops": ["a"], "fidelity": {"x": 1, "y": 2}, "kernels": {"mini": {"5": {"inner": "maml"}}}},
           "train": {"channels": 4}, "device": "cpu"}
    m = RecordingMapping(cfg)
    assert m["device"] == "cpu" and m.reads == {"device"}
    search = m["search"]
    assert isinstance(search, RecordingMapping) and m.reads == {"device"}       # a view: no read yet
    assert "ops" in search and "nope" not in search and m.reads == {"device"}
    assert search["ops"] == ["a"] and search.get("kernels", {}).get("mini")["5"]["inner"] == "maml"
    assert dict(**search["fidelity"]) == {"x": 1, "y": 2}
    assert m.reads == {"device", "search.ops", "search.kernels.mini.5.inner", "search.fidelity",
                       "search.fidelity.x", "search.fidelity.y"}
    assert len(m) == 3 and m.unwrapped() is cfg
    # the provenance's own reads of a stage's parameters are not the stage's
    before = set(m.reads)
    assert stage_config_subset(m, "evaluate") == {"train": {"channels": 4}}
    assert m.reads == before

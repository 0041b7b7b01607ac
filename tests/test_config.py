import copy

import pytest
import yaml

from metantk_nas.config import (iter_runs, kernel_spec, load_config, search_config, train_config, validate_config)
from metantk_nas.errors import ConfigError

from conftest import ROOT

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


def test_every_script_enforces_the_schema(tmp_path):
    from conftest import run_script

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochs_typo": 3}}))
    for script in ("prepare_data", "search", "train", "evaluate", "tables", "export_genotype"):
        proc = run_script(f"scripts/{script}.py", "--configfile", ROOT / "config/config.yaml", bad, "--help", check=False)
        assert proc.returncode == 0 and "usage" in proc.stdout  # --help works without a valid config
    proc = run_script("scripts/prepare_data.py", "--configfile", ROOT / "config/config.yaml", bad,
                      "--dataset", "mini", "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: config: train: unknown key(s) 'epochs_typo'; allowed: " \
        "channels, channels_last, color_jitter, crop_padding, image_size, mixed_precision, momentum, num_workers, " \
        "recipes, weight_decay"

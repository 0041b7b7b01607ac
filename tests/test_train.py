"""RFS training (fsl/train.py and scripts/train.py): the schedule, SGD against torch's, resumes and preemption to
identical weights, checkpoints, the outputs written out by hand."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from metantk_nas.data.prepared import load_split
from metantk_nas.fsl.evaluate import FeatureExtractor, TestTransform
from metantk_nas.fsl.train import SGD, step_lr, train_model
from metantk_nas.nas.genotype import random_genotype

from helpers import ROOT, same, tcfg, weights

CPU = torch.device("cpu")



def test_rfs_step_schedule():
    assert [step_lr(0.02, e, (60, 80)) for e in (1, 60, 61, 80, 81, 100)] == \
        pytest.approx([0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002])


def test_drop_path_ramps_as_the_originals_with_epochs_counted_from_one(tiny_prepared, tmp_path, monkeypatch):
    """The original sets p = aug_dp * epoch / epochs for epoch = 1..epochs: 0.2 over 4 epochs is 0.05, 0.1,
    0.15, 0.2 (the last epoch trains at the full 0.2; counted from 0 it never would)."""
    from metantk_nas.nas.networks import DropPath, EvalNet

    seen = []
    real = EvalNet.set_drop_path
    monkeypatch.setattr(EvalNet, "set_drop_path", lambda self, p: seen.append(p) or real(self, p))
    model, _ = train_model(random_genotype(4, 5), tcfg(epochs=4, decay_epochs=(3,)), load_split(tiny_prepared, "train"),
                           tmp_path, CPU, progress=False)
    assert seen == pytest.approx([0.05, 0.1, 0.15, 0.2])
    probs = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert probs and probs == pytest.approx([0.2] * len(probs))


def test_training_learns_a_separable_set(tiny_prepared, tmp_path):
    """On the synthetic set (8 classes that differ in colour and pattern): the loss starts near ln 8, the chance
    level of 8 classes, and falls well below it, and the trained network classifies its own (un-augmented)
    training images far above the chance 1/8.  The learning rate follows the step schedule written out by hand.
    A zeroed gradient, labels paired with the wrong images or a learning rate of 0 leave the loss near ln 8."""
    data = load_split(tiny_prepared, "train")
    cfg = tcfg(channels=8, epochs=10, decay_epochs=(8,), drop_path=0.0)
    model, state = train_model(random_genotype(1, 5), cfg, data, tmp_path / "ck", CPU, progress=False)
    losses = [r["loss"] for r in state.log]
    assert [r["lr"] for r in state.log] == pytest.approx([0.05] * 8 + [0.005] * 2)
    assert abs(losses[0] - np.log(8)) < 0.35                  # epoch 1 averages over steps from the start
    assert np.mean(losses[-2:]) < 0.6 * np.log(8)
    model.eval()
    with torch.no_grad():
        x = TestTransform(16, data.mean, data.std)(data.images)
        acc = float((model(x).argmax(1).numpy() == np.asarray(data.labels)).mean())
    assert acc >= 0.5, acc                                    # chance: 0.125


def test_training_is_deterministic(tiny_prepared, tmp_path):
    data = load_split(tiny_prepared, "train")
    g = random_genotype(0, 5)
    m1, s1 = train_model(g, tcfg(epochs=2), data, tmp_path / "a", CPU, progress=False)
    m2, s2 = train_model(g, tcfg(epochs=2), data, tmp_path / "b", CPU, progress=False)
    assert same(weights(m1), weights(m2)) and [r["loss"] for r in s1.log] == [r["loss"] for r in s2.log]


class Killed(Exception):
    """Raised from on_step: the run dies there, leaving only the checkpoints already on disk (as a SIGKILL)."""


def kill_at(epoch, step):
    def hook(e, s):
        if (e, s) == (epoch, step):
            raise Killed
    return hook


def test_killed_training_resumes_to_identical_weights(tiny_prepared, tmp_path):
    data = load_split(tiny_prepared, "train")
    g = random_genotype(1, 5)
    full, _ = train_model(g, tcfg(), data, tmp_path / "full", CPU, progress=False)
    with pytest.raises(Killed):   # killed in the middle of the second epoch: the epoch-1 checkpoint survives
        train_model(g, tcfg(), data, tmp_path / "killed", CPU, progress=False, on_step=kill_at(1, 2))
    resumed, state = train_model(g, tcfg(), data, tmp_path / "killed", CPU, progress=False)
    assert state.epoch == 3 and same(weights(full), weights(resumed))


def test_a_signal_mid_epoch_checkpoints_after_that_step_and_resumes_bit_identical(tiny_prepared, tmp_path):
    """SIGUSR1 (SLURM's early warning) during step 3 of epoch 2: the step finishes, the checkpoint holds epoch 1
    finished + 4 steps of epoch 2, Preempted is raised; the resumed run goes on from step 4 and ends with the
    uninterrupted run's weights and per-epoch losses, bit for bit."""

    from metantk_nas.preemption import Preempted

    data = load_split(tiny_prepared, "train")
    g = random_genotype(1, 5)
    full, full_state = train_model(g, tcfg(), data, tmp_path / "full", CPU, progress=False)
    steps_seen = []

    def signal_at(e, s):
        steps_seen.append((e, s))
        if (e, s) == (1, 3):
            os.kill(os.getpid(), signal.SIGUSR1)
    with pytest.raises(Preempted, match="epoch 2, step 4"):
        train_model(g, tcfg(), data, tmp_path / "run", CPU, progress=False, on_step=signal_at)
    assert steps_seen[-1] == (1, 3)                                   # no step after the signalled one
    ck = torch.load(tmp_path / "run/ckpt_last.pt", weights_only=True)
    assert (ck["epoch"], ck["step"]) == (1, 4) and ck["optimizer"]["buffers"][0] is not None
    resumed_steps = []
    resumed, state = train_model(g, tcfg(), data, tmp_path / "run", CPU, progress=False,
                                 on_step=lambda e, s: resumed_steps.append((e, s)))
    assert resumed_steps[0] == (1, 4)
    assert same(weights(full), weights(resumed))
    assert [(r["loss"], r["accuracy"]) for r in state.log] == [(r["loss"], r["accuracy"]) for r in full_state.log]
    assert state.resumes == [[1, 4]] and full_state.resumes == []       # metrics.json's resumed_at


def test_sgd_is_torchs_sgd_bitwise():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for k in range(5):
        x = torch.randn(4, 5)
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
        if k == 2:
            ours.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.005
    assert same(a.state_dict(), b.state_dict())


def test_a_checkpoint_of_another_config_or_cell_is_not_resumed(tiny_prepared, tmp_path, caplog):
    """A finished run's checkpoint left in the run directory: retraining there with a changed lr (or another
    genotype) must give a fresh run's weights, not the old model."""
    data = load_split(tiny_prepared, "train")
    g = random_genotype(2, 5)
    ck = tmp_path / "run"
    old, _ = train_model(g, tcfg(epochs=2), data, ck, CPU, progress=False)
    fresh, _ = train_model(g, tcfg(epochs=2, lr=0.04), data, tmp_path / "fresh", CPU, progress=False)
    changed, state = train_model(g, tcfg(epochs=2, lr=0.04), data, ck, CPU, progress=False)
    assert "another training config or genotype" in caplog.text and state.resumes == []
    assert same(weights(fresh), weights(changed)) and not same(weights(old), weights(changed))
    other = random_genotype(3, 5)
    assert same(weights(train_model(other, tcfg(epochs=2, lr=0.04), data, ck, CPU, progress=False)[0]),
                weights(train_model(other, tcfg(epochs=2, lr=0.04), data, tmp_path / "o", CPU, progress=False)[0]))


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tiny_prepared, tmp_path, caplog):
    data = load_split(tiny_prepared, "train")
    g = random_genotype(2, 5)
    full, _ = train_model(g, tcfg(), data, tmp_path / "full", CPU, progress=False)
    ck = tmp_path / "run"
    with pytest.raises(Killed):
        train_model(g, tcfg(), data, ck, CPU, progress=False, on_step=kill_at(2, 0))   # after epoch 2's checkpoint
    assert (ck / "ckpt_prev.pt").exists()                      # epoch 1's, kept when epoch 2's was written
    (ck / "ckpt_last.pt").write_bytes(b"garbage" * 10)          # epoch-2 checkpoint corrupted
    try:
        torch.load(ck / "ckpt_last.pt", map_location="cpu", weights_only=True)
    except Exception as e:                                      # what torch says of it, named in the log
        why = f"unreadable checkpoint ({type(e).__name__}: {str(e)[:120]}); trying an older one"
    resumed, state = train_model(g, tcfg(), data, ck, CPU, progress=False)  # resumes from epoch 1 (ckpt_prev)
    assert f"{ck / 'ckpt_last.pt'}: {why}" in caplog.text and same(weights(full), weights(resumed))
    assert state.resumes == [[1, 0]]                            # from epoch 1's checkpoint, not from scratch
    for f in ck.glob("ckpt_*.pt"):
        f.write_bytes(b"")
    again, state = train_model(g, tcfg(), data, ck, CPU, progress=False)  # nothing usable: from scratch
    assert state.epoch == 3 and same(weights(full), weights(again))


def test_sigterm_checkpoints_and_exits_for_requeue(tiny_prepared, tmp_path):
    over = tmp_path / "o.yaml"
    over.write_text(yaml.safe_dump({"device": "cpu", "data": {"datasets": {"tiny": {"format": "synthetic", "synthetic": {
        "seed": 3, "train_classes": 8, "val_classes": 5, "test_classes": 6, "images_per_class": 12, "image_size": 16}}}},
        "train": {"channels": 4, "image_size": 16, "crop_padding": 2, "recipes": {"tiny": {
            "lr": 0.05, "epochs": 40, "decay_epochs": [30], "batch_size": {"5": 16}, "drop_path": 0.1}}}}))
    (tmp_path / "g.json").write_text(random_genotype(0, 5).to_json())
    cmd = [sys.executable, "scripts/train.py", "--configfile", "config/config.yaml", str(over), "--dataset", "tiny",
           "--method", "random", "--cells", "5", "--seed", "0", "--genotype", str(tmp_path / "g.json"),
           "--prepared", str(tiny_prepared), "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run/checkpoints/ckpt_last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "preempted" in err and not (tmp_path / "run/model.pt").exists()
    ck = torch.load(tmp_path / "run/checkpoints/ckpt_last.pt", weights_only=True)
    assert 1 <= ck["epoch"] < 40


# -- evaluation ---------------------------------------------------------------------------------------------------
THP_PROBE = """
import hashlib, sys
import torch   # before the package: the environment given decides
import yaml
from metantk_nas.nas.genotype import Genotype
from metantk_nas.nas.networks import EvalNet
torch.manual_seed(0)
g = Genotype.from_darts(yaml.safe_load(open(sys.argv[1]))["metanas_in_v2"]["genotype"])
net = EvalNet(g, 16, 5, 64).to(memory_format=torch.channels_last)
x = torch.randn(8, 3, 84, 84).contiguous(memory_format=torch.channels_last)   # 8 x 16 x 84 x 84 floats: 3.6 MB
loss = torch.nn.functional.cross_entropy(net(x), torch.arange(8))
loss.backward()
huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")][0].split()[1]
h = hashlib.sha256(loss.detach().numpy().tobytes())
for p in net.parameters():
    h.update(p.grad.numpy().tobytes())
print(h.hexdigest(), huge)
"""


def test_huge_page_allocation_changes_no_bit_of_a_training_step():
    """THP_MEM_ALLOC_ENABLE (set by the training and evaluation scripts, docs/scaling.md) changes where torch's large tensors live, not
    what is computed: a forward and backward of a C=16 evaluation network at 84x84 (activations over torch's 2 MB
    threshold) give the same loss and gradients, bit for bit, with it on and off; on, the process does hold huge
    pages where the kernel allows them (transparent_hugepage not 'never')."""
    import os

    from helpers import PY

    out = {}
    for v in ("0", "1"):
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": v, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run([PY, "-c", THP_PROBE, str(ROOT / "config/genotypes.yaml")], capture_output=True,
                              text=True, env=env, check=True)
        out[v] = proc.stdout.split()
    assert out["0"][0] == out["1"][0]
    mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" not in mode:
        assert int(out["1"][1]) > 0 and int(out["0"][1]) <= int(out["1"][1]), (out, mode)
    from metantk_nas.cli import use_huge_pages

    for before, after in ((None, "1"), ("0", "0")):             # set, or the caller's own value kept
        env = dict(os.environ)
        try:
            os.environ.pop("THP_MEM_ALLOC_ENABLE", None)
            if before is not None:
                os.environ["THP_MEM_ALLOC_ENABLE"] = before
            use_huge_pages()
            assert os.environ["THP_MEM_ALLOC_ENABLE"] == after
        finally:
            os.environ.clear()
            os.environ.update(env)
    for script in ("train.py", "evaluate.py"):                  # called before torch loads; not by the search
        text = (ROOT / "scripts" / script).read_text()
        assert text.index("use_huge_pages()") < text.index("import torch" if "import torch" in text else "metantk_nas.config")
    assert "use_huge_pages" not in (ROOT / "scripts/search.py").read_text()


def test_each_epoch_draws_its_own_order_over_the_training_images(tiny_prepared, tmp_path, monkeypatch):
    """Every epoch trains on steps x batch distinct images (a draw without replacement), and two epochs draw two
    different orders (a data order fixed across epochs would pass every other test)."""
    import metantk_nas.fsl.train as tr

    data = load_split(tiny_prepared, "train")
    ids = {np.asarray(img).tobytes(): i for i, img in enumerate(data.images)}
    assert len(ids) == len(data.labels)                       # the images tell themselves apart
    seen: list[list[int]] = []

    class Recording(tr.TrainAugment):
        def __call__(self, images, gen, device="cpu"):
            seen.append([ids[np.asarray(im).tobytes()] for im in images])
            return super().__call__(images, gen, device)
    monkeypatch.setattr(tr, "TrainAugment", Recording)
    cfg = tcfg(epochs=2)
    train_model(random_genotype(0, 5), cfg, data, tmp_path, CPU, progress=False)
    steps = len(data.labels) // cfg.batch_size
    epochs = [sum(seen[e * steps:(e + 1) * steps], []) for e in range(2)]
    assert len(seen) == 2 * steps
    for order in epochs:
        assert len(order) == len(set(order)) == steps * cfg.batch_size
    assert epochs[0] != epochs[1]


def test_mixed_precision_is_a_cuda_switch_the_cpu_trains_in_float32(tiny_prepared, tmp_path):
    data = load_split(tiny_prepared, "train")
    g = random_genotype(0, 5)
    a, _ = train_model(g, tcfg(epochs=1), data, tmp_path / "a", CPU, progress=False)
    b, _ = train_model(g, tcfg(epochs=1, mixed_precision=True), data, tmp_path / "b", CPU, progress=False)
    assert same(weights(a), weights(b))


def test_two_preemptions_are_both_recorded_and_named(tiny_prepared, tmp_path, caplog, capsys):
    """Signalled twice (epoch 1 step 2, then epoch 2 step 1): each Preempted names where it checkpointed and how to
    go on; the finished run lists both resumes (metrics.json's resumed_at); its checkpoint folder is made with its
    parents; the epoch log lines and the progress bar name each epoch."""
    import logging

    from metantk_nas.fsl.train import write_outputs
    from metantk_nas.preemption import Preempted

    data = load_split(tiny_prepared, "train")
    g = random_genotype(1, 5)
    cfg = tcfg(epochs=2)
    steps = len(data.labels) // cfg.batch_size
    ck = tmp_path / "deep" / "er" / "checkpoints"

    def signal_at(epoch, step):
        def hook(e, s):
            if (e, s) == (epoch, step):
                os.kill(os.getpid(), signal.SIGUSR1)
        return hook
    with pytest.raises(Preempted, match=rf"^signal {int(signal.SIGUSR1)}: checkpointed at epoch 1, step 2/{steps}; "
                                        "rerun to resume$"):
        train_model(g, cfg, data, ck, CPU, progress=False, on_step=signal_at(0, 1))
    with pytest.raises(Preempted, match=rf"checkpointed at epoch 2, step 1/{steps}; rerun to resume$"):
        train_model(g, cfg, data, ck, CPU, progress=False, on_step=signal_at(1, 0))
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="metantk_nas.fsl.train"):
        model, state = train_model(g, cfg, data, ck, CPU, progress=True)
    bar = capsys.readouterr().err
    assert "epoch 2/2" in bar and f" 1/{steps} " in bar and f" 0/{steps} " not in bar   # resumed after step 1
    assert state.resumes == [[0, 2], [1, 1]]
    assert f"resuming from {ck / 'ckpt_last.pt'} at epoch 2, step 1" in caplog.messages
    assert all(r["seconds"] > 0 for r in state.log)              # each epoch's own time, the resumed parts added
    row = state.log[-1]
    assert (f"epoch 2/2: loss {row['loss']:.4f} acc {row['accuracy']:.3f} lr {row['lr']:g} ({row['seconds']:.1f}s)"
            in caplog.messages)
    out = tmp_path / "out"
    out.mkdir()
    metrics = write_outputs(model, state, out, CPU, "a title")
    assert metrics["resumed_at"] == [{"epochs_done": 0, "step": 2}, {"epochs_done": 1, "step": 1}]


def test_write_outputs_by_hand(tiny_prepared, tmp_path):
    """model.pt: the weights in NCHW, CPU, loadable into a fresh network of the same cell; train_log.csv: the log's
    rows under the header epoch,loss,accuracy,lr,seconds; metrics: the parameter count summed here, the training's
    seconds, epochs and last row; the curve's PNG."""
    import csv

    from metantk_nas.fsl.train import write_outputs
    from metantk_nas.nas.networks import EvalNet

    data = load_split(tiny_prepared, "train")
    g = random_genotype(2, 5)
    model, state = train_model(g, tcfg(epochs=2), data, tmp_path / "ck", CPU, progress=False)
    model = model.to(memory_format=torch.channels_last)
    out = tmp_path / "out"
    out.mkdir()
    metrics = write_outputs(model, state, out, CPU, "title")
    saved = torch.load(out / "model.pt", weights_only=True)
    assert all(v.is_contiguous() and v.device.type == "cpu" for v in saved.values())
    fresh = EvalNet(g, 4, 5, data.n_classes)
    fresh.load_state_dict(saved)
    assert same(weights(fresh), {k: v.contiguous() for k, v in weights(model).items()})
    rows = list(csv.reader((out / "train_log.csv").read_text().splitlines()))
    assert rows[0] == ["epoch", "loss", "accuracy", "lr", "seconds"] and len(rows) == 3
    assert [[float(v) for v in r] for r in rows[1:]] == [[r[k] for k in ("epoch", "loss", "accuracy", "lr", "seconds")]
                                                         for r in state.log]
    n = sum(p.numel() for p in model.parameters())
    assert all(r["seconds"] > 0 for r in state.log)
    assert sum(r["seconds"] for r in state.log) == pytest.approx(state.seconds, abs=2e-3)   # rounded to ms each
    assert metrics == {"params": n, "params_millions": round(n / 1e6, 4), "train_seconds": round(state.seconds, 3),
                       "epochs": 2, "final_loss": state.log[-1]["loss"], "final_accuracy": state.log[-1]["accuracy"],
                       "resumed_at": []}
    assert (out / "train_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drop_path_draws_depend_on_the_seed_epoch_and_step(tiny_prepared, tmp_path, monkeypatch):
    """The drop-path masks are drawn after torch.manual_seed of a seed derived per (seed, epoch, step): two seeds
    never share a step's draws, and no two steps of a run share one."""
    import metantk_nas.fsl.train as tr

    data = load_split(tiny_prepared, "train")
    seeds: dict[int, list[int]] = {}
    real = torch.manual_seed
    for seed in (0, 1):
        seeds[seed] = []
        monkeypatch.setattr(tr.torch, "manual_seed", lambda s, _l=seeds[seed]: _l.append(s) or real(s))
        train_model(random_genotype(0, 5), tcfg(epochs=2, seed=seed), data, tmp_path / str(seed), CPU, progress=False)
        monkeypatch.undo()
    steps = 2 * (len(data.labels) // 16)
    assert len(seeds[0]) == len(set(seeds[0])) == steps and not set(seeds[0]) & set(seeds[1])


def test_finish_epoch_logs_the_epochs_means_by_hand():
    """An epoch of 2 steps of batch 16 with a loss sum of 24 and 12 correct: loss 24/32 = 0.75, accuracy
    12/32 = 0.375; the epoch's time goes to the total and the running sums start again at zero."""
    from metantk_nas.fsl.train import TrainState, _finish_epoch

    state = TrainState(epoch=1, step=2, loss_sum=24.0, correct=12, epoch_seconds=1.25, seconds=2.0)
    _finish_epoch(state, tcfg(batch_size=16), 2, 0.05)
    assert state.log == [{"epoch": 2, "loss": 0.75, "accuracy": 0.375, "lr": 0.05, "seconds": 1.25}]
    assert (state.epoch, state.step, state.loss_sum, state.correct, state.epoch_seconds, state.seconds) == \
        (2, 0, 0.0, 0, 0.0, 3.25)


def test_write_outputs_of_a_run_without_epochs_and_its_parameters_in_millions(tmp_path, monkeypatch):
    """A run with no finished epoch has no final loss or accuracy (None, not an IndexError); 12,345,651
    parameters are 12.3457 million (12.345651 rounded to 4 places by hand)."""
    import metantk_nas.fsl.train as train
    from metantk_nas.nas.networks import EvalNet

    monkeypatch.setattr(train, "count_parameters", lambda model: 12_345_651)
    metrics = train.write_outputs(EvalNet(random_genotype(0, 5), 4, 5, 3), train.TrainState(), tmp_path, CPU)
    assert metrics["params"] == 12_345_651 and metrics["params_millions"] == 12.3457
    assert metrics["final_loss"] is None and metrics["final_accuracy"] is None and metrics["epochs"] == 0


def test_channels_last_puts_the_networks_conv_weights_in_that_layout():
    """evaluate.channels_last (a speed switch, float32 either way): the extractor's network has its 4-D weights in
    channels_last; off, in the default layout."""
    from metantk_nas.nas.networks import EvalNet

    def layouts(flag):
        net = FeatureExtractor(EvalNet(random_genotype(0, 5), 4, 5, 3), CPU, 64, flag).model
        convs = [p for p in net.parameters() if p.dim() == 4 and p.shape[2] > 1 and p.shape[1] > 1]
        return {p.is_contiguous(memory_format=torch.channels_last) for p in convs}, \
            {p.is_contiguous() for p in convs}
    assert layouts(True) == ({True}, {False}) and layouts(False) == ({False}, {True})

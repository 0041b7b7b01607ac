"""What a CUDA run sets up, proven on the CPU with CUDA mocked: IEEE float32 (TF32 off) unless tf32: true,
determinism without filling uninitialised memory, and one GPU per job on a machine with several and no scheduler."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT


@pytest.fixture
def cuda_flags(monkeypatch):
    """torch with ``cuda.is_available()`` mocked True; its float32 and determinism flags restored afterwards."""
    import torch
    import torch.utils.deterministic

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    before = ([f.fp32_precision for f in flags], torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
              torch.utils.deterministic.fill_uninitialized_memory)
    yield torch
    for f, value in zip(flags, before[0]):
        f.fp32_precision = value
    torch.use_deterministic_algorithms(before[1], warn_only=before[2])
    torch.backends.cudnn.benchmark = before[3]
    torch.utils.deterministic.fill_uninitialized_memory = before[4]


def precision(torch):
    return (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cudnn.rnn.fp32_precision)


def test_cuda_runs_compute_ieee_float32_unless_tf32_is_asked_for(cuda_flags, tmp_path):
    """torch's default lets cuDNN's convolutions use TF32 ("tf32" on cudnn.conv): a CUDA run of the paper config
    turns matmuls and convolutions to IEEE float32; tf32: true turns both to TF32; the CPU leaves torch's flags."""
    from metantk_nas.cli import resolve_device
    from metantk_nas.config import load_config

    torch = cuda_flags
    cfg = load_config([ROOT / "config/config.yaml"])
    assert cfg["tf32"] is False and cfg["device"] == "auto"
    for f in (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn):
        f.fp32_precision = "tf32"
    assert resolve_device({**cfg, "device": "cpu"}, env={}) == torch.device("cpu")
    assert precision(torch) == ("tf32", "tf32", "tf32")           # the CPU: untouched
    assert resolve_device(cfg, env={}) == torch.device("cuda")
    assert precision(torch) == ("ieee", "ieee", "ieee")
    over = tmp_path / "tf32.yaml"
    over.write_text("tf32: true\n")
    assert resolve_device(load_config([ROOT / "config/config.yaml", over]), env={}) == torch.device("cuda")
    assert precision(torch) == ("tf32", "tf32", "tf32")
    over.write_text("tf32: 'yes'\n")
    from metantk_nas.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^config: tf32: "):
        load_config([ROOT / "config/config.yaml", over])


def test_deterministic_cuda_run_does_not_fill_uninitialised_memory(cuda_flags):
    """use_deterministic_algorithms(True) also switches on torch.utils.deterministic.fill_uninitialized_memory (a
    memset of every torch.empty); deterministic: true and strict keep the deterministic algorithms and turn the fill
    off; false and the CPU leave both as torch has them."""
    from metantk_nas.cli import resolve_device

    torch = cuda_flags
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True
    resolve_device({"device": "cpu", "deterministic": True}, env={})
    resolve_device({"device": "cuda", "deterministic": False}, env={})
    assert not torch.are_deterministic_algorithms_enabled() and torch.utils.deterministic.fill_uninitialized_memory
    for mode in (True, "strict"):
        torch.utils.deterministic.fill_uninitialized_memory = True
        resolve_device({"device": "cuda", "deterministic": mode}, env={})
        assert torch.are_deterministic_algorithms_enabled(), mode
        assert not torch.utils.deterministic.fill_uninitialized_memory, mode
        assert torch.is_deterministic_algorithms_warn_only_enabled() == (mode is True)


# ---------------------------------------------------------------------------------------------------------------
# one GPU per job
# ---------------------------------------------------------------------------------------------------------------
CLAIM = """
import logging, os, sys
logging.basicConfig(level=logging.INFO)
from metantk_nas.gpus import claim_gpu
timeout = float(sys.argv[1]) if len(sys.argv) > 1 else None
try:
    gpu = claim_gpu(os.environ, poll_s=0.05, timeout_s=timeout)
except TimeoutError as e:
    print("timeout", e, flush=True)
    sys.exit(3)
print(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.read()   # hold the GPU until the test closes stdin
"""


def start_job(env, *args):
    return subprocess.Popen([sys.executable, "-c", CLAIM, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_share_a_gpu_and_a_killed_job_frees_its_own(tmp_path):
    """Two GPUs (CUDA_VISIBLE_DEVICES=0,1, no SLURM): two jobs at once get GPU 0 and GPU 1, each with its own
    CUDA_VISIBLE_DEVICES; a third finds both taken and waits (here: gives up after 0.5 s); once the job on GPU 0
    is SIGKILLed, the next job gets GPU 0."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "METANTK_GPU_LOCK_DIR": str(tmp_path / "locks"),
           "PYTHONPATH": str(ROOT / "src")}
    env.pop("SLURM_JOB_ID", None)
    a = start_job(env)
    assert a.stdout.readline().split() == ["0", "0"]
    b = start_job(env)
    assert b.stdout.readline().split() == ["1", "1"]
    c = start_job(env, "0.5")
    out, err = c.communicate(timeout=30)
    assert c.returncode == 3 and out.startswith("timeout no free GPU among 0,1 after"), (out, err)
    assert "all 2 GPUs are taken by other jobs" in err
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    d = start_job(env)
    assert d.stdout.readline().split() == ["0", "0"]
    for p in (b, d):
        p.stdin.close()
        p.wait(timeout=30)


def test_a_waiting_job_takes_the_gpu_another_job_releases(tmp_path):
    """Both GPUs (2 and 5) taken: a third job waits, and gets the GPU of the job that ends, as soon as it ends."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "2,5", "METANTK_GPU_LOCK_DIR": str(tmp_path),
           "PYTHONPATH": str(ROOT / "src")}
    env.pop("SLURM_JOB_ID", None)
    jobs = [start_job(env), start_job(env)]
    got = [j.stdout.readline().split()[0] for j in jobs]
    assert sorted(got) == ["2", "5"]
    waiting = start_job(env)
    time.sleep(0.5)
    assert waiting.poll() is None                      # still waiting
    jobs[1].stdin.close()                              # a job ends normally
    jobs[1].wait(timeout=30)
    assert waiting.stdout.readline().split() == [got[1], got[1]]
    for j in (jobs[0], waiting):
        j.stdin.close()
        j.wait(timeout=30)


def test_nothing_is_claimed_under_slurm_with_one_gpu_or_when_switched_off(tmp_path):
    from metantk_nas.gpus import claim_gpu, visible_gpus

    base = {"METANTK_GPU_LOCK_DIR": str(tmp_path)}
    for env in ({**base, "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42"},   # SLURM's --gpus=1 decides
                {**base, "CUDA_VISIBLE_DEVICES": "3"},                         # one GPU: nothing to share
                {**base, "CUDA_VISIBLE_DEVICES": "0,1", "METANTK_GPU_LOCKS": "0"},
                {**base, "CUDA_VISIBLE_DEVICES": ""}, {**base, "CUDA_VISIBLE_DEVICES": "-1"}):
        before = dict(env)
        assert claim_gpu(env) is None and env == before, before
    assert not list(tmp_path.iterdir())
    # without CUDA_VISIBLE_DEVICES, one GPU per NVIDIA device file (nvidiactl, nvidia-uvm are not GPUs)
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm", "nvidia-caps"):
        (tmp_path / name).touch()
    assert visible_gpus({}, str(tmp_path)) == ["0", "1", "10"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1, 3"}, str(tmp_path)) == ["1", "3"]
    assert visible_gpus({}, str(tmp_path / "absent")) == []


def test_resolve_device_claims_a_gpu_before_cuda_starts(monkeypatch, tmp_path, cuda_flags):
    """The claim must come before torch's first CUDA call, which fixes the visible devices for the process."""
    from metantk_nas.cli import resolve_device

    torch = cuda_flags
    seen = []
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "METANTK_GPU_LOCK_DIR": str(tmp_path)}
    monkeypatch.setattr(torch.version, "cuda", "13.0")          # a CUDA build (a CPU build has nothing to claim)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen.append(env["CUDA_VISIBLE_DEVICES"]) or True)
    assert resolve_device({"device": "auto"}, env=env) == torch.device("cuda")
    assert seen == ["0"] and env["CUDA_VISIBLE_DEVICES"] == "0"
    env2 = {"CUDA_VISIBLE_DEVICES": "0,1", "METANTK_GPU_LOCK_DIR": str(tmp_path)}
    resolve_device({"device": "cpu"}, env=env2)                 # a CPU job claims nothing
    assert env2["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.setattr(torch.version, "cuda", None)
    env3 = {"CUDA_VISIBLE_DEVICES": "0,1", "METANTK_GPU_LOCK_DIR": str(tmp_path / "cpu-build")}
    resolve_device({"device": "auto"}, env=env3)
    assert env3["CUDA_VISIBLE_DEVICES"] == "0,1" and not (tmp_path / "cpu-build").exists()


# ---------------------------------------------------------------------------------------------------------------
# bench timers
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def benchlib_mocked(monkeypatch):
    """bench/benchlib.py with CUDA started and torch.cuda.synchronize and the clock recorded in one event list."""
    import itertools

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import benchlib

    events, ticks = [], itertools.count()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.append("sync"))
    monkeypatch.setattr(benchlib.time, "perf_counter", lambda: events.append("clock") or float(next(ticks)) ** 2)
    return benchlib, events


def test_bench_clock_waits_for_the_gpu_before_it_reads_the_time(benchlib_mocked):
    benchlib, events = benchlib_mocked
    assert benchlib.clock() == 0.0 and events == ["sync", "clock"]


def test_bench_timings_leave_the_warm_up_out_and_report_it(benchlib_mocked):
    """2 warm-up calls, then 3 timed ones; the clock reads 0, 1, 4 (squares of its reads): the warm-up took 1 - 0 s,
    the 3 calls 4 - 1 = 3 s, 1 s each; every read after a synchronisation."""
    benchlib, events = benchlib_mocked
    timing, out = benchlib.timed(lambda: events.append("fn") or len(events), reps=3, warmup=2)
    assert events == ["sync", "clock", "fn", "fn", "sync", "clock", "fn", "fn", "fn", "sync", "clock"]
    assert (timing.mean_s, timing.warmup_s, timing.reps, timing.warmup) == (1.0, 1.0, 3, 2)
    assert out == 9 and str(timing) == "1.000 s per call (3 after 2 warm-up, 1.00 s)"
    with pytest.raises(ValueError):
        benchlib.timed(lambda: None, reps=0)


def test_bench_clock_does_not_start_cuda(monkeypatch):
    """No CUDA started (the CPU, or before the first kernel): nothing to wait for, and no synchronize call, which
    would start CUDA on a GPU machine."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import benchlib

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("synchronize without CUDA"))
    benchlib.clock()


def test_every_bench_script_reads_the_clock_through_benchlib():
    """A bench script that calls time.perf_counter() or time.time() itself times kernel launches on CUDA; only
    benchlib reads the clock (and mutation_sample.py, which times mutmut, not torch)."""
    import re

    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name in ("benchlib.py", "mutation_sample.py"):
            continue
        text = path.read_text()
        assert not re.search(r"\btime\.(perf_counter|time|monotonic)\(", text), path.name
        if re.search(r"^(from|import) metantk_nas", text, re.M):       # src/ on the path before the package
            first = re.search(r"^(from benchlib|import benchlib|from metantk_nas|import metantk_nas)", text, re.M)
            assert first.group(0).endswith("benchlib"), path.name

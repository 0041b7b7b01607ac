"""Failed writes: a full disk and a SIGKILL during an artifact write leave no partial artifact under its final
name, the full disk stops the stage with one line naming the file, and a rerun after the fault completes."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, require
from metantk_nas.data.prepared import load_split
from metantk_nas.provenance import write_bytes_atomic

PY = sys.executable


@pytest.fixture
def small_fs(tmp_path):
    """A 96 KiB tmpfs: the tiny prepared dataset (about 180 KB) does not fit."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount(8) are needed for a small tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    up = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True, text=True)
    require(up.returncode == 0, f"cannot mount a tmpfs: {up.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.integration
def test_a_full_disk_stops_the_stage_with_one_line_naming_the_file_and_a_rerun_completes(small_fs):
    out = small_fs / "synthetic"
    cmd = [PY, "scripts/prepare_data.py", "--configfile", "config/config.yaml", "tests/configs/tiny.yaml",
           "--dataset", "synthetic", "--out", str(out)]
    full = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    last = full.stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"error: disk full while writing (\S+); finished artifacts are untouched", last)
    assert m and os.path.dirname(m.group(1)) == str(out), last        # names the artifact, not a temporary file
    # nothing partial: no temporary left, every file under its final name complete, no manifest (not prepared)
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.endswith(".tmp")], left
    assert "manifest.json" not in left and os.path.basename(m.group(1)) not in left, left
    for name in left:
        if name.endswith(".npy"):
            np.load(out / name, allow_pickle=False)    # a truncated .npy would not load
    # space freed: the rerun completes and the result is the prepared format
    grow = subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], capture_output=True, text=True)
    assert grow.returncode == 0, grow.stderr
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    split = load_split(out, "train")
    assert len(split.labels) == manifest["splits"]["train"]["n"] == 8 * 12


def test_sigkill_during_an_artifact_write_leaves_the_previous_artifact_and_a_rewrite_works(tmp_path):
    """The process dies (SIGKILL: no handler, no cleanup) with half of a new model.pt written: the previous file
    is still there, intact, under the final name; the half-written bytes are only in a hidden temporary."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous model")
    writer = ("import sys, time\n"
              "from metantk_nas.provenance import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    f = open(tmp, 'wb'); f.write(b'x' * 1_000_000); f.flush()\n"
              "    print('writing', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([PY, "-c", writer, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)
    assert target.read_bytes() == b"previous model"
    stale = list(tmp_path.glob(".model.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size == 1_000_000
    write_bytes_atomic(target, b"new model")
    assert target.read_bytes() == b"new model"

"""make gpu-check at tiny size on the CPU, as an offline CUDA machine would run it: an interpreter that has torch and
numpy only, no package index, a wheelhouse and PY=; and its one-line stop when a package is missing."""
import importlib.metadata as md
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

pytestmark = pytest.mark.integration


def torch_and_numpy_only(venv):
    """A fresh venv that sees only torch, numpy and what they require (symlinked from this interpreter), as a
    GPU machine's own Python with its CUDA torch: no yaml, jsonschema, snakemake, opacus, pandas, ..."""
    from packaging.requirements import Requirement

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the venv's own setuptools (older than torch's setuptools>=77) makes way for the one torch was installed with
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    seen, todo = set(), ["torch", "numpy"]
    while todo:
        dist = md.distribution(todo.pop())
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in seen or name == "pip":       # the venv has its own
            continue
        seen.add(name)
        todo += [Requirement(r).name for r in dist.requires or []
                 if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
        for top in {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}:
            src, dst = dist.locate_file(top), os.path.join(site, top)
            if os.path.exists(src) and not os.path.exists(dst):
                os.symlink(src, dst)
    assert {"torch", "numpy"} <= seen
    return py


@pytest.fixture(scope="module")
def offline_python(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    py = torch_and_numpy_only(tmp / "gpu-python")
    probe = subprocess.run([str(py), "-c", "import torch, numpy, importlib.util as u; "
                            "print([m for m in ('yaml', 'jsonschema', 'snakemake', 'opacus', 'pandas', 'metantk_nas') "
                            "if u.find_spec(m)])"], capture_output=True, text=True, check=True, cwd=tmp)
    assert probe.stdout.strip() == "[]"
    return tmp, py


def make(*args, env=None):
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_a_missing_package_stops_the_check_at_once_in_one_line(offline_python):
    tmp, py = offline_python
    proc = make("gpu-check", f"PY={py}", f"GPU_CHECK=--device cpu --size tiny --work {tmp / 'never'}",
                env={**os.environ, "PIP_NO_INDEX": "1"})
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("gpu-check:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stdout + proc.stderr
    assert errors[0].startswith(f"gpu-check: {py} lacks pyyaml, jsonschema, tabulate, tqdm, pandas, scipy, "
                                "matplotlib, opacus, snakemake: on a machine with package access run "
                                f"`make wheelhouse PYVER={sys.version_info[0]}.{sys.version_info[1]}`")
    assert f"make gpu-check PY={py} WHEELS=wheelhouse" in errors[0]
    assert "1/3" not in proc.stderr and not (tmp / "never").exists()        # nothing started
    assert not (ROOT / ".venv-never").exists()


def test_make_gpu_check_with_an_existing_torch_a_wheelhouse_and_no_index(offline_python):
    """make wheelhouse for this Python, leaving out what the interpreter has (HAVE); then, with no package index,
    make gpu-check PY=<it> WHEELS=<wheelhouse>: the scratch environment gets what it lacks, and torch, numpy and
    the package (from src/, no editable install) are the interpreter's and the tree's."""
    tmp, py = offline_python
    have = tmp / "have.txt"
    have.write_text(subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                                   check=True).stdout)
    wheels = tmp / "wheelhouse"
    proc = make("wheelhouse", f"PYVER={sys.version_info[0]}.{sys.version_info[1]}", f"HAVE={have}",
                f"WHEELHOUSE={wheels}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {w.name.split("-")[0].lower() for w in wheels.glob("*.whl")}
    assert {"snakemake", "opacus", "jsonschema", "pyyaml", "pandas"} <= names
    assert not names & {"torch", "numpy", "jinja2", "typing_extensions"}               # the interpreter has them
    out, env_dir = tmp / "gpu-check.md", tmp / "env"
    proc = make("gpu-check", f"PY={py}", f"WHEELS={wheels}",
                f"GPU_CHECK=--device cpu --size tiny --cores 2 --work {tmp / 'w'} --out {out} --env {env_dir}",
                env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    env_py = env_dir / "bin" / "python"
    where = subprocess.run([str(env_py), "-c", "import torch, numpy, snakemake; print(torch.__file__); "
                            "print(numpy.__file__); print(snakemake.__file__)"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert not where[0].startswith(str(env_dir)) and not where[1].startswith(str(env_dir))   # the interpreter's
    assert where[2].startswith(str(env_dir))                                                  # the wheelhouse's
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert "4 runs searched, trained and evaluated; tables 1 and 2" in rows["tiny DAG (Snakemake, tests/configs/tiny.yaml)"]
    for stage in ("prepare_data", "export_genotype", "search", "train", "evaluate"):
        assert f"stage {stage}" in rows, stage
    assert "2 after 2 warm-up" in rows["stage train"]
    for bench in ("bench/kernels.py", "bench/search.py"):
        assert "ratio" in rows[bench] or "original/this" in rows[bench], rows[bench]
    text = out.read_text()
    assert text.startswith(f"make gpu-check: tiny size on CPU (cpu), torch ") and text in proc.stdout

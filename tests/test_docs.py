"""Integration: every shell command in README.md and docs/*.md fenced blocks runs, in its cheap form: a Snakemake
command as the dry run of exactly that command (`-n` added), `make X` as `make -n X`, a benchmark's `--help`, a
cheap script as written. The commands that cannot run here are listed in SKIPPED with the reason (and, where it
is so, the test that runs them)."""
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import BIN, ENV, ROOT, copy_tree, placeholder_raw

pytestmark = pytest.mark.integration
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SKIPPED = {   # pattern of the command -> why it does not run here
    r"^\.venv/bin/dvc ": "DVC: tests/test_dvc_repos.py runs the README's DVC walkthrough as written",
    r"make_dvc\.py .*--study": "the study's DVC pipeline: tests/test_dvc_repos.py runs it in the walkthrough",
    r"--report ": "a report needs the finished outputs: tests/test_workflow.py builds one from the tiny run",
    r"scripts/audit\.py results/smoke": "needs the demo's results: tests/test_workflow.py audits the tiny run",
    r"--software-deployment-method conda": "needs conda, which the test machines do not have",
    r"^(SAMPLE=\d+ )?bench/mutation\.sh": "a mutation run takes minutes (sampled) to hours (full); docs/testing.md "
                                          "gives its measured scores",
    r"^/path/to/python3 ": "a GPU machine's own interpreter: tests/test_gpu_check.py runs the offline sequence "
                           "(its pip freeze, make wheelhouse HAVE=, make gpu-check PY= WHEELS=) with one that has "
                           "only torch and numpy",
}


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every line of a ```bash block: continuations joined, comments removed."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", doc.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    out.append((doc.name, line))
    return out


def cheap_form(cmd: str) -> str | None:
    """The command as this test runs it, or None where SKIPPED says why not."""
    if any(re.search(p, cmd) for p in SKIPPED):
        return None
    if cmd.startswith("make "):
        return "make -n " + cmd[len("make "):]
    if cmd.startswith(".venv/bin/snakemake"):
        return cmd if re.search(r"(^| )-n( |$)", cmd) else cmd + " -n"
    if cmd.startswith(".venv/bin/python bench/"):
        return re.sub(r"(bench/\S+\.py).*", r"\1 --help", cmd)
    if cmd.startswith(".venv/bin/python scripts/"):
        return cmd
    raise AssertionError(f"a documented command this test does not know how to run cheaply: {cmd!r} "
                         "(add its cheap form to cheap_form, or a reason to SKIPPED)")


def site_overlay(wd: Path) -> None:
    """config/site.yaml as the README's SLURM section shows it, its dataset sources moved to this copy's
    placeholder raw files."""
    text = (ROOT / "README.md").read_text().split("## Run on a SLURM cluster", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1)
    (wd / "config/site.yaml").write_text(textwrap.dedent(block).replace("/shared/datasets/", "data/raw/"))


@pytest.fixture(scope="module")
def docs_tree(tmp_path_factory) -> Path:
    wd = placeholder_raw(copy_tree(tmp_path_factory.mktemp("docs")))
    for name in ("Makefile", "bench", "slurm", "slurm-noacct", "requirements.txt", "pyproject.toml", ".ci"):
        src = ROOT / name
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    (wd / ".venv").symlink_to(BIN.parent)
    site_overlay(wd)
    return wd


def test_every_documented_command_is_run_or_skipped_with_a_reason():
    commands = documented_commands()
    assert len(commands) > 20
    used = {p for p in SKIPPED if any(re.search(p, c) for _, c in commands)}
    assert used == set(SKIPPED), f"SKIPPED entries no documented command needs: {set(SKIPPED) - used}"
    for _, cmd in commands:
        cheap_form(cmd)   # raises for a command of an unknown kind


@pytest.mark.parametrize("doc, cmd", [c for c in documented_commands() if cheap_form(c[1])],
                         ids=lambda v: v if len(v) < 60 else v[:60])
def test_documented_command_runs(doc, cmd, docs_tree):
    proc = subprocess.run(["bash", "-c", cheap_form(cmd)], cwd=docs_tree, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{doc}: {cmd}\n" + proc.stdout[-2000:] + proc.stderr[-2000:]

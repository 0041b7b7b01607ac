"""bench/wheelhouse.py's choices by hand (what a GPU machine lacks, the constraints from its freeze, which wheels
it already has) and bench/torch_api_audit.py on fabricated sources: both without the network."""
import sys
import zipfile

from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import torch_api_audit  # noqa: E402
import wheelhouse  # noqa: E402


def test_a_freeze_reads_to_canonical_names_and_skips_what_is_not_a_pin(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("PyYAML==6.0.2\ntyping_extensions==4.12.0\n-e git+https://x/y#egg=z\n# comment\n"
                      "torch==2.11.0+cu130\nruamel.yaml==0.18.6\nbad line\n")
    assert wheelhouse.read_freeze(freeze) == {"pyyaml": "6.0.2", "typing-extensions": "4.12.0",
                                             "torch": "2.11.0+cu130", "ruamel-yaml": "0.18.6"}


def test_what_the_machine_has_in_range_is_not_fetched():
    reqs = ["pyyaml>=6.0", "pandas>=2.0", "opacus>=1.4", "snakemake>=9.0"]
    have = {"pyyaml": "6.0.2", "pandas": "1.5.3", "snakemake": "9.1.0rc1"}
    # pyyaml in range; pandas too old; opacus absent; a pre-release counts as installed and in range
    assert wheelhouse.missing(reqs, have) == ["pandas>=2.0", "opacus>=1.4"]
    assert wheelhouse.missing(reqs, {}) == reqs
    assert wheelhouse.pinned(["pandas>=2.0", "tqdm>=4.60"], {"pandas": "3.1.1"}) == ["pandas==3.1.1", "tqdm>=4.60"]


def test_constraints_are_the_machines_versions_without_its_cuda_stack_or_local_builds():
    have = {"numpy": "2.5.2", "torch": "2.11.0", "triton": "3.6.0", "nvidia-cudnn-cu13": "9.1",
            "cuda-bindings": "13.0", "torchvision": "0.26.0", "jinja2": "3.1.6", "mylib": "1.0+local"}
    assert wheelhouse.constraints(have) == ["jinja2==3.1.6", "numpy==2.5.2"]


def test_wheels_the_machine_has_at_the_same_version_are_dropped(tmp_path):
    for name in ("Jinja2-3.1.6-py3-none-any.whl", "jinja2-3.1.5-py3-none-any.whl",
                 "typing_extensions-4.16.0-py3-none-any.whl", "snakemake-9.27.1-py3-none-any.whl"):
        (tmp_path / name).touch()
    dropped = wheelhouse.drop_installed(tmp_path, {"jinja2": "3.1.6", "typing-extensions": "4.16.0"})
    assert dropped == ["Jinja2-3.1.6-py3-none-any.whl", "typing_extensions-4.16.0-py3-none-any.whl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jinja2-3.1.5-py3-none-any.whl",
                                                          "snakemake-9.27.1-py3-none-any.whl"]


def test_the_requirements_of_the_check_are_the_packages_it_imports():
    """bench/gpu-check-requirements.txt and gpu_check.NEEDS name the same packages (torch and numpy: the
    interpreter's own), so the wheelhouse brings what the package check asks for."""
    import gpu_check

    reqs = {wheelhouse.canonical(r.split(">=")[0]) for r in wheelhouse.read_requirements(wheelhouse.REQUIREMENTS)}
    assert reqs == {pip for _, pip in gpu_check.NEEDS} - {"torch", "numpy"}


def test_the_api_audit_flags_a_torch_name_the_older_sources_lack(tmp_path, monkeypatch):
    wheel = tmp_path / "torch-old.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("torch/backends/cudnn/__init__.py", "allow_tf32 = True\ndef version(): pass\n")
        z.writestr("torch/README.txt", "fp32_precision")                      # not Python: not read
    assert {"allow_tf32", "version", "def", "True"} <= torch_api_audit.wheel_identifiers(wheel)
    assert "fp32_precision" not in torch_api_audit.wheel_identifiers(wheel)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("torch.backends.cudnn.conv.fp32_precision = 'ieee'\nx.torchy.y\n")
    used = torch_api_audit.used_names(tmp_path)
    assert used == {n: {"src/a.py"} for n in ("backends", "cudnn", "conv", "fp32_precision")}


def test_a_name_without_a_version_counts_as_installed_and_keeps_its_small_wheels(tmp_path):
    freeze = tmp_path / "names.txt"
    freeze.write_text("scipy\npackaging\nnumpy==2.5.2\n")
    have = wheelhouse.read_freeze(freeze)
    assert have == {"scipy": None, "packaging": None, "numpy": "2.5.2"}
    assert wheelhouse.missing(["scipy>=1.10", "numpy>=3", "pyyaml"], have) == ["numpy>=3", "pyyaml"]
    assert wheelhouse.constraints(have) == ["numpy==2.5.2"]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "scipy-1.17.1-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"x" * wheelhouse.SMALL)
    (tmp_path / "w" / "packaging-25.0-py3-none-any.whl").write_bytes(b"x" * (wheelhouse.SMALL - 1))
    assert wheelhouse.drop_installed(tmp_path / "w", have) == ["scipy-1.17.1-cp312-cp312-manylinux_2_28_x86_64.whl"]
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["packaging-25.0-py3-none-any.whl"]

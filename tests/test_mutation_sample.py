"""bench/mutation_sample.py: the interval it quotes and the sample it draws."""
import importlib.util

import pytest

from helpers import ROOT

spec = importlib.util.spec_from_file_location("mutation_sample", ROOT / "bench/mutation_sample.py")
ms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ms)


def test_wilson_interval_by_hand():
    # 80 of 100, z = 1.959964 (z^2 = 3.841459): centre (0.8 + z^2/200) / (1 + z^2/100) = 0.819207 / 1.038415
    # = 0.788902, half-width z sqrt(0.0016 + z^2/40000) / 1.038415 = 1.959964 * 0.041183 / 1.038415 = 0.077731:
    # [0.7112, 0.8666], the textbook interval for 80/100
    lo, hi = ms.wilson(80, 100)
    assert lo == pytest.approx(0.788902 - 0.077731, abs=3e-6) and hi == pytest.approx(0.788902 + 0.077731, abs=3e-6)
    assert ms.wilson(0, 10)[0] == 0.0 and ms.wilson(10, 10)[1] == pytest.approx(1.0)   # within [0, 1]
    assert ms.wilson(0, 0) == (0.0, 1.0)


def test_the_sample_is_seeded_without_replacement_and_independent_of_listing_order():
    names = [f"m.f__mutmut_{i}" for i in range(300)]
    a = ms.sample(names, 120, 0)
    assert len(set(a)) == 120 and set(a) <= set(names)
    assert a == ms.sample(list(reversed(names)), 120, 0) and a != ms.sample(names, 120, 1)
    assert sorted(ms.sample(names[:50], 120, 0)) == sorted(names[:50])   # fewer mutants than M: all of them


def test_result_lines_are_parsed_as_mutmut_prints_them(tmp_path, monkeypatch):
    out = ("    metantk_nas.search.budget.x_solve__mutmut_1: killed\n"
           "    metantk_nas.search.budget.x_solve__mutmut_2: survived\n"
           "    metantk_nas.search.budget.x_solve__mutmut_3: no tests\n"
           "    metantk_nas.search.budget.x_solve__mutmut_4: timeout\n")
    monkeypatch.setattr(ms.subprocess, "run", lambda *a, **k: type("P", (), {"stdout": out})())
    got = ms.statuses("mutmut")
    assert got == {"metantk_nas.search.budget.x_solve__mutmut_1": "killed",
                   "metantk_nas.search.budget.x_solve__mutmut_2": "survived",
                   "metantk_nas.search.budget.x_solve__mutmut_3": "no tests",
                   "metantk_nas.search.budget.x_solve__mutmut_4": "timeout"}
    f = tmp_path / "sampled.tsv"
    f.write_text("# header\na\tkilled\t1.0\nb\tsurvived\t2.0\n")
    assert ms.read_done(f) == {"a": "killed", "b": "survived"}


def test_record_appends_each_new_verdict_once(tmp_path):
    out = tmp_path / "sampled.tsv"
    out.write_text("# header\n")
    seen: set[str] = set()
    assert ms.record(out, ["a", "b", "c"], seen, {"a": "killed", "b": "not checked"}, 0.0) == 1
    assert ms.record(out, ["a", "b", "c"], seen, {"a": "killed", "b": "survived", "c": "no tests"}, 0.0) == 2
    assert ms.read_done(out) == {"a": "killed", "b": "survived", "c": "no tests"}
    assert len(out.read_text().splitlines()) == 4                       # a is not written twice


FAKE_MUTMUT = '''#!/usr/bin/env python
import sys, time
from pathlib import Path
state = Path(__file__).with_name("verdicts")
if sys.argv[1] == "run":            # verdicts arrive one by one, as mutmut saves them; the last name is never run
    for i, name in enumerate(sys.argv[4:-1]):
        time.sleep(0.05)
        with state.open("a") as f:
            f.write(f"    {name}: {'survived' if i == 1 else 'killed'}\\n")
    sys.exit(1)
print(state.read_text() if state.exists() else "", end="")
'''


def test_run_sample_records_every_verdict_mutmut_saves_and_leaves_unrun_ones_for_the_rerun(tmp_path):
    fake = tmp_path / "mutmut"
    fake.write_text(FAKE_MUTMUT)
    fake.chmod(0o755)
    out = tmp_path / "sampled.tsv"
    out.write_text("# header\n")
    ms.run_sample(str(fake), 2, ["m1", "m2", "m3", "m4"], out, 10, poll=0.01)
    assert ms.read_done(out) == {"m1": "killed", "m2": "survived", "m3": "killed"}   # m4 for the rerun

"""The provenance audit on hand-written records: a chain raw -> prepared -> table (and a second input shared by two
records), hashes computed here with hashlib; every kind of broken link is reported naming the file."""
import hashlib
import json

import pytest

from metantk_nas.report.audit import audit

COMMIT = "0123456789abcdef0123"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(artifact, stage, inputs, *, commit=COMMIT, dirty=False, slurm=None, outputs=None):
    rec = {"stage": stage, "outputs": outputs if outputs is not None else {str(artifact): sha(artifact)},
           "inputs": {str(p): sha(p) for p in inputs}, "code": {"commit": commit, "dirty": dirty},
           "config_hash": "c0ffee1234567890", "slurm": slurm}
    (artifact.parent / f"{artifact.name}.prov.json").write_text(json.dumps(rec))


@pytest.fixture
def chain(tmp_path):
    raw, cfg = tmp_path / "raw.pickle", tmp_path / "config.yaml"
    raw.write_bytes(b"raw images")
    cfg.write_text("seed: 0\n")
    prepared, table = tmp_path / "train_images.npy", tmp_path / "table1.tex"
    prepared.write_bytes(b"prepared images")
    record(prepared, "prepare_data", [raw, cfg])
    table.write_text("\\begin{tabular}")
    record(table, "tables", [prepared, cfg], slurm={"job_id": "42", "partition": "cpu"})
    return {"raw": raw, "cfg": cfg, "prepared": prepared, "table": table}


def test_an_intact_chain_passes_and_lists_every_link_once(chain):
    rep = audit(chain["table"])
    assert rep.ok, rep.problems
    t, p, r, c = (chain[k] for k in ("table", "prepared", "raw", "cfg"))
    assert rep.lines == [
        f"{t} [tables @ {COMMIT[:10]} slurm 42, config c0ffee1234]",
        f"  {p} [prepare_data @ {COMMIT[:10]}, config c0ffee1234]",
        f"    {r} [source {sha(r)[:12]}]",
        f"    {c} [source {sha(c)[:12]}]",
        # the config is an input of both records: listed once, where it is first reached
    ]


def test_a_changed_source_is_named_with_both_hashes(chain):
    before = sha(chain["raw"])
    chain["raw"].write_bytes(b"other images")
    rep = audit(chain["table"])
    assert rep.problems == [f"{chain['raw']}: sha256 {sha(chain['raw'])[:12]} differs from the recorded "
                            f"{before[:12]} (file changed)"]
    assert f"    CHANGED {chain['raw']}" in rep.lines


def test_a_changed_artifact_and_a_missing_input_are_named(chain):
    recorded = sha(chain["table"])
    chain["table"].write_text("edited by hand")
    chain["raw"].unlink()
    rep = audit(chain["table"])
    assert rep.problems == [
        f"{chain['table']}: sha256 {sha(chain['table'])[:12]} differs from the recorded {recorded[:12]} (file changed)",
        f"{chain['raw']}: missing file"]
    assert f"    MISSING {chain['raw']}" in rep.lines and not rep.ok


def test_an_artifact_without_a_record_or_not_listed_in_its_record(chain, tmp_path):
    bare = tmp_path / "table2.tex"
    bare.write_text("x")
    rep = audit(bare)
    assert rep.problems == [f"{bare}: no provenance record (table2.tex.prov.json)"] and rep.lines == [f"NO RECORD {bare}"]
    record(bare, "tables", [chain["cfg"]], outputs={str(tmp_path / "other.tex"): "0" * 64})
    assert audit(bare).problems == [f"{bare}: its provenance record does not list it as an output"]
    assert audit(tmp_path / "absent.tex").problems == [f"{tmp_path / 'absent.tex'}: missing file"]


def test_unknown_or_uncommitted_code_is_a_problem_unless_allowed(chain):
    record(chain["prepared"], "prepare_data", [chain["raw"]], commit="unknown")
    assert audit(chain["table"]).problems[-1] == f"{chain['prepared']}: produced by an unknown code version"
    record(chain["prepared"], "prepare_data", [chain["raw"]], dirty=True)
    record(chain["table"], "tables", [chain["prepared"]])    # the prepared file's hash is unchanged: re-record anyway
    rep = audit(chain["table"])
    assert rep.problems == [f"{chain['prepared']}: produced by uncommitted code (commit {COMMIT[:10]} + local changes)"]
    assert f"  {chain['prepared']} [prepare_data @ {COMMIT[:10]}+dirty, config c0ffee1234]" in rep.lines
    assert audit(chain["table"], allow_dirty=True).ok


def test_a_record_without_code_or_config_fields_is_an_unknown_version(chain):
    """A record written by something else (or an old version) may lack "code" and "config_hash": the audit says
    the code version is unknown and prints "?" for what is missing, instead of failing."""
    rec = json.loads((chain["prepared"].parent / "train_images.npy.prov.json").read_text())
    del rec["code"], rec["config_hash"]
    (chain["prepared"].parent / "train_images.npy.prov.json").write_text(json.dumps(rec))
    rep = audit(chain["table"])
    assert rep.problems == [f"{chain['prepared']}: produced by an unknown code version"]
    assert f"  {chain['prepared']} [prepare_data @ ?, config ?]" in rep.lines
    rec["code"] = {"dirty": False}                        # a code section without a commit
    (chain["prepared"].parent / "train_images.npy.prov.json").write_text(json.dumps(rec))
    assert audit(chain["table"]).problems == [f"{chain['prepared']}: produced by an unknown code version"]

"""The table of methods (metantk_nas.methods) against the paper and the config schema: every decision a method
name used to make by string comparison, written out here by hand."""
import pytest
import yaml

from helpers import ROOT
from metantk_nas.methods import (KERNEL_METHODS, METHODS, PUBLISHED_METHOD, RANDOM_METHOD, SEARCHED_METHODS,
                                 TABLE1_METHODS, method)


def test_the_schema_and_the_table_name_the_same_methods():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    grid = schema["properties"]["grid"]["items"]["properties"]["methods"]["items"]["enum"]
    assert grid == list(METHODS) == ["metantk", "tenas", "linreg", "random", "metanas"]


def test_what_each_method_scores_and_whether_it_searches():
    """The paper's Table 2 columns (MetaNTK, NTK, linear regions) and §6: MetaNTK-NAS scores the MetaNTK and the
    linear regions, TE-NAS the NTK and the regions, the Linear Region ablation the regions only, a Random Cell
    nothing (a draw, no pruning); MetaNAS is the published cell, no search."""
    by_hand = {"metantk": (True, True, "MetaNTK", True), "tenas": (True, True, "NTK", True),
               "linreg": (True, True, None, True), "random": (True, False, None, False),
               "metanas": (False, False, None, False)}
    assert {n: (method(n).searched, method(n).pruned, method(n).kernel, method(n).regions) for n in METHODS} == by_hand
    assert SEARCHED_METHODS == ("metantk", "tenas", "linreg", "random")
    assert (PUBLISHED_METHOD, RANDOM_METHOD) == ("metanas", "random")
    assert KERNEL_METHODS == {"MetaNTK": "metantk", "NTK": "tenas"} and TABLE1_METHODS == ("metanas", "metantk")
    with pytest.raises(KeyError, match="unknown method 'darts' .known: metantk, tenas, linreg, random, metanas"):
        method("darts")


def test_the_tables_rows_and_labels_are_the_papers():
    from metantk_nas.report.tables import TABLE2_ROWS

    assert TABLE2_ROWS == [("metantk", "MetaNTK-NAS", "✓", "", "✓"), ("tenas", "TE-NAS", "", "✓", "✓"),
                           ("linreg", "Linear Region", "", "", "✓"), ("random", "Random Cell", "", "", "")]
    assert [method(n).label for n in TABLE1_METHODS] == ["MetaNAS(retrained)†", "MetaNTK-NAS"]

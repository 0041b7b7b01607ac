"""Configuration: merge YAML files, validate against the JSON schema, expose typed dataclasses.

``load_config(["config/config.yaml", "config/smoke.yaml"])`` deep-merges the files in order (mappings merge,
everything else is replaced: the same rule Snakemake applies to ``--configfile``) and validates the result.  Any
error is one line naming the key path, e.g. ``config: search.repeats: expected integer >= 1, got 'three'``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from .errors import ConfigError
from .methods import METHODS, RANDOM_METHOD, SEARCHED_METHODS  # noqa: F401  (re-exported)
from .methods import method as method_of
from .provenance import repo_root

SCHEMA_PATH = repo_root() / "workflow" / "schemas" / "config.schema.yaml"
INFINITE_TIME = 1000.0  # the original replaces inner_lr_time >= 1000 by infinity


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config: file not found: {path}")
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: {path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None


def _schema() -> dict[str, Any]:
    return read_yaml(SCHEMA_PATH)


def _describe(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{path}: unknown key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(error.schema.get('properties', {})))}"
    if v == "required":
        return f"{path}: {error.message}"
    if v in ("type",):
        return f"{path}: expected {error.validator_value}, got {error.instance!r}"
    if v == "enum":
        return f"{path}: expected one of {error.validator_value}, got {error.instance!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return f"{path}: expected a value {op} {error.validator_value}, got {error.instance!r}"
    if v == "propertyNames":
        return f"{path}: invalid key {error.instance!r} ({error.message})"
    return f"{path}: {error.message}"


def validate_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` with one line naming the first offending key path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        # prefer the deepest, most specific error among those on the first path
        raise ConfigError(f"config: {_describe(_most_specific(errors))}")
    for entry in cfg["grid"]:
        if entry["dataset"] not in cfg["data"]["datasets"]:
            raise ConfigError(f"config: grid: dataset {entry['dataset']!r} is not defined under data.datasets "
                              f"(defined: {', '.join(cfg['data']['datasets'])})")
    for name, ds in cfg["data"]["datasets"].items():
        if ds["format"] == "synthetic" and "synthetic" not in ds:
            raise ConfigError(f"config: data.datasets.{name}.synthetic: required for format 'synthetic'")
        if ds["format"] != "synthetic" and "source" not in ds:
            raise ConfigError(f"config: data.datasets.{name}.source: required for format {ds['format']!r}")
    _validate_study(cfg)


def _validate_study(cfg: Mapping[str, Any]) -> None:
    st = cfg["study"]
    for d in st["datasets"]:
        if d not in cfg["data"]["datasets"]:
            raise ConfigError(f"config: study.datasets: dataset {d!r} is not defined under data.datasets "
                              f"(defined: {', '.join(cfg['data']['datasets'])})")
        for c in st["cells"]:
            if str(c) not in _per_dataset(cfg["train"]["recipes"], d)["batch_size"]:
                raise ConfigError(f"config: study.cells: train.recipes of {d!r} has no batch_size for {c} cells")
    if "full" in st["budgets"]:
        raise ConfigError("config: study.budgets: the name 'full' is reserved (study.recipe: full = train.recipes as "
                          "they are); name the budget otherwise")
    if st["recipe"] != "full" and st["recipe"] not in st["budgets"]:
        raise ConfigError(f"config: study.recipe: expected 'full' or a key of study.budgets "
                          f"({', '.join(st['budgets']) or 'none defined'}), got {st['recipe']!r}")


def _most_specific(errors: list[Any]) -> Any:
    best = errors[0]
    for e in errors:
        if e.context:
            continue
        if len(list(e.absolute_path)) > len(list(best.absolute_path)):
            best = e
    return best


def load_config(paths: Sequence[str | Path]) -> dict[str, Any]:
    if not paths:
        raise ConfigError("config: no config file given")
    merged: dict[str, Any] = {}
    for p in paths:
        data = read_yaml(p)
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: {p}: top level must be a mapping, got {type(data).__name__}")
        merged = deep_merge(merged, data)
    validate_config(merged)
    return merged


# ----------------------------------------------------------------------------------------------------------------
# Typed views of the sections each stage reads.
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelSpec:
    inner: str          # "maml" | "anil"
    inner_time: float   # math.inf when the config says >= 1000
    reg: float


@dataclass(frozen=True)
class FidelitySwitches:
    fresh_head_per_network: bool = True
    default_init: bool = True
    cifar_normalisation: bool = True
    stale_group_origin: bool = True
    fresh_batch_per_candidate: bool = True
    nan_condition: float = 1e5


@dataclass(frozen=True)
class LinearRegionSpec:
    batch: int = 1000
    batches: int = 3
    patch: int = 3
    resize: int = 32
    channels: int = 1


@dataclass(frozen=True)
class SearchConfig:
    method: str
    cells: int
    seed: int
    kernel: KernelSpec | None
    channels: int = 48
    image_size: int = 32
    ways: int = 5
    shots: int = 1
    queries: int = 1
    tasks_per_batch: int = 3
    task_pool: int = 1000
    ntk_batch: int = 30
    repeats: int = 3
    precision: int = 3
    norm: str = "groupnorm16"
    ntk_backend: str = "fast"
    ntk_chunk: int = 16
    batch_candidates: bool = False
    batch_memory_mb: int = 4096
    checkpoint_seconds: float = 5.0
    grad_dtype: str = "float32"
    ops: tuple[str, ...] = ()
    linear_regions: LinearRegionSpec = LinearRegionSpec()
    fidelity: FidelitySwitches = FidelitySwitches()


@dataclass(frozen=True)
class TrainConfig:
    cells: int
    seed: int
    channels: int
    image_size: int
    lr: float
    epochs: int
    decay_epochs: tuple[int, ...]
    batch_size: int
    drop_path: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 8
    color_jitter: float = 0.4
    mixed_precision: bool = False
    channels_last: bool = True


@dataclass(frozen=True)
class EvalConfig:
    episodes: int
    ways: int
    shots: tuple[int, ...]
    queries: int
    support_augmentations: int
    C: float
    seed: int
    solver: str
    feature_batch: int
    image_size: int
    crop_padding: int
    color_jitter: float
    channels_last: bool = True


def _per_dataset(table: Mapping[str, Any], dataset: str) -> Any:
    return table.get(dataset, table["default"])


def kernel_spec(cfg: Mapping[str, Any], dataset: str, cells: int) -> KernelSpec:
    table = cfg["search"]["kernels"]
    for key in (dataset, "default"):
        entry = table.get(key, {}).get(str(cells))
        if entry is not None:
            t = float(entry["inner_time"])
            return KernelSpec(entry["inner"], math.inf if t >= INFINITE_TIME else t, float(entry["reg"]))
    raise ConfigError(f"config: search.kernels: no kernel for dataset {dataset!r} with {cells} cells "
                      f"(add search.kernels.{dataset}.\"{cells}\" or search.kernels.default.\"{cells}\")")


def study_kernel_spec(cfg: Mapping[str, Any], dataset: str, cells: int, inner: str) -> KernelSpec:
    """The kernel of the study's MetaNTK score with ``inner``: the search's own entry for (dataset, cells) where its
    inner is ``inner`` (the score then is the search's); otherwise ``study.kernels.<inner>``, that score's own
    settings (never the other kernel's inner_time and reg)."""
    spec = kernel_spec(cfg, dataset, cells)
    if spec.inner == inner:
        return spec
    own = cfg["study"]["kernels"][inner]
    t = float(own["inner_time"])
    return KernelSpec(inner, math.inf if t >= INFINITE_TIME else t, float(own["reg"]))


def search_config(cfg: Mapping[str, Any], dataset: str, method: str, cells: int, seed: int) -> SearchConfig:
    s = cfg["search"]
    kernel = kernel_spec(cfg, dataset, cells) if method_of(method).kernel == "MetaNTK" else None
    nested = ("method", "cells", "seed", "kernel", "ops", "linear_regions", "fidelity")
    plain = {f.name: s[f.name] for f in fields(SearchConfig) if f.name not in nested and f.name in s}
    return SearchConfig(method=method, cells=cells, seed=seed, kernel=kernel, ops=tuple(s["ops"]),
                        linear_regions=LinearRegionSpec(**s["linear_regions"]),
                        fidelity=FidelitySwitches(**s["fidelity"]), **plain)


def budget_recipe(recipe: Mapping[str, Any], fraction: float) -> dict[str, Any]:
    """A recipe shortened to ``fraction`` of its epochs, the lr milestones scaled alike (rounded, at least 1)."""
    return {**recipe, "epochs": max(1, round(recipe["epochs"] * fraction)),
            "decay_epochs": sorted({max(1, round(d * fraction)) for d in recipe["decay_epochs"]})}


def train_config(cfg: Mapping[str, Any], dataset: str, cells: int, seed: int, budget: str = "full") -> TrainConfig:
    """The training recipe of (dataset, cells); ``budget``: "full", or a key of study.budgets that shortens it."""
    t = cfg["train"]
    r = _per_dataset(t["recipes"], dataset)
    if budget != "full":
        r = budget_recipe(r, cfg["study"]["budgets"][budget]["fraction"])
    bs = r["batch_size"].get(str(cells))
    if bs is None:
        raise ConfigError(f"config: train.recipes.{dataset}.batch_size: no entry for {cells} cells")
    return TrainConfig(cells=cells, seed=seed, channels=t["channels"], image_size=t["image_size"], lr=r["lr"],
                       epochs=r["epochs"], decay_epochs=tuple(r["decay_epochs"]), batch_size=bs,
                       drop_path=r["drop_path"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                       crop_padding=t["crop_padding"], color_jitter=t["color_jitter"],
                       mixed_precision=t["mixed_precision"],
                       channels_last=t["channels_last"])


def eval_config(cfg: Mapping[str, Any], episodes: int | None = None) -> EvalConfig:
    """The evaluation settings; ``episodes`` replaces evaluate.episodes (the study's study.episodes)."""
    e = cfg["evaluate"]
    t = cfg["train"]
    return EvalConfig(episodes=episodes or e["episodes"], ways=e["ways"], shots=tuple(e["shots"]), queries=e["queries"],
                      support_augmentations=e["support_augmentations"], C=e["C"], seed=e["seed"],
                      solver=e["solver"], feature_batch=e["feature_batch"], image_size=t["image_size"],
                      crop_padding=t["crop_padding"], color_jitter=t["color_jitter"], channels_last=t["channels_last"])


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    cells: int
    seed: int

    @property
    def tag(self) -> str:
        return f"{self.dataset}-{self.method}-{self.cells}-{self.seed}"

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.method}/cells{self.cells}/seed{self.seed}"


def iter_runs(cfg: Mapping[str, Any]) -> Iterator[Run]:
    seen = set()
    for entry in cfg["grid"]:
        for m in entry["methods"]:
            for c in entry["cells"]:
                for s in entry["seeds"]:
                    run = Run(entry["dataset"], m, c, s)
                    if run not in seen:
                        seen.add(run)
                        yield run


@dataclass(frozen=True)
class Comparison:
    """One side-by-side figure of the cells of every method of a (dataset, cells) at its first seed in the grid."""
    dataset: str
    cells: int
    seed: int
    methods: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"figures/cells-{self.dataset}-{self.cells}-{self.seed}"


def comparison(cfg: Mapping[str, Any], dataset: str, cells: int, seed: int) -> Comparison:
    """The methods of the grid that have a run at (dataset, cells, seed), in grid order."""
    key = (dataset, cells, seed)
    methods = tuple(dict.fromkeys(r.method for r in iter_runs(cfg) if (r.dataset, r.cells, r.seed) == key))
    if not methods:
        raise ConfigError(f"grid: no run has dataset {dataset!r}, {cells} cells, seed {seed}")
    return Comparison(dataset, cells, seed, methods)


def comparisons(cfg: Mapping[str, Any]) -> list[Comparison]:
    """The figures `all` builds: one per (dataset, cells) of the grid, at its first seed."""
    first: dict[tuple[str, int], int] = {}
    for r in iter_runs(cfg):
        first.setdefault((r.dataset, r.cells), r.seed)
    return [comparison(cfg, d, c, s) for (d, c), s in first.items()]


# ----------------------------------------------------------------------------------------------------------------
# The score-vs-accuracy study (`snakemake study`, docs/study.md)
# ----------------------------------------------------------------------------------------------------------------
STUDY_METHODS = SEARCHED_METHODS   # the grid's searched methods whose cells the study adds
STUDY_SCORES = ("metantk_maml", "metantk_anil", "ntk", "regions", "params", "rank_sum")


def study_runs(cfg: Mapping[str, Any]) -> list[Run]:
    """The study's architectures, each named by the run whose genotype.json it is: per (dataset, cells) the random
    cells of seeds first_seed .. first_seed + N - 1, then (include_grid) the grid's searched runs, without
    duplicates."""
    st = cfg["study"]
    grid = list(iter_runs(cfg))
    out: list[Run] = []
    for d in st["datasets"]:
        for c in st["cells"]:
            runs = [Run(d, RANDOM_METHOD, c, st["first_seed"] + i) for i in range(st["architectures"])]
            if st["include_grid"]:
                runs += [r for r in grid if (r.dataset, r.cells) == (d, c) and r.method in STUDY_METHODS]
            out += [r for r in dict.fromkeys(runs) if r not in out]
    return out


def study_reuses_grid(cfg: Mapping[str, Any]) -> bool:
    """With the full recipe and the grid's episodes, an architecture's accuracy is its run's own fewshot.json (the
    grid's runs are not trained twice); otherwise the study trains and evaluates under results/{exp}/study-runs."""
    return cfg["study"]["recipe"] == "full" and cfg["study"]["episodes"] is None


def study_run_root(cfg: Mapping[str, Any]) -> str:
    """Where, under results/{experiment}, the study's trained runs live ("" = the grid's own tree)."""
    return "" if study_reuses_grid(cfg) else "study-runs"


def study_figures(cfg: Mapping[str, Any]) -> list[str]:
    """The scatter plots of the study, relative to results/{experiment}/study/."""
    st = cfg["study"]
    return [f"figures/scatter-{d}-{c}-{s}.png" for d in st["datasets"] for c in st["cells"] for s in STUDY_SCORES]


# The config keys (dotted paths) each stage reads, in two kinds.  STAGE_PARAMS: the keys that change a stage's
# results; Snakemake's params hashes, the provenance records' config_hash and the `params` of dvc.yaml are derived
# from them alone, so changing one reruns the stage and what follows.  OPERATIONAL_PARAMS: the keys a stage reads
# that provably leave its outputs unchanged (each names the test that proves it); changing one reruns nothing.
# tests/test_stage_params.py runs every stage with its config read through a RecordingMapping and fails where a
# stage reads a key these tables (and GLOBAL_KEYS) do not cover, or where an entry names a key the stage never reads.
SEARCH_RESULT_KEYS = tuple(f"search.{k}" for k in (
    "channels", "image_size", "ways", "shots", "queries", "tasks_per_batch", "task_pool", "ntk_batch", "repeats",
    "precision", "norm", "ntk_backend", "ntk_chunk", "batch_candidates", "batch_memory_mb", "grad_dtype", "ops", "kernels",
    "linear_regions", "fidelity"))
EVAL_KEYS = ("evaluate.episodes", "evaluate.ways", "evaluate.shots", "evaluate.queries",
             "evaluate.support_augmentations", "evaluate.C", "evaluate.seed", "evaluate.solver",
             "evaluate.feature_batch", "train.channels", "train.image_size", "train.crop_padding",
             "train.color_jitter", "train.channels_last")
TRAIN_KEYS = ("train.channels", "train.image_size", "train.momentum", "train.weight_decay", "train.crop_padding",
              "train.color_jitter", "train.recipes", "train.mixed_precision", "train.channels_last")
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare_data": ("data.datasets",),
    "search": SEARCH_RESULT_KEYS,
    "export_genotype": ("export", "train.channels", "tables.genotypes"),   # train.channels: the budget's #params
    "train": TRAIN_KEYS,
    "evaluate": EVAL_KEYS,
    "tables": ("tables", "grid", "evaluate.shots"),
    "study_score": (*SEARCH_RESULT_KEYS, "train.channels", "study.kernels"),   # train.channels: the evaluation net's #params
    "study_train": (*TRAIN_KEYS, "study.recipe", "study.budgets"),
    "study_evaluate": (*EVAL_KEYS, "study.episodes"),
    "study": ("study", "grid", "search.kernels", "search.ops", "evaluate.shots", "data.datasets"),
}
OPERATIONAL_PARAMS: dict[str, tuple[str, ...]] = {
    # the resumable state's cadence: the same search.json (tests/test_stage_params.py), and a resumed search ends
    # byte-identical (tests/test_pruning.py, test_search.py).  Not here: search.ntk_chunk and batch_memory_mb, the
    # pass sizes, which move a kernel's last bits (on the tiny search, one thread, ntk_chunk 3 instead of 16 moved
    # dK values in the third decimal: metantk 0.512 -> 0.511, tenas -10.860 -> -10.863), so they are result keys.
    "search": ("search.checkpoint_seconds",),
    "study_score": ("search.checkpoint_seconds",),
}
# Read by every stage, stage parameters of none: where it runs and how (like the device, not the experiment)
GLOBAL_KEYS = ("device", "deterministic", "tf32")


class RecordingMapping(Mapping):
    """A read-only view of a config that records the dotted key paths read through it, for
    tests/test_stage_params.py.  A leaf value returned, or a mapping's keys, values or items iterated (``**m``,
    ``dict(m)``), is a read of that path; a nested mapping comes back as a view of its own; ``in`` reads nothing."""

    def __init__(self, data: Mapping[str, Any], reads: set[str] | None = None, prefix: str = ""):
        self._data, self.reads, self._prefix = data, set() if reads is None else reads, prefix

    def unwrapped(self) -> Mapping[str, Any]:
        return self._data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        path = f"{self._prefix}{key}"
        if isinstance(value, Mapping):
            return RecordingMapping(value, self.reads, path + ".")
        self.reads.add(path)
        return value

    def __iter__(self) -> Iterator[str]:
        self.reads.add(self._prefix.rstrip(".") or "*")
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def _lookup(cfg: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _plain(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.unwrapped() if isinstance(cfg, RecordingMapping) else cfg   # provenance's reads are not the stage's


def present_params(cfg: Mapping[str, Any], stage: str) -> list[str]:
    """The stage's result keys (STAGE_PARAMS) that ``cfg`` (for example one config file) sets."""
    cfg = _plain(cfg)
    return [k for k in STAGE_PARAMS.get(stage, ()) if _lookup(cfg, k)[0]]


def stage_config_subset(cfg: Mapping[str, Any], stage: str, dataset: str | None = None) -> dict[str, Any]:
    """The part of the config that decides a stage's results (recorded in provenance, used as Snakemake params):
    its STAGE_PARAMS, without the operational keys."""
    cfg = _plain(cfg)
    if stage == "prepare_data":
        return {"dataset": cfg["data"]["datasets"][dataset]}
    out: dict[str, Any] = {}
    for key in present_params(cfg, stage):
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _lookup(cfg, key)[1]
    return out

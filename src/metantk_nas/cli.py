"""Shared plumbing for the thin stage scripts: logging, config loading, one-line errors and exit codes."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from .config import METHODS, load_config
from .errors import PipelineError
from .preemption import EXIT_REQUEUE, Preempted

EXIT_BAD_INPUT = 2


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"], metavar="YAML",
                   help="config files merged in order (default: config/config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def set_threads(threads: int | None) -> None:
    import torch

    n = threads or int(os.environ.get("SNAKEMAKE_THREADS", "0") or 0) or None
    if n:
        torch.set_num_threads(n)


def run(main: Callable[[argparse.Namespace, dict[str, Any]], None], p: argparse.ArgumentParser,
        argv: list[str] | None = None) -> int:
    """Parse args, load + validate config, run ``main``; bad input becomes one line on stderr and exit code 2, a
    preempted stage (checkpointed after SIGTERM/SIGUSR1) one line and :data:`EXIT_REQUEUE` (75)."""
    args = p.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        cfg = load_config(args.configfile)
        main(args, cfg)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            print(f"error: disk full while writing {e.filename or 'output'}; finished artifacts are untouched",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    return 0


def resolve_device(cfg: dict[str, Any]) -> "torch.device":  # noqa: F821
    import torch

    want = cfg["device"]
    if want == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("config: device: 'cuda' requested but no CUDA device is available")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


def add_run_args(p: argparse.ArgumentParser, methods: Sequence[str] = METHODS) -> None:
    """The run's wildcards; ``methods``: those the stage accepts (the search: not metanas, whose cell is published)."""
    p.add_argument("--dataset", required=True, help="a key of data.datasets")
    p.add_argument("--method", required=True, choices=list(methods),
                   help=None if "metanas" in methods else "metanas has no search: its cell is the published one "
                                                          "(config/genotypes.yaml), written by export_genotype.py")
    p.add_argument("--cells", required=True, type=int, help="number of stacked cells (5 or 8 in the paper)")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: Snakemake's or torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

"""Shared plumbing for the thin stage scripts: logging, config loading, one-line errors and exit codes."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable

from .config import load_config
from .errors import PipelineError

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
    """Parse args, load + validate config, run ``main``; bad input becomes one line on stderr and exit code 2."""
    args = p.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        cfg = load_config(args.configfile)
        main(args, cfg)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            print(f"error: disk full while writing {e.filename or 'output'}; finished artifacts are untouched",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    return 0

"""Hashes, atomic writes and provenance records (docs/design.md §4).

Every artifact ``X`` written by a stage gets a record ``X.prov.json`` next to it: stage, command line, config
subset and its hash, sha256 of every input and output, code version, package versions, device, seed, wall time,
host and SLURM job.  :mod:`metantk_nas.report.audit` walks these records back to the raw files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

PROV_SUFFIX = ".prov.json"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_hash_default).encode()).hexdigest()


def _hash_default(o: Any) -> Any:
    return dict(o) if isinstance(o, Mapping) else str(o)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` only if the block succeeds.

    A killed job or a full disk therefore never leaves a half-written artifact under the final name.  A failed
    write (ENOSPC, EIO, ...) is re-raised naming ``path``, the artifact, not the temporary file or nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename in (None, str(tmp_path), tmp_path):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Mapping):   # a read-only view of a config section (config.RecordingMapping)
        return dict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def code_version() -> dict[str, Any]:
    """Git commit of the code and whether the tracked source differs from it (results/ and data/ are ignored)."""
    root = repo_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=20).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True, timeout=20).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", True
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "scipy", "opacus", "pandas", "metantk-nas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_name() -> str:
    """The GPU model, or CPU: a stage that never imported torch (export, tables) ran on the CPU."""
    if "torch" not in sys.modules:
        return f"CPU ({platform.processor() or platform.machine()})"
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - torch import failure is reported elsewhere
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def slurm_info() -> dict[str, str | None]:
    return {"job_id": os.environ.get("SLURM_JOB_ID"), "partition": os.environ.get("SLURM_JOB_PARTITION")}


@dataclass
class Provenance:
    """Collects what a stage read and wrote; :meth:`write` puts one record next to every output."""

    stage: str
    config: Mapping[str, Any]
    seed: int | None = None
    inputs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def add_inputs(self, paths: Sequence[str | Path]) -> None:
        self.inputs.extend(Path(p) for p in paths)

    def record(self, outputs: Sequence[str | Path]) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "command": [sys.executable, *sys.argv],
            "cwd": os.getcwd(),
            "config": dict(self.config),
            "config_hash": sha256_json(self.config),
            "inputs": {str(p): sha256_file(p) for p in self.inputs},
            "outputs": {str(p): sha256_file(p) for p in outputs},
            "code": code_version(),
            "packages": package_versions(),
            "device": device_name(),
            "seed": self.seed,
            "wall_seconds": round(time.time() - self.started, 3),
            "host": socket.gethostname(),
            "slurm": slurm_info(),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **({"extra": self.extra} if self.extra else {}),
        }

    def write(self, outputs: Sequence[str | Path]) -> dict[str, Any]:
        """Write ``<output>.prov.json`` for each output (one shared record: all outputs are listed)."""
        rec = self.record(outputs)
        for out in outputs:
            write_json_atomic(prov_path(out), rec)
        return rec


def prov_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + PROV_SUFFIX)


def read_provenance(artifact: str | Path) -> dict[str, Any] | None:
    p = prov_path(artifact)
    if not p.exists():
        return None
    with open(p) as f:
        return json.load(f)

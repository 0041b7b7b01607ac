#!/usr/bin/env python3
"""make wheelhouse: the wheels `make gpu-check` needs besides torch, for a machine with no package index.

On a machine with package access, for the GPU machine's Python version (and x86_64 manylinux):

  make wheelhouse PYVER=3.12                              # every package of bench/gpu-check-requirements.txt
  make wheelhouse PYVER=3.12 HAVE=gpu-pip-freeze.txt      # only what that machine lacks

HAVE is the GPU machine's `python3 -m pip list --format=freeze`.  A requirement its installed version already
satisfies is left out, and the dependencies of the rest are resolved at the versions it has (pip constraints) and
left out too: what remains is what `make gpu-check PY=... WHEELS=wheelhouse` installs there.  Where only the names
of its packages are known, a line may hold a name alone: such a package counts as present in any version, and only
its wheels of 1 MiB or more are left out (the small ones stay, in case its version is out of a range).  Torch is never
downloaded (opacus is fetched without its dependencies, its others listed here), nor are local builds (`+cu130`).
The top-level packages come at requirements.txt's pinned versions.  A dependency published only as source (for
example connection_pool) is built into a pure-Python wheel here.  The folder's size is printed; docs/scaling.md
has the figures.  Uses only the standard library and pip.
"""
from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "bench" / "gpu-check-requirements.txt"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")   # the machine's own CUDA stack
OPACUS_DEPS = ("opt-einsum>=3.3.0", "scipy>=1.2")   # opacus' dependencies other than torch and numpy
NO_SOURCE = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)")
CONFLICT = re.compile(r"The user requested \(constraint\) (\S+==\S+)")
log = logging.getLogger("wheelhouse")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:   # pip's own copy
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
    return Requirement, Version


def read_requirements(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def read_freeze(path: Path) -> dict[str, str | None]:
    """A pip freeze: canonical name -> version.  A line with a name alone means installed, version unknown (None):
    for example the names of a machine's package list when its versions are not at hand.  Editable and URL lines
    are skipped."""
    have: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        name, sep, version = line.partition("==")
        if not line or line.startswith("-") or " " in name.strip() or "@" in line:
            continue
        have[canonical(name.strip())] = version.strip() if sep else None
    return have


def pinned(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """Each requirement at requirements.txt's pinned version, where that file pins it."""
    Requirement, _ = _packaging()
    out = []
    for r in requirements:
        req = Requirement(r)
        out.append(f"{req.name}=={pins[canonical(req.name)]}" if canonical(req.name) in pins else r)
    return out


def missing(requirements: list[str], have: dict[str, str | None]) -> list[str]:
    """The requirements that ``have``'s installed versions do not satisfy (a version unknown counts as in range)."""
    Requirement, Version = _packaging()
    out = []
    for r in requirements:
        req = Requirement(r)
        name = canonical(req.name)
        if name not in have:
            out.append(r)
        elif have[name] is not None and not req.specifier.contains(Version(have[name]), prereleases=True):
            out.append(r)
    return out


def constraints(have: dict[str, str | None]) -> list[str]:
    """``have`` as pip constraints: its versions, except the CUDA stack, local builds (not on an index) and the
    packages whose version is unknown."""
    return [f"{n}=={v}" for n, v in sorted(have.items()) if v and not NEVER.match(n) and "+" not in v]


def pip_download(args: list[str], out: Path, python_version: str, constraints: list[str]) -> None:
    """``pip download`` of binary wheels for the target, under ``constraints`` (the target's versions).  A
    source-only dependency is built into a wheel here (it must be pure Python) and the download retried; a
    constraint that conflicts with a requirement (the target's version is out of its range) is dropped and the
    download retried, so that the wheelhouse carries a version in range."""
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
              *[a for p in PLATFORMS for a in ("--platform", p)]]
    cons_file = out / ".constraints.txt"
    constraints = list(constraints)
    try:
        for _ in range(40):
            cons_file.write_text("".join(f"{c}\n" for c in constraints))
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-d", str(out),
                   "--find-links", str(out), *target, "-c", str(cons_file), *args]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                return
            conflicting = set(CONFLICT.findall(proc.stdout + proc.stderr))   # pip explains a conflict on stdout
            if conflicting:
                log.info("the target's %s out of range here: fetching a version in range instead",
                         ", ".join(sorted(conflicting)))
                constraints = [c for c in constraints if c not in conflicting]
                continue
            m = NO_SOURCE.search(proc.stderr)
            if m is None:
                raise SystemExit(f"wheelhouse: pip download failed:\n{proc.stderr.strip()[-3000:]}")
            build_wheel(m.group(1), out)
    finally:
        cons_file.unlink(missing_ok=True)
    raise SystemExit("wheelhouse: pip download did not settle after 40 tries")


def build_wheel(spec: str, out: Path) -> None:
    """A pure-Python wheel of a dependency published only as source."""
    log.info("%s has no wheel for this target: building it from source", spec)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
                            "--no-deps", "-w", str(out), spec], capture_output=True, text=True)
    name = canonical(re.split(r"[<>=!~ ;]", spec)[0])
    wheels = [w for w in out.glob("*.whl") if canonical(w.name.split("-")[0]) == name]
    if built.returncode != 0 or not wheels:
        raise SystemExit(f"wheelhouse: {spec} has no wheel and did not build:\n{built.stderr.strip()[-2000:]}")
    if not all(w.name.endswith("-none-any.whl") for w in wheels):
        raise SystemExit(f"wheelhouse: {spec} built a platform wheel here ({wheels[0].name}), not one for the "
                         "target: build it on the target machine's platform")


SMALL = 2**20   # bytes: a wheel this small is kept where the target's version is unknown


def drop_installed(out: Path, have: dict[str, str | None]) -> list[str]:
    """Remove the wheels that the target machine has already: the same name and version, or, where its version is
    unknown, the same name and a wheel of SMALL or more (a small one is kept: pip takes it only where the target's
    version is out of a requirement's range).  Their file names."""
    dropped = []
    for w in sorted(out.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        name = canonical(name)
        if name in have and (have[name] == version or (have[name] is None and w.stat().st_size >= SMALL)):
            w.unlink()
            dropped.append(w.name)
    return dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python-version", required=True, help="the GPU machine's Python, e.g. 3.12")
    p.add_argument("--out", default="wheelhouse", help="the folder (default wheelhouse/, ignored by git)")
    p.add_argument("--have", default=None, metavar="FREEZE",
                   help="the GPU machine's `pip list --format=freeze`: leave out what it has")
    p.add_argument("--requirements", default=str(REQUIREMENTS), help="default bench/gpu-check-requirements.txt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not re.fullmatch(r"3\.\d+", args.python_version):
        raise SystemExit(f"wheelhouse: --python-version {args.python_version!r}: expected MAJOR.MINOR, e.g. 3.12")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    have = read_freeze(Path(args.have)) if args.have else {}
    pins = {canonical(n): v for n, _, v in (line.partition("==") for line in read_requirements(ROOT / "requirements.txt"))}
    wanted = missing(read_requirements(Path(args.requirements)), have)
    log.info("to download for Python %s: %s", args.python_version, ", ".join(wanted) or "nothing")
    cons = constraints(have)
    top = pinned(wanted, pins)
    opacus = [r for r in top if canonical(re.split(r"[<>=!~ ;]", r)[0]) == "opacus"]
    rest = [r for r in top if r not in opacus] + (missing(list(OPACUS_DEPS), have) if opacus else [])
    if opacus:
        pip_download(["--no-deps", *opacus], out, args.python_version, [])
    if rest:
        pip_download(rest, out, args.python_version, cons)
    dropped = drop_installed(out, have)
    if dropped:
        log.info("left out, the target has them: %s", ", ".join(dropped))
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    log.info("%s: %d wheels, %.1f MiB", out, len(wheels), size)
    print(f"{out}: {len(wheels)} wheels, {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

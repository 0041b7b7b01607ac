#!/usr/bin/env bash
# System packages the integration tests need: a TeX distribution (the tables' .tex must compile with pdflatex)
# and a single-node SLURM (slurmctld, slurmd, slurm-client, munge; slurmdbd and MariaDB for its accounting
# database; see tests/slurm/start.sh).
# Usage: .ci/system-deps.sh [--best-effort]   (best effort: skip quietly when not root or apt-get is missing)
set -euo pipefail
best_effort=${1:-}
need=()
command -v pdflatex >/dev/null 2>&1 || need+=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended lmodern)
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || need+=(munge)
command -v slurmdbd >/dev/null 2>&1 || need+=(slurmdbd)          # the accounting path (tests/slurm/start.sh --accounting)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if [ "$best_effort" = "--best-effort" ]; then
    echo "system-deps: cannot install ${need[*]} (not root or no apt-get); LaTeX tests will skip locally" >&2
    exit 0
  fi
  echo "system-deps: need root and apt-get to install ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

#!/usr/bin/env bash
# Mutation score of the core modules: mutmut mutates one module at a time and runs the fast unit tests that cover it
# (never the integration suite); a mutant is killed when one of them fails.  Prints killed / mutants per module.
# A tool, not part of `make test` (it runs the unit tests once per mutant: tens of minutes per module on 2 cores).
#
#   bench/mutation.sh                          # every module of the table below
#   bench/mutation.sh report/tables.py         # modules by path under src/metantk_nas/
#   JOBS=4 bench/mutation.sh data/episodes.py  # mutmut's parallel workers (default: the CPU count)
#   REV=5a2460d bench/mutation.sh ...          # the code and tests of a commit (a before/after comparison)
#   SAMPLE=120 bench/mutation.sh search/budget.py   # sampled: a seeded random sample of 120 mutants (SEED=0), the
#                                              # score with its 95% Wilson interval; each outcome saved as mutmut
#                                              # gives it, and a rerun resumes (bench/mutation_sample.py)
#
# Each module runs in a scratch copy of the tracked tree (mutmut writes mutants/ and its state next to the code),
# under $MUTATION_DIR (default /tmp/metantk-mutation); per module the mutant list and outcomes are left in
# $MUTATION_DIR/<module>/results.txt.  Surviving mutants accepted as equivalent are listed in docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
MUTMUT_VERSION=3.8.1
WORK=${MUTATION_DIR:-/tmp/metantk-mutation}
JOBS=${JOBS:-$(nproc)}

# module (under src/metantk_nas/): the fast unit tests that exercise it (never test_search.py's whole searches,
# tens of seconds per mutant); in this order when no module is named
CORE=(
  "search/pruning.py: tests/test_pruning.py"      # designed scores (stub scorer); whole searches: test_search.py
  "search/scoring.py: tests/test_scoring.py tests/test_batched.py tests/test_placement.py"
  "search/budget.py: tests/test_budget.py"
  "kernels/metantk.py: tests/test_kernels.py tests/test_fidelity.py"
  "kernels/ntk.py: tests/test_kernels.py tests/test_fidelity.py tests/test_batched.py tests/test_placement.py"
  "kernels/linear_regions.py: tests/test_kernels.py tests/test_fidelity.py"
  "fsl/evaluate.py: tests/test_evaluate.py"
  "fsl/train.py: tests/test_train.py"
  "report/tables.py: tests/test_tables.py"
  "report/audit.py: tests/test_audit.py"
  "data/episodes.py: tests/test_data.py"
  "data/safe_pickle.py: tests/test_data.py"
)
tests_of() { local e; for e in "${CORE[@]}"; do [ "${e%%:*}" = "$1" ] && { echo "${e#*: }"; return 0; }; done; return 0; }
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=("${CORE[@]%%:*}")

"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check "mutmut==$MUTMUT_VERSION"
MUTMUT=$(dirname "$PY")/mutmut

# the sampled score of module $m in its copy $dir (bench/mutation_sample.py)
sampled() {
  (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" "$ROOT/bench/mutation_sample.py" --mutmut "$MUTMUT" \
     --module "$m" --sample "$SAMPLE" --seed "${SEED:-0}" --max-children "$JOBS")
}

echo "mutation score of ${REV:-the working tree} (other: mutants no test reaches, and skipped ones)"
[ -n "${SAMPLE:-}" ] || printf '%-28s %8s %8s %8s %8s %7s\n' module mutants killed survived other score
for m in "${modules[@]}"; do
  tests=$(tests_of "$m")
  [ -n "$tests" ] || { echo "unknown module $m (known: ${CORE[*]%%:*})" >&2; exit 2; }
  dir="$WORK/${m//\//_}"
  if [ -n "${SAMPLE:-}" ] && [ -f "$dir/sampled.tsv" ]; then sampled; continue; fi   # a sampled run resumes in its copy
  rm -rf "$dir" && mkdir -p "$dir"
  if [ -n "${REV:-}" ]; then git archive "$REV" | tar -x -C "$dir"      # the tree of a commit (a "before" score)
  else git ls-files -z | xargs -0 cp --parents -t "$dir"; fi            # the working tree's tracked files
  {
    echo "[mutmut]"
    echo "source_paths = src/metantk_nas"
    echo "only_mutate = src/metantk_nas/$m"
    echo "also_copy ="                                    # tests read configs and fidelity figures from the tree
    for extra in config scripts workflow Snakefile slurm; do echo "    $extra"; done
    echo "pytest_add_cli_args_test_selection ="
    for t in $tests; do echo "    $t"; done
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "    -m"
    echo "    not integration and not sweep"
  } > "$dir/setup.cfg"
  sed -i '/^addopts = /d' "$dir/pyproject.toml"          # no --durations table per mutant
  if [ -n "${SAMPLE:-}" ]; then sampled; continue; fi
  (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$MUTMUT" run --max-children "$JOBS" > run.log 2>&1 || true)
  (cd "$dir" && "$MUTMUT" results --all true > results.txt 2>&1 || true)
  "$PY" - "$m" "$dir/results.txt" <<'EOF'
import collections, re, sys
module, path = sys.argv[1], sys.argv[2]
counts = collections.Counter(m.group(1) for line in open(path)
                             if (m := re.search(r":\s*(killed|survived|no tests|timeout|suspicious|skipped|segfault|"
                                                r"not checked|caught by type check)\s*$", line)))
total = sum(counts.values())
killed = counts["killed"] + counts["timeout"] + counts["segfault"] + counts["caught by type check"]
other = total - killed - counts["survived"]
score = f"{100 * killed / total:.0f}%" if total else "n/a"
print(f"{module:<28} {total:>8} {killed:>8} {counts['survived']:>8} {other:>8} {score:>7}")
EOF
done

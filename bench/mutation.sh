#!/usr/bin/env bash
# Mutation testing (mutmut 3) of one verdict module, in a throwaway clone so that the working tree
# is never touched. Usage:
#   bench/mutation.sh MODULE [--worktree] [--keep]
# MODULE: accuracy | intake | submission | verdicts | rubric | serving | store
#   --worktree  test the working tree's grader/ and tests/ (tracked and new files), not HEAD
#   --keep      keep the clone (its path is printed) for `mutmut show <mutant>` / `mutmut browse`
# Environment: MUTMUT (default .venv/bin/mutmut), MUTATION_JOBS (default 2).
# Prints how many mutants ended in each status, and the diff of every mutant not killed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module=${1:-}
shift || true
worktree=0 keep=0
for arg in "$@"; do
    case $arg in
        --worktree) worktree=1 ;;
        --keep) keep=1 ;;
        *) echo "unknown option $arg; use --worktree or --keep" >&2; exit 2 ;;
    esac
done

# The module and which of its functions count (mutmut name globs; "*" = all of them).
only="*"
case $module in
    accuracy | intake | submission | verdicts | rubric) path=grader/domain/$module.py ;;
    store)
        # re-scoring: stored results judged again against the current rubric
        path=grader/reports/store.py
        only=""
        for function in rescore _target_of _reported_again _heldout_again; do
            only="$only grader.reports.store.x_${function}__mutmut_*"
        done ;;
    serving)
        # the readiness verdicts: a server that exited, /ping, the model's registration
        path=grader/stages/serving.py
        only=""
        for function in exited_outcome _stopped _use_token wait_healthy _diagnose_unreachable \
            wait_model_ready _failure_lines; do
            only="$only grader.stages.serving.x_${function}__mutmut_*"
        done ;;
    *)
        echo "usage: bench/mutation.sh MODULE [--worktree] [--keep]" >&2
        echo "MODULE is one of: accuracy intake submission verdicts rubric serving store" >&2
        exit 2 ;;
esac
dotted=${path%.py}
dotted=${dotted//\//.}

mutmut=${MUTMUT:-$root/.venv/bin/mutmut}
work=$(mktemp -d /tmp/mutation-"$module".XXXXXX)
git clone --quiet "$root" "$work"
if [ "$worktree" = 1 ]; then
    (cd "$root" && git ls-files -z -co --exclude-standard -- grader tests | tar --null -T - -cf -) |
        (cd "$work" && tar -xf -)
fi
cd "$work"

# The unit tests that import the module (never the integration tests).
package=${dotted%.*} name=${dotted##*.}
selection=""
for t in $(grep -l -E "${dotted//./\\.}\\b|from ${package//./\\.} import .*\\b$name\\b" tests/unit/test_*.py); do
    selection="$selection\"$t\", "
done
if [ -z "$selection" ]; then
    echo "no unit test imports $dotted" >&2
    exit 1
fi

# The whole package is copied into mutants/ (source_paths) because the pytest plugin entry point
# imports grader.pytest_plugin; only the one module is mutated.
cat >>pyproject.toml <<EOF

[tool.mutmut]
source_paths = ["grader"]
only_mutate = ["$path"]
also_copy = ["conftest.py"]
pytest_add_cli_args_test_selection = [${selection%, }]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
EOF

status=0
# shellcheck disable=SC2086  # $only is a list of globs for mutmut to match, not for the shell
if [ "$only" = "*" ]; then
    "$mutmut" run --max-children "${MUTATION_JOBS:-2}" >mutmut-run.log 2>&1 || status=$?
else
    (set -f && "$mutmut" run --max-children "${MUTATION_JOBS:-2}" $only) >mutmut-run.log 2>&1 ||
        status=$?
fi
if [ "$status" != 0 ]; then
    tail -n 40 mutmut-run.log >&2
    echo "mutmut failed ($status); the clone is kept at $work" >&2
    exit "$status"
fi

# Counts of the mutants that count, by mutmut's status.
"$mutmut" results --all true 2>/dev/null | sed -E 's/^ +//' >results.txt
counted() {
    local pattern
    [ "$only" = "*" ] && return 0
    set -f
    for pattern in $only; do
        # shellcheck disable=SC2053  # a glob, deliberately unquoted
        [[ $1 == $pattern ]] && { set +f; return 0; }
    done
    set +f
    return 1
}
echo "== $module ($path), tests: ${selection%, }"
while IFS=: read -r mutant status; do
    if counted "$mutant"; then echo "${status# }"; fi
done <results.txt | sort | uniq -c
echo
echo "== mutants not killed"
while IFS=: read -r mutant status; do
    counted "$mutant" || continue
    case ${status# } in
        killed) ;;
        *)
            echo "-- $mutant:$status"
            "$mutmut" show "$mutant" 2>/dev/null | grep -E '^[-+][^-+]' || true ;;
    esac
done <results.txt
if [ "$keep" = 1 ]; then
    echo "clone kept at $work"
else
    rm -rf "$work"
fi

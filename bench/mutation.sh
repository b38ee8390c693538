#!/usr/bin/env bash
# Mutation testing (mutmut 3) of one verdict module, in a throwaway clone so that the working tree
# is never touched. Usage:
#   bench/mutation.sh MODULE [--worktree] [--keep]
# MODULE: accuracy | intake | submission | verdicts | rubric | serving | store
#   --worktree  test the working tree's grader/ and tests/ (tracked and new files), not HEAD
#   --keep      keep the clone (its path is printed) for `mutmut show <mutant>` / `mutmut browse`
# Environment: MUTMUT (default .venv/bin/mutmut), MUTATION_JOBS (default 2).
# Prints the counts (mutants/mutmut-cicd-stats.json) and every surviving mutant's diff.
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

# The module, the unit tests that exercise it (never the integration tests), and which of its
# functions count (a mutmut name glob; "*" = all).
case $module in
    accuracy)
        path=grader/domain/accuracy.py
        tests="tests/unit/test_accuracy.py tests/unit/test_accuracy_edges.py tests/unit/test_resource_caps.py"
        only="*" ;;
    intake)
        path=grader/domain/intake.py
        tests="tests/unit/test_intake.py tests/unit/test_submission.py tests/unit/test_intake_edges.py"
        only="*" ;;
    submission)
        path=grader/domain/submission.py
        tests="tests/unit/test_submission.py tests/unit/test_intake.py tests/unit/test_submission_edges.py"
        only="*" ;;
    verdicts)
        path=grader/domain/verdicts.py
        tests="tests/unit/test_integrity.py tests/unit/test_gpus.py tests/unit/test_verdicts.py"
        only="*" ;;
    *)
        echo "usage: bench/mutation.sh MODULE [--worktree] [--keep]" >&2
        echo "MODULE is one of: accuracy intake submission verdicts" >&2
        exit 2 ;;
esac

mutmut=${MUTMUT:-$root/.venv/bin/mutmut}
work=$(mktemp -d /tmp/mutation-"$module".XXXXXX)
git clone --quiet "$root" "$work"
if [ "$worktree" = 1 ]; then
    (cd "$root" && git ls-files -z -co --exclude-standard -- grader tests | tar --null -T - -cf -) |
        (cd "$work" && tar -xf -)
fi
cd "$work"

# Only files that exist in this checkout are given to pytest.
selection=""
for t in $tests; do
    [ -f "$t" ] && selection="$selection\"$t\", "
done

# The whole package is copied into mutants/ (source_paths) because the pytest plugin entry point
# imports grader.pytest_plugin; only the one module is mutated.
cat >>pyproject.toml <<EOF

[tool.mutmut]
source_paths = ["grader"]
only_mutate = ["$path"]
pytest_add_cli_args_test_selection = [${selection%, }]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
EOF

status=0
if [ "$only" = "*" ]; then
    "$mutmut" run --max-children "${MUTATION_JOBS:-2}" >mutmut-run.log 2>&1 || status=$?
else
    "$mutmut" run --max-children "${MUTATION_JOBS:-2}" "$only" >mutmut-run.log 2>&1 || status=$?
fi
if [ "$status" != 0 ]; then
    tail -n 40 mutmut-run.log >&2
    echo "mutmut failed ($status); the clone is kept at $work" >&2
    exit "$status"
fi
"$mutmut" export-cicd-stats >/dev/null
echo "== $module ($path): counts"
cat mutants/mutmut-cicd-stats.json
echo
echo "== surviving mutants"
"$mutmut" results 2>/dev/null | awk -F: '/: (survived|timeout|suspicious|no tests)/ {print $1}' |
    while read -r name; do
        [ "$only" = "*" ] || [[ $name == $only ]] || continue
        echo "-- $name"
        "$mutmut" show "$name" 2>/dev/null | grep -E '^[-+][^-+]' || true
    done
if [ "$keep" = 1 ]; then
    echo "clone kept at $work"
else
    rm -rf "$work"
fi

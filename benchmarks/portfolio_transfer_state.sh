#!/usr/bin/env bash
# Carry the portfolio transfer run (benchmarks/portfolio_transfer.py, hours of CPU) between
# machines that keep nothing but the git checkout.
#   save WORK     copy each study's journal, the learned portfolios and the log from WORK into
#                 benchmarks/state/portfolio_transfer (commit that folder)
#   restore WORK  copy them back into WORK, then rerun the benchmark with the same --work
# Only the journals travel: the benchmark reads its selection curves from them and retrains the
# winners for their dev numbers, so trial artifacts (hundreds of MB) stay behind. Restore to the
# same WORK path: the journals record where their study folders were.
set -euo pipefail
cd "$(dirname "$0")/.."
state=benchmarks/state/portfolio_transfer
action="${1:-}"; work="${2:-}"
if [[ -z "$work" || ( "$action" != save && "$action" != restore ) ]]; then
  echo "usage: $0 save|restore WORK" >&2; exit 2
fi
case "$action" in
  save)
    mkdir -p "$state/studies"
    for journal in "$work"/studies/*/optuna.journal; do
      [[ -e "$journal" ]] || continue
      study=$(basename "$(dirname "$journal")")
      mkdir -p "$state/studies/$study"
      # complete lines only: a running search may be halfway through writing one
      head -n "$(wc -l < "$journal")" "$journal" > "$state/studies/$study/optuna.journal"
    done
    for file in "$work"/portfolio-*.yaml "$work"/result.json "$work"/log*.txt; do
      [[ -e "$file" ]] && cp "$file" "$state/"
    done
    echo "saved $(ls "$state/studies" | wc -l) study journal(s) from $work into $state" ;;
  restore)
    [[ -d "$state" ]] || { echo "nothing saved in $state" >&2; exit 2; }
    mkdir -p "$work"
    cp -r "$state"/. "$work"/
    echo "restored $state into $work: rerun the benchmark with --work $work" ;;
esac

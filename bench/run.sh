#!/usr/bin/env bash
# `make bench`: runs every benchmark section and writes docs/benchmarks.md.
# usage: bench/run.sh [--quick]
source "$(dirname "$0")/lib.sh"
for sec in create mount monitor hints prefetch peers; do
  "$ROOT/bench/$sec.sh" "$@"
done
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (\`bench/run.sh\`); each section names the command that made it."
  echo "Ratios are measured side by side in one run: the machines are shared and noisy."
  echo
  for sec in create mount monitor hints prefetch peers; do cat "$RESULTS/$sec.md"; echo; done
} > "$ROOT/docs/benchmarks.md"
echo "wrote docs/benchmarks.md"

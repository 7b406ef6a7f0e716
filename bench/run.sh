#!/usr/bin/env bash
# `make bench`: runs every benchmark section and writes docs/benchmarks.md.
# usage: bench/run.sh [--quick]
#   SECTIONS="peers" bench/run.sh   reruns only those sections; the document is
#   assembled from every section's latest result (bench/results/*.md) and
#   the notes written by hand (bench/analysis.md, bench/notes/*.md).
#   ASSEMBLE_ONLY=1 bench/run.sh    runs nothing, only writes the document.
source "$(dirname "$0")/lib.sh"
ALL="create sparse mount readpath monitor hints hints_varied coldstart prefetch peers"
if [ -z "${ASSEMBLE_ONLY:-}" ]; then
  for sec in ${SECTIONS:-$ALL}; do
    "$ROOT/bench/$sec.sh" "$@"
  done
fi
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (\`bench/run.sh\`); each section names the command that made it."
  echo "Ratios are measured side by side in one run: the machines are shared and noisy."
  echo
  # The comparison with the peers first: it is the one users ask about.
  [ -f "$RESULTS/peers.md" ] && { cat "$RESULTS/peers.md"; echo; }
  # What the peers comparison does not show by itself (written by hand).
  cat "$ROOT/bench/analysis.md"; echo
  # Each section's latest result, then what was written by hand about it
  # (bench/notes/SECTION.md: kept across runs, unlike the result).
  for sec in create sparse mount readpath monitor hints hints_varied coldstart prefetch; do
    [ -f "$RESULTS/$sec.md" ] && { cat "$RESULTS/$sec.md"; echo; }
    [ -f "$ROOT/bench/notes/$sec.md" ] && { cat "$ROOT/bench/notes/$sec.md"; echo; }
  done
} > "$ROOT/docs/benchmarks.md"
echo "wrote docs/benchmarks.md"

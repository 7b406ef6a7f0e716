"""Formats one `hints --evaluate --json` result as a markdown table row tail.

The window with the better overall recall is shown: the one the prefetcher
picks for a workload of that class (long for sequential, short for random).
"""
import json
import sys

e = json.load(sys.stdin)
w = max(e, key=lambda x: x["overall"]["recall"])
o = w["overall"]
read = w["read_bytes"]
print(
    "{} s | {:.1f} MiB | {:.1f} MiB | {:.2f} | {:.2f} | {:.2f} | warm-up {:.2f}, hint {:.2f}, successor {:.2f}".format(
        w["window_ms"] // 1000,
        read / 2**20,
        o["prefetched_bytes"] / 2**20,
        o["precision"],
        o["recall"],
        o["prefetched_bytes"] / max(read, 1),
        w["warmup"]["recall"],
        w["hint"]["recall"],
        w["successor"]["recall"],
    )
)

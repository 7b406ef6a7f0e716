"""Tables of bench/hints_varied.sh from its evals.jsonl (one line per
`hints --evaluate --json`). Variants of a row are pooled by bytes:
precision = useful / prefetched, recall = covered / read, summed over them.
The 2 s window is reported (the first of the index's)."""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def pooled(sel):
    p = u = c = r = 0
    for x in sel:
        e = x["eval"][0]
        o = e["overall"]
        p += o["prefetched_bytes"]
        u += o["useful_bytes"]
        c += o["covered_read_bytes"]
        r += e["read_bytes"]
    return {
        "precision": u / p if p else 0.0,
        "recall": c / r if r else 0.0,
        "ratio": p / r if r else 0.0,
        "read": r,
        "prefetched": p,
    }


def get(**k):
    return [x for x in rows if all(x[a] == b for a, b in k.items())]


def fmt(s):
    return "{:.2f} | {:.2f} | {:.2f}".format(s["precision"], s["recall"], s["ratio"])


fams = ["python", "sqlite", "tree", "random"]
out = []
out.append("Each family alone (learned from its own variants only):\n")
out.append("| family | model | unseen, warm-up: precision | recall | prefetched/read | unseen, no warm-up: precision | recall | prefetched/read | same session again, no warm-up: recall |")
out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for f in fams:
    for m in ["flat", "new"]:
        a = pooled(get(scenario="alone", model=m, family=f, warmup="yes"))
        b = pooled(get(scenario="alone", model=m, family=f, warmup="no"))
        g = pooled(get(scenario="again", model=m, family=f))
        out.append(f"| {f} | {m} | {fmt(a)} | {fmt(b)} | {g['recall']:.2f} |")
out.append("")
out.append("Mixed image: python, sqlite and tree learned together on one snapshot, unseen variants with warm-up:\n")
out.append("| family | model | precision | recall | prefetched/read |")
out.append("| --- | --- | --- | --- | --- |")
for f in ["python", "sqlite", "tree"]:
    for m in ["flat", "new"]:
        out.append(f"| {f} | {m} | {fmt(pooled(get(scenario='mixed', model=m, family=f)))} |")
out.append("")
out.append("Families never trained on, on the image trained with python and sqlite (with warm-up):\n")
out.append("| family | model | read | prefetched | prefetched/read |")
out.append("| --- | --- | --- | --- | --- |")
for f in ["tree", "random"]:
    for m in ["flat", "new"]:
        s = pooled(get(scenario="untrained", model=m, family=f))
        out.append(f"| {f} | {m} | {s['read'] / 2**20:.1f} MiB | {s['prefetched'] / 2**20:.1f} MiB | {s['ratio']:.2f} |")
out.append("")
out.append("History length of contexts (`hints --history N`), mixed snapshot, unseen variants without warm-up (hints and successors alone):\n")
hs = sorted({x["model"] for x in get(scenario="history")}, key=lambda m: int(m[1:]))
out.append("| history | " + " | ".join(f"{f} precision | {f} recall" for f in ["python", "sqlite", "tree"]) + " | all: prefetched/read |")
out.append("| --- |" + " --- | --- |" * 3 + " --- |")
for h in hs:
    cells = []
    for f in ["python", "sqlite", "tree"]:
        s = pooled(get(scenario="history", model=h, family=f))
        cells.append(f"{s['precision']:.2f} | {s['recall']:.2f}")
    s = pooled(get(scenario="history", model=h))
    out.append(f"| {h[1:]} | " + " | ".join(cells) + f" | {s['ratio']:.2f} |")
print("\n".join(out))

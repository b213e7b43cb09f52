"""Regenerates halueval-sample.jsonl.gz from HaluEval's train split (see README.md).

Usage: python3 sample_halueval.py SOURCE.jsonl.gz OUT.jsonl.gz [ITEMS_PER_TASK] [TASK=ITEMS ...]
Deterministic: items (id up to the last '-') that have both a label-0 and a label-1 row are
ranked per task by sha256("kakeya-sample-v1:" + item); the first ITEMS_PER_TASK (default 400)
(or the per-task override) are kept with both rows, written sorted by (task, rank, label), gzip level 9 with mtime 0.
"""
import gzip, hashlib, io, json, sys
from collections import defaultdict

src, out = sys.argv[1], sys.argv[2]
per_task = int(sys.argv[3]) if len(sys.argv) > 3 else 400
override = {k: int(v) for k, v in (a.split("=") for a in sys.argv[4:])}
items = defaultdict(lambda: defaultdict(dict))  # task -> item -> label -> row
with gzip.open(src, "rt", encoding="utf-8") as f:
    for line in f:
        if line.strip():
            r = json.loads(line)
            items[r["task"]][r["id"].rsplit("-", 1)[0]][r["label"]] = r
rank = lambda g: hashlib.sha256(("kakeya-sample-v1:" + g).encode()).hexdigest()
buf = io.BytesIO()
with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
    for task in sorted(items):
        full = [g for g, rows in items[task].items() if set(rows) == {0, 1}]
        for g in sorted(full, key=rank)[: override.get(task, per_task)]:
            for label in (0, 1):
                r = items[task][g][label]
                keep = {k: r[k] for k in ("id", "task", "question", "context", "response", "label")}
                gz.write((json.dumps(keep, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
open(out, "wb").write(buf.getvalue())

#!/usr/bin/env python3
"""Isolation-forest baseline for the anomaly VAE, on the same features and the same split.

`kakeya anomaly eval --features-out features.csv` writes one line per sample: its part (train,
ecdf, test), kind (normal or a degeneracy kind), severity, label and the anomaly features. This
script fits scikit-learn's IsolationForest on the `train` normal rows (the VAE's training rows;
the `ecdf` rows are not needed: the forest's score needs no calibration for a ranking), scores
the `test` rows and prints the same table as `kakeya anomaly eval`: AUROC per kind against the
held-out normal rows, and TPR at FPR <= 2 % with the same rule (flag scores strictly above the
(k+1)-th largest normal score, k = floor(0.02 * n_normal)).

usage: anomaly_baseline.py FEATURES.csv [--seed N] [--json OUT]
(python from `cargo xtask sklearn`, which installs the pinned scikit-learn)
"""

import csv
import json
import math
import sys

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

KINDS = ["repetition", "gibberish", "echo", "truncation", "language_change",
         "signal_out_of_range"]
FPR_BUDGET = 0.02


def tpr_at_fpr(normal, anomalous):
    k = math.floor(FPR_BUDGET * len(normal))
    t = sorted(normal, reverse=True)[min(k, len(normal) - 1)]
    fpr = float(np.mean(np.asarray(normal) > t))
    tpr = float(np.mean(np.asarray(anomalous) > t))
    return t, fpr, tpr


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    path, seed, out = args[0], 20261201, None
    if "--seed" in args:
        seed = int(args[args.index("--seed") + 1])
    if "--json" in args:
        out = args[args.index("--json") + 1]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, rows = rows[0], rows[1:]
    n_meta = 5
    x = np.array([[float(v) for v in r[n_meta:]] for r in rows])
    part = np.array([r[0] for r in rows])
    kind = np.array([r[1] for r in rows])
    sev = np.array([int(r[2]) for r in rows])
    train = (part == "train") & (kind == "normal")
    test = part == "test"
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(x[train])
    # score_samples: higher = more normal; negate so higher = more anomalous.
    score = -forest.score_samples(x)
    normal = score[test & (kind == "normal")]
    report = {"sklearn": sklearn.__version__, "seed": seed, "features": head[n_meta:],
              "n_train": int(train.sum()), "n_test_normal": int(len(normal)), "kinds": []}
    print("| kind | n | AUROC | TPR at FPR ≤ 2 % (FPR) | TPR sev. 1 / 2 / 3 |")
    print("|---|---|---|---|---|")
    for k in KINDS + ["all degenerate kinds"]:
        sel = test & (kind != "normal") if k.startswith("all") else test & (kind == k)
        pos = score[sel]
        y = np.r_[np.zeros(len(normal)), np.ones(len(pos))]
        auc = roc_auc_score(y, np.r_[normal, pos])
        t, fpr, tpr = tpr_at_fpr(list(normal), list(pos))
        by_sev = [float(np.mean(score[sel & (sev == s)] > t)) for s in (1, 2, 3)]
        report["kinds"].append({"kind": k, "n": int(len(pos)), "auroc": auc, "fpr": fpr,
                                "tpr": tpr, "tpr_by_severity": by_sev})
        sev_txt = " / ".join(f"{100 * v:.1f} %" for v in by_sev)
        print(f"| {k} | {len(pos)} | {auc:.4f} | {100 * tpr:.1f} % ({100 * fpr:.1f} %) | {sev_txt} |")
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

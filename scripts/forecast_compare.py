#!/usr/bin/env python3
"""Our cost forecaster against statsforecast's AutoETS on the AirPassengers series.

Run it through `cargo xtask forecast-compare`, which installs the pinned statsforecast into a
venv under .kakeya-tools/ and builds `kakeya`. The series is the one statsforecast ships
(monthly airline passengers 1949-1960, 144 points). Our side is computed by our code:
`kakeya cost backtest` fits and backtests the series and prints its MAPE and interval coverage
with the origins it used; this script runs AutoETS on exactly those origins and horizons,
computes its MAPE and coverage the same way (mean |actual - point| / actual over every forecast
point of every fold; share of actuals inside the interval) and prints the side-by-side table.

usage: forecast_compare.py KAKEYA_BIN [--json OUT]
"""

import json
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import statsforecast
from statsforecast.models import AutoETS
from statsforecast.utils import AirPassengers

SEASON = 12
HORIZONS = [12, 24]
MIN_TRAIN = 48
STEP = 6


def ours(kakeya, path, log):
    cmd = [kakeya, "cost", "backtest", "--series", path, "--season", str(SEASON),
           "--min-train", str(MIN_TRAIN), "--step", str(STEP)]
    for h in HORIZONS:
        cmd += ["--horizon", str(h)]
    if log:
        cmd.append("--log")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def auto_ets(y, horizon, origins):
    ape, in80, in95, n = 0.0, 0, 0, 0
    for o in origins:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = AutoETS(season_length=SEASON).forecast(y=y[:o], h=horizon, level=[80, 95])
        actual = y[o:o + horizon]
        ape += float(np.sum(np.abs((actual - fc["mean"]) / actual)))
        in80 += int(np.sum((fc["lo-80"] <= actual) & (actual <= fc["hi-80"])))
        in95 += int(np.sum((fc["lo-95"] <= actual) & (actual <= fc["hi-95"])))
        n += horizon
    return {"horizon": horizon, "folds": len(origins), "mape": ape / n * 100,
            "coverage80": in80 / n, "coverage95": in95 / n}


def main():
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] != "--json"):
        sys.exit(__doc__)
    kakeya = sys.argv[1]
    y = np.asarray(AirPassengers, dtype=float)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(repr(float(v)) for v in y) + "\n")
        f.flush()
        additive = ours(kakeya, f.name, log=False)
        logged = ours(kakeya, f.name, log=True)
    rows = []
    for i, h in enumerate(HORIZONS):
        a, l = additive["horizons"][i], logged["horizons"][i]
        assert a["origins"] == l["origins"] and a["horizon"] == h
        rows.append(("kakeya Holt-Winters additive", a))
        rows.append(("kakeya Holt-Winters on log (--log)", l))
        rows.append((f"statsforecast {statsforecast.__version__} AutoETS", auto_ets(y, h, a["origins"])))
    origins = additive["horizons"][0]["origins"]
    print(f"AirPassengers ({len(y)} months), season {SEASON}, origins after {MIN_TRAIN} months "
          f"every {STEP} (h={HORIZONS[0]}: {origins[0]}..{origins[-1]}), each fold refitted on "
          f"the months before it.\n")
    print("| model | horizon (months) | folds | MAPE | 80 % coverage | 95 % coverage |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['horizon']} | {r['folds']} | {r['mape']:.2f} % | "
              f"{r['coverage80'] * 100:.1f} % | {r['coverage95'] * 100:.1f} % |")
    if len(sys.argv) == 4:
        with open(sys.argv[3], "w") as out:
            json.dump([{"model": n, **r} for n, r in rows], out, indent=2)


if __name__ == "__main__":
    main()

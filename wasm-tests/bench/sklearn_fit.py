"""scikit-learn's side of the training benchmark (`cargo xtask bench --fit`).

Reads the matrices the benchmark wrote (NumPy .npy, float64): DIR/x_fit.npy (n x d, already
standardised), DIR/y_fit.npy (n, 0/1), DIR/x_eval.npy and DIR/y_eval.npy (the held-out rows),
fits LogisticRegression(solver="lbfgs", C=C, tol=TOL, max_iter=MAX_ITER) on the fit rows
REPEATS times per --fit TOL REPEATS after one untimed warm-up fit, and prints one JSON object:
the wall time and the thread CPU time of every timed `fit` call, the coefficients, the iterations, roc_auc_score of the decision values on the
held-out rows, the versions and the thread pools (threadpoolctl) the fits ran with.

The benchmark runs it with OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1 (our fitter is
single-threaded) and the script also limits every thread pool to 1 with threadpoolctl.

Usage: python sklearn_fit.py DIR --fit TOL REPEATS [--fit TOL2 REPEATS2 ...] --max-iter M [--c C]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import scipy
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_info, threadpool_limits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--fit", nargs=2, action="append", required=True, metavar=("TOL", "REPEATS"))
    ap.add_argument("--max-iter", type=int, required=True)
    ap.add_argument("--c", type=float, default=1.0)
    a = ap.parse_args()

    def load(name):
        return np.load(os.path.join(a.dir, name), allow_pickle=False)

    x, y = load("x_fit.npy"), load("y_fit.npy")
    xe, ye = load("x_eval.npy"), load("y_eval.npy")
    fits = []
    with threadpool_limits(limits=1):
        pools = threadpool_info()
        for tol, repeats in ((float(t), int(r)) for t, r in a.fit):

            def fit():
                return LogisticRegression(
                    solver="lbfgs", C=a.c, tol=tol, max_iter=a.max_iter
                ).fit(x, y)

            fit()  # warm-up: first-call imports and page faults are not the fit
            seconds, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.thread_time()
                m = fit()
                seconds.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            fits.append(
                {
                    "tol": tol,
                    "max_iter": a.max_iter,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "n_iter": int(m.n_iter_[0]),
                    "coef": m.coef_[0].tolist(),
                    "intercept": float(m.intercept_[0]),
                    "eval_auroc": float(roc_auc_score(ye, m.decision_function(xe))),
                }
            )
    json.dump(
        {
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "threadpools": pools,
            "env": {
                k: os.environ.get(k)
                for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            },
            "x_shape": list(x.shape),
            "x_sum": float(x.sum()),
            "y_sum": float(y.sum()),
            "eval_rows": int(xe.shape[0]),
            "c": a.c,
            "fits": fits,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

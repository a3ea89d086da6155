#!/usr/bin/env python3
"""How far scripts/reproduce.sh has got, and what is left, from docs/data/results.

  scripts/repro_progress.py [--data docs/data/results] [--runs out/reproduce2]

Counts the finished runs of every step against the full set the script runs
(54 tuning runs: 9 methods x 6; 101 main runs: rho = 100 seeds 1-4 x 10 methods
plus seed 0's authors' recipe, rho = 50 and 10 seeds 0-2 x 10; v3: 22 grid runs
and 36 runs over seeds at rho = 100), sums their
measured wall times (host.jsonl: every sitting, killed ones included), and
projects what is left from the measured mean wall time per method, scaled by
the training-set size for rho = 50 and 10 (1,394 and 2,040 images against
1,236 at rho = 100). Methods without a finished run have no projection (said
so, not guessed). With --runs, runs in progress there are listed too.
Standard library only. Prints Markdown.
"""
import argparse
import json
import os
import statistics

TUNE = ["ce", "resample", "reweight", "focal", "ldam-drw", "drolt-learned", "drolt-erm", "drolt-shared",
        "drolt-sqrtn"]
MAIN = ["ce", "resample", "reweight", "focal", "ldam-drw", "official", "drolt-learned", "drolt-erm",
        "drolt-shared", "drolt-sqrtn"]
SEEDS = {100: [0, 1, 2, 3, 4], 50: [0, 1, 2], 10: [0, 1, 2]}
TRAIN_SIZE = {100: 1236, 50: 1394, 10: 2040}
TUNE_BUDGET = 6
# v3: the new runs of each grid (drolt-fair's two schedule cells are v2's runs), and the seeds of each
# main run (seed 0 of drolt3-learned, drolt3-ldam, la-loss and wb is its winning tuning run); a method
# with no finished run is projected from the one named in V3_LIKE.
V3_TUNE = {"drolt-fair": 4, "drolt-ldam": 6, "la-loss": 6, "wb": 6}
V3_MAIN = {"drolt3-learned": [1, 2, 3, 4], "drolt3-erm": [0, 1, 2, 3, 4], "drolt3-shared": [0, 1, 2, 3, 4],
           "drolt3-sqrtn": [0, 1, 2, 3, 4], "drolt3-learned-prev": [0, 1, 2, 3, 4], "drolt3-ldam": [1, 2, 3, 4],
           "la-loss": [1, 2, 3, 4], "wb": [1, 2, 3, 4]}
V3_LIKE = {"drolt3-learned": "drolt-fair", "drolt3-erm": "drolt-fair", "drolt3-shared": "drolt-fair",
           "drolt3-sqrtn": "drolt-fair", "drolt3-learned-prev": "drolt-ldam", "drolt3-ldam": "drolt-ldam",
           "la-loss": "la-loss", "wb": "wb"}


def wall_s(run_dir):
    """Summed wall seconds of every sitting in run_dir/host.jsonl (None if absent)."""
    p = os.path.join(run_dir, "host.jsonl")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return sum(json.loads(line)["wall_s"] for line in f if line.strip())


def expected():
    """(step, rho, method, relative folder or None for tuning) of every run of the full set."""
    out = []
    for m in TUNE:
        out += [("tune", 100, m, None)] * TUNE_BUDGET
    for rho, seeds in SEEDS.items():
        for s in seeds:
            for m in MAIN:
                if rho == 100 and s == 0 and m != "official":
                    continue  # the winning tuning run itself
                out.append(("main", rho, m, f"rho{rho}/seed{s}/{m}"))
    return out


def progress(data):
    """(rows, runs done, runs in the full set, projected seconds left, methods without a projection);
    rows: (step, rho, method, done, of, measured wall s, projected s left or None)."""
    done_tune = {m: [] for m in TUNE}  # method -> [wall s]
    for m in TUNE:
        d = os.path.join(data, "tune", m)
        if os.path.isdir(d):
            for sub in sorted(os.listdir(d)):
                rd = os.path.join(d, sub)
                if os.path.isfile(os.path.join(rd, "summary.json")):
                    done_tune[m].append(wall_s(rd) or 0)
    # Mean wall time per method at rho = 100, from every finished run of it
    # (tuning runs of the same recipe included), for the projection.
    per_method = {m: list(v) for m, v in done_tune.items()}
    n_done = n_all = 0
    total_s = sum(sum(v) for v in done_tune.values())
    main_done = {}
    for step, rho, m, rel in expected():
        if step != "main":
            continue
        rd = os.path.join(data, rel)
        if os.path.isfile(os.path.join(rd, "summary.json")):
            w = wall_s(rd) or 0
            main_done.setdefault((rho, m), []).append(w)
            per_method.setdefault(m, [])
            per_method[m].append(w * TRAIN_SIZE[100] / TRAIN_SIZE[rho])
            total_s += w
    mean = {m: statistics.fmean(v) for m, v in per_method.items() if v}

    def project(m, rho, n):
        return None if m not in mean else n * mean[m] * TRAIN_SIZE[rho] / TRAIN_SIZE[100]

    rows = []
    unknown = set()
    left_s = 0.0
    for m in TUNE:
        n = len(done_tune[m])
        p = project(m, 100, TUNE_BUDGET - n)
        if p is None:
            unknown.add(m)
        left_s += p or 0
        rows.append(("tune", 100, m, n, TUNE_BUDGET, sum(done_tune[m]), p))
        n_done += n
        n_all += TUNE_BUDGET
    for rho, seeds in SEEDS.items():
        for m in MAIN:
            exp = sum(1 for s in seeds if not (rho == 100 and s == 0 and m != "official"))
            got = main_done.get((rho, m), [])
            p = project(m, rho, exp - len(got))
            if p is None and exp > len(got):
                unknown.add(m)
            left_s += p or 0
            rows.append(("main", rho, m, len(got), exp, sum(got), p))
            n_done += len(got)
            n_all += exp
    # v3 (step 4 of reproduce.sh, rho = 100): its grids and its seeds.
    for m, of in V3_TUNE.items():
        d = os.path.join(data, "tune", m)
        walls = []
        if os.path.isdir(d):
            for sub in sorted(os.listdir(d)):
                rd = os.path.join(d, sub)
                if os.path.isfile(os.path.join(rd, "summary.json")) and not (m == "drolt-fair" and sub.startswith("lr0-")):
                    walls.append(wall_s(rd) or 0)
        # medians: a sitting starved by builds on the same machine is measured, not typical
        mean.setdefault(m, statistics.median(walls) if walls else None)
        p = None if not walls else (of - len(walls)) * statistics.median(walls)
        if p is None:
            unknown.add(m)
        left_s += p or 0
        total_s += sum(walls)
        rows.append(("v3 tune", 100, m, len(walls), of, sum(walls), p))
        n_done += len(walls)
        n_all += of
    for m, seeds in V3_MAIN.items():
        walls = [wall_s(os.path.join(data, f"rho100/seed{s}/{m}")) for s in seeds
                 if os.path.isfile(os.path.join(data, f"rho100/seed{s}/{m}/summary.json"))]
        walls = [w or 0 for w in walls]
        src = walls or ([mean[V3_LIKE[m]]] if mean.get(V3_LIKE[m]) else [])
        p = None if not src else (len(seeds) - len(walls)) * statistics.median(src)
        if p is None and len(walls) < len(seeds):
            unknown.add(m)
        left_s += p or 0
        total_s += sum(walls)
        rows.append(("v3 main", 100, m, len(walls), len(seeds), sum(walls), p))
        n_done += len(walls)
        n_all += len(seeds)
    return rows, n_done, n_all, total_s, left_s, unknown


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="docs/data/results")
    ap.add_argument("--runs", default="")
    a = ap.parse_args()
    rows, n_done, n_all, total_s, left_s, unknown = progress(a.data)
    print("| step | rho | method | done | of | measured wall h | projected h left (one job) |")
    print("|---|---|---|---|---|---|---|")
    for step, rho, m, n, of, w, p in rows:
        print(f"| {step} | {rho} | {m} | {n} | {of} | {w / 3600:.2f} | {'?' if p is None else f'{p / 3600:.2f}'} |")
    print()
    print(f"{n_done} of {n_all} runs finished, {total_s / 3600:.2f} h of summed wall time (measured, one job "
          f"each). Left, projected from the measured means: {left_s / 3600:.1f} job-hours"
          + (f", plus the runs of {', '.join(sorted(unknown))} (none finished yet: no projection)"
             if unknown else "") + ".")
    if a.runs and os.path.isdir(a.runs):
        busy = []
        for root, _dirs, files in os.walk(a.runs):
            if ".sitting" in files and "summary.json" not in files:
                busy.append(os.path.relpath(root, a.runs))
        if busy:
            print(f"\nIn progress in {a.runs}: {', '.join(sorted(busy))}.")


if __name__ == "__main__":
    main()

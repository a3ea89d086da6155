#!/usr/bin/env python3
"""Aggregates the runs of scripts/reproduce.sh into docs/results.md and its figures.

Reads DATA (docs/data/results): rho<R>/seed<S>/<run>/{summary.json,result-*.json,
metrics.jsonl,args.txt,host.jsonl} and tune/<method>/<value>/... with
tune/<method>/chosen.txt. Writes whatever is complete; a missing cell says how
many of its seeds exist. Every sentence of the summary is computed from the same
numbers as the tables. Standard library only (+ gnuplot for the figures).

  results_table.py --choose DIR ROW       # args.txt of DIR's sub-run with the best val All of ROW
  results_table.py --choose-dir DIR ROW   # ... its folder name
  results_table.py --data D --out MD --figures F [--rhos "100 50 10" ...]
"""
import argparse
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

SPLITS = ("many", "medium", "few", "all")


def result_path(run_dir, row):
    return os.path.join(run_dir, "result-" + row.replace("/", "_") + ".json")


def load_result(run_dir, row):
    p = result_path(run_dir, row)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def read(p, default=""):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return default


def best_sub(d, row):
    """(name, val All) of the sub-run of d with the best validation All of row; ties: first name."""
    best = None
    for sub in sorted(os.listdir(d)):
        r = load_result(os.path.join(d, sub), row)
        if r is None or r["val"]["all"] is None:
            continue
        v = r["val"]["all"]
        if best is None or v > best[1]:
            best = (sub, v)
    if best is None:
        sys.exit(f"results_table.py: no finished run with row {row} under {d}")
    return best


def mean_sd(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


# label, run folder, row name
TABLE1 = [
    ("CE", "ce", "ce"),
    ("ReSample (class-balanced family)", "resample", "resample"),
    ("ReWeight (effective number)", "reweight", "reweight"),
    ("Focal", "focal", "focal"),
    ("LDAM-DRW", "ldam-drw", "ldam-drw"),
    ("tau-norm (CE features)", "ce", "ce/tau-norm"),
    ("cRT (CE features)", "ce", "crt"),
    ("LWS (CE features)", "ce", "ce/lws"),
    ("Logit adjustment (CE, post-hoc)", "ce", "ce/la"),
    ("DRO-LT, eps = 0 + cRT", "drolt-erm", "drolt-erm"),
    ("DRO-LT, shared eps + cRT", "drolt-shared", "drolt-shared"),
    ("DRO-LT, eps0 / sqrt(n) + cRT", "drolt-sqrtn", "drolt-sqrtn"),
    ("DRO-LT, learned eps + cRT", "drolt-learned", "drolt-learned"),
    ("DRO-LT, the authors' recipe (learned eps)", "official", "drolt-learned"),
]
DRO_VARIANTS = ["drolt-erm", "drolt-shared", "drolt-sqrtn", "drolt-learned"]
TABLE4 = [("CE", [("ce", "ce"), ("ce", "crt"), ("ce", "ce/lws")]),
          ("ReSample", [("resample", "resample"), ("resample", "resample/crt"), ("resample", "resample/lws")]),
          ("DRO-LT, learned eps", [("drolt-learned", "drolt-learned/nocrt"), ("drolt-learned", "drolt-learned"),
                                   ("drolt-learned", "drolt-learned/lws")])]
TUNE_ROW = {"ce": "crt"}


class Data:
    def __init__(self, root, rhos, seeds):
        self.root, self.rhos, self.seeds = root, rhos, seeds  # seeds: {rho: [seeds]}

    def run_dir(self, rho, seed, run):
        return os.path.join(self.root, f"rho{rho}", f"seed{seed}", run)

    def get(self, rho, run, row):
        """{seed: result} over the seeds planned at rho."""
        out = {}
        for s in self.seeds[rho]:
            r = load_result(self.run_dir(rho, s, run), row)
            if r is not None:
                out[s] = r
        return out


def cell(d, rho, run, row, key="all", field="test"):
    rs = d.get(rho, run, row)
    N = len(d.seeds[rho])
    vals = [r[field][key] if field != "ece" else r.get("ece") for r in rs.values()]
    m, s, n = mean_sd(vals)
    if n == 0:
        return f"not run yet (0/{N} seeds)"
    txt = f"{m:.1f} ± {s:.1f}"
    return txt if n == N else f"{txt} ({n}/{N} seeds)"


def paired(d, rho, a, b, key="all", exclude=()):
    ra, rb = d.get(rho, *a), d.get(rho, *b)
    common = sorted((set(ra) & set(rb)) - set(exclude))
    # A split can be empty at a ratio (no Few classes at rho = 10): its value is None.
    return [ra[s]["test"][key] - rb[s]["test"][key] for s in common
            if ra[s]["test"][key] is not None and rb[s]["test"][key] is not None]


def verdict(ds):
    if len(ds) < 2:
        return None
    m, sd = statistics.fmean(ds), statistics.stdev(ds)
    se = sd / math.sqrt(len(ds))
    wins = sum(1 for x in ds if x > 0)
    if len(ds) < 3:  # a standard error from two seeds is itself too noisy to call a difference on
        word = "too few seeds (2) to call"
    else:
        word = ("higher" if m > 0 else "lower") if abs(m) > 2 * se else "not distinguishable from seed noise"
    return m, se, wins, len(ds), word


def fmt_v(v):
    m, se, wins, n, word = v
    return f"{m:+.1f} ± {se:.1f} (SE) points, {word}; higher in {wins} of {n} seeds"


def spearman(xs, ys):
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else 0.0


def best_variant(root):
    """The DRO-LT variant with the best seed-0 validation All of its chosen tuning run."""
    best = None
    for m in DRO_VARIANTS:
        ch = read(os.path.join(root, "tune", m, "chosen.txt"))
        if not ch:
            continue
        r = load_result(os.path.join(root, "tune", m, ch), m)
        if r and (best is None or r["val"]["all"] > best[1]):
            best = (m, r["val"]["all"])
    return best


# ---------------------------------------------------------------- v3 (step 4 of reproduce.sh)
V3_POLICIES = [("eps = 0", "drolt3-erm", "drolt-erm"), ("shared eps", "drolt3-shared", "drolt-shared"),
               ("eps0 / sqrt(n)", "drolt3-sqrtn", "drolt-sqrtn"), ("learned eps", "drolt3-learned", "drolt-learned")]
V3_STAGES = [("cRT", ""), ("LWS", "/lws"), ("logit adj.", "/la"), ("joint", "/nocrt")]
# The baselines DRO-LT is asked to beat (label, run folder, row); a run not there yet says so.
V3_BASELINES = [("cRT (CE features)", "ce", "crt"), ("Logit adjustment (CE, post-hoc)", "ce", "ce/la"),
                ("LDAM-DRW", "ldam-drw", "ldam-drw"), ("Weight balancing (its wb stage)", "wb", "weight-balancing/wb"),
                ("Logit-adjusted loss (Balanced Softmax)", "la-loss", "la-loss")]


def v3_facts(d, data_root):
    """Everything the v3 section and the README say, computed once: None before any v3 run exists."""
    grid = os.path.join(data_root, "tune", "drolt-fair")
    if not os.path.isdir(grid) or 100 not in d.rhos:
        return None
    F = {"grid": grid, "chosen": read(os.path.join(grid, "chosen.txt"))}
    # DRO-LT's stand-in: the (policy, stage) with the best seed-0 validation All at the fair choice.
    best = None
    for lab, run, row in V3_POLICIES:
        for slab, suf in V3_STAGES[:3]:
            r = load_result(d.run_dir(100, 0, run), row + suf)
            if r and r["val"]["all"] is not None and (best is None or r["val"]["all"] > best[0]):
                best = (r["val"]["all"], f"DRO-LT ({lab}) + {slab}", run, row + suf)
    F["best"] = best
    F["baselines"] = [(lab, verdict(paired(d, 100, (best[2], best[3]), (run, row))) if best else None)
                      for lab, run, row in V3_BASELINES]
    F["policies"] = [(lab, verdict(paired(d, 100, ("drolt3-learned", "drolt-learned"), (run, row))))
                     for lab, run, row in V3_POLICIES[:3]]
    F["prev"] = verdict(paired(d, 100, ("drolt3-learned-prev", "drolt-learned"), ("drolt3-learned", "drolt-learned")))
    F["ldam"] = None
    if os.path.isdir(os.path.join(data_root, "tune", "drolt-ldam")):
        F["ldam"] = verdict(paired(d, 100, ("drolt3-ldam", "drolt-learned/nocrt"), ("ldam-drw", "ldam-drw")))
    # The default recipe: the DRO-LT recipe with the highest validation All (mean over the seeds all three have
    # at rho = 100), each at its own classifier stage: ours re-tuned (the stand-in), the authors' recipe
    # (its classifier stage), DRO-LT + LDAM-DRW (its joint classifier or cRT, whichever validates higher at seed 0).
    cands = []
    if best:
        cands.append(("ours, re-tuned: " + best[1], best[2], best[3], "ours"))
    cands.append(("the authors' recipe (`--preset official`)", "official", "drolt-learned", "official"))
    lrow = None
    for row in ("drolt-learned/nocrt", "drolt-learned"):
        r = load_result(d.run_dir(100, 0, "drolt3-ldam"), row)
        if r and r["val"]["all"] is not None and (lrow is None or r["val"]["all"] > lrow[0]):
            lrow = (r["val"]["all"], row)
    if lrow:
        cands.append(("DRO-LT + LDAM-DRW" + (" + cRT" if lrow[1] == "drolt-learned" else ""), "drolt3-ldam",
                      lrow[1], "ldam"))
    common = None
    for _, run, row, _k in cands:
        seeds = set(d.get(100, run, row))
        common = seeds if common is None else common & seeds
    F["recipes"] = []
    if common:
        for lab, run, row, key in cands:
            rs = d.get(100, run, row)
            v = statistics.fmean(rs[s]["val"]["all"] for s in common)
            F["recipes"].append((v, lab, run, row, key))
        F["recipes"].sort(reverse=True)
    F["recipe_seeds"] = sorted(common) if common else []
    la = d.get(100, "ldam-drw", "ldam-drw")
    F["ldam_alone_val"] = (statistics.fmean(la[s]["val"]["all"] for s in common)
                           if common and all(s in la for s in common) else None)
    return F


def fmt_cost(data_root):
    """The cost sentence, from the idle-machine table of scripts/epoch_cost.sh (the runs' own logs are not used:
    a warm-started run's CE epochs ran in another sitting, and background runs share the machine)."""
    ratios = {}
    for line in read(os.path.join(data_root, "epoch-cost.md")).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and "--centroids" in cells[0]:
            ratios["full" if "full" in cells[0] else "previous"] = (cells[2], cells[1], cells[4])
    if len(ratios) < 2:
        return ""
    f, p = ratios["full"], ratios["previous"]
    return (f" Cost (the epoch-cost table above, an idle machine): a DRO-LT epoch with the full refresh takes {f[0]} s "
            f"against the same run's CE epoch's {f[1]} s ({f[2]}x), with previous-epoch centroids {p[0]} s against "
            f"{p[1]} s ({p[2]}x).")


def recipe_sentence(F):
    rs = F["recipes"]
    if len(rs) < 3:
        return None
    (v, lab, *_), others = rs[0], rs[1:]
    seeds = F["recipe_seeds"]
    over = f"seed {seeds[0]} only" if len(seeds) == 1 else f"means over seeds {', '.join(map(str, seeds))}"
    alone = ""
    if rs[0][4] == "ldam":
        la = F["ldam_alone_val"]
        if la is not None:
            alone = (f"; LDAM-DRW alone validates at {la:.1f} on the same seeds" +
                     (", within a point of it" if v - la <= 1.0 else "") +
                     " (the paired test of DRO-LT + LDAM-DRW against LDAM-DRW alone says whether DRO-LT adds anything)")
    return (f"The default DRO-LT recipe is **{lab}**: it has the highest validation All of the three candidate "
            f"recipes, {v:.1f} against " + " and ".join(f"{o[1]} {o[0]:.1f}" for o in others) +
            f" ({over}, validation split only){alone}.")


def v3_section(d, data_root, F=None):
    """Lines of the v3 section, or [] before any v3 run exists."""
    F = F or v3_facts(d, data_root)
    if F is None:
        return []
    grid = F["grid"]
    L = ["## v3: DRO-LT at its fair best (rho = 100)\n"]
    L.append("Step 4 of `scripts/reproduce.sh`. v2's DRO-LT grid spent its six runs on lambda x temperature at CE's "
             "inherited learning rate, and temperature 0.07 collapsed, so DRO-LT had three useful runs against six "
             "for every baseline. v3 gives it a fair six-run grid at temperature 1.0, learned radii (eps0 0.5): the "
             "DRO-LT phase's own learning rate {the schedule goes on (`--dro-lr 0`, v2's setting), constant 0.02, "
             "constant 0.005 (the authors')} x lambda {0.3, 0.5}, chosen on the validation All of the cRT row. "
             "The two schedule cells are v2's runs with the same arguments. The choice is then applied to every "
             "radius policy (eps0 of shared and sqrt-n as chosen in v2), each evaluated with cRT, LWS and post-hoc "
             "logit adjustment.\n")
    chosen = F["chosen"]
    L.append("| grid cell (seed 0) | val All, cRT | val All, LWS | val All, logit adj. |\n|---|---|---|---|")
    for sub in sorted(os.listdir(grid)):
        rd = os.path.join(grid, sub)
        if not os.path.isdir(rd):
            continue
        vals = []
        for suffix in ("", "/lws", "/la"):
            r = load_result(rd, "drolt-learned" + suffix)
            vals.append(f"{r['val']['all']:.1f}" if r and r["val"]["all"] is not None else "-")
        L.append(f"| {sub}{' (chosen)' if sub == chosen else ''} | " + " | ".join(vals) + " |")
    L.append("")
    N = len(d.seeds[100])
    L.append(f"Test All at rho = 100, mean ± std over seeds (of {N}):\n")
    L.append("| radius policy | " + " | ".join(s for s, _ in V3_STAGES) + " | val All (cRT) |")
    L.append("|---|" + "---|" * (len(V3_STAGES) + 1))
    for lab, run, row in V3_POLICIES:
        L.append(f"| {lab} | " + " | ".join(cell(d, 100, run, row + suf) for _, suf in V3_STAGES) +
                 f" | {cell(d, 100, run, row, 'all', 'val')} |")
    L.append(f"| learned eps, `--centroids previous` | " +
             " | ".join(cell(d, 100, "drolt3-learned-prev", "drolt-learned" + suf) for _, suf in V3_STAGES) +
             f" | {cell(d, 100, 'drolt3-learned-prev', 'drolt-learned', 'all', 'val')} |")
    L.append("")
    Q = []
    best = F["best"]
    if best:
        Q.append(f"- DRO-LT's stand-in, chosen on the validation split (seed 0): **{best[1]}** (val All {best[0]:.1f}).")
        Q.append("- Does it beat the baselines? Test All, paired by seed: " + "; ".join(
            f"vs {lab} " + (fmt_v(v) if v else "not enough paired seeds yet") for lab, v in F["baselines"]) + ".")
    Q.append("- Do the radius policies differ once DRO-LT is tuned fairly (all + cRT)? " + "; ".join(
        f"learned minus {lab} " + (fmt_v(v) if v else "not enough paired seeds yet") for lab, v in F["policies"]) + ".")
    Q.append("- Is the previous-epoch centroid mode as accurate as the full refresh (learned + cRT)? Previous minus "
             "full: " + (fmt_v(F["prev"]) if F["prev"] else "not enough paired seeds yet") + "." + fmt_cost(data_root))
    if F["ldam"] is not None or os.path.isdir(os.path.join(data_root, "tune", "drolt-ldam")):
        L.append("DRO-LT added to LDAM-DRW (`--loss ldam --drw`, LDAM-DRW's chosen margin and DRW start, lr 0.1, "
                 "learned radii, temperature 1.0; like every DRO-LT run its first half is plain CE, here on LDAM's "
                 "cosine classifier, then LDAM (+ DRW from the DRW start) and DRO-LT together; grid lambda "
                 "{0.1, 0.3, 0.5} x the DRO-LT phase's lr {schedule, 0.02}, chosen on the joint classifier's "
                 "validation All), test All at rho = 100:\n")
        L.append("| row | joint | cRT | val All (joint) |\n|---|---|---|---|")
        L.append(f"| LDAM-DRW alone | {cell(d, 100, 'ldam-drw', 'ldam-drw')} | - | "
                 f"{cell(d, 100, 'ldam-drw', 'ldam-drw', 'all', 'val')} |")
        L.append(f"| DRO-LT + LDAM-DRW | {cell(d, 100, 'drolt3-ldam', 'drolt-learned/nocrt')} | "
                 f"{cell(d, 100, 'drolt3-ldam', 'drolt-learned')} | "
                 f"{cell(d, 100, 'drolt3-ldam', 'drolt-learned/nocrt', 'all', 'val')} |")
        L.append("")
        Q.insert(2 if best else 0, "- Does adding DRO-LT to LDAM-DRW beat LDAM-DRW alone (both joint)? " +
                 (fmt_v(F["ldam"]) if F["ldam"] else "not enough paired seeds yet") + ".")
    rs = recipe_sentence(F)
    Q.append("- Which recipe is the default? " + (rs if rs else "not decided yet: " + (
        ", ".join(f"{lab} val All {v:.1f}" for v, lab, *_ in F["recipes"]) or "no candidate has a run yet") + "."))
    L.append("The baselines it is compared with, test All at rho = 100 (the two new ones with their own six-run "
             "grids, step 4b):\n")
    L.append("| baseline | All | Few | val All |\n|---|---|---|---|")
    for lab, run, row in V3_BASELINES:
        L.append(f"| {lab} | {cell(d, 100, run, row)} | {cell(d, 100, run, row, 'few')} | "
                 f"{cell(d, 100, run, row, 'all', 'val')} |")
    L.append("")
    timing = read(os.path.join(data_root, "epoch-cost.md"))
    if timing:
        L.append("Epoch cost on an idle machine (`scripts/epoch_cost.sh`, its output kept in "
                 f"`{os.path.join(data_root, 'epoch-cost.md')}`):\n")
        L.append(timing + "\n")
    L.append("Answers (computed from these tables, the verdict rule of the summary):\n")
    L.extend(Q)
    L.append("")
    return L


def fmt_short(v):
    m, se, wins, n, word = v
    return f"{m:+.1f} ± {se:.1f} ({word}, {wins} of {n} seeds higher)"


def top_rows(d, rho, extra=()):
    """The three highest mean test All at rho among the rows with all their seeds: [(mean, label)]."""
    means = []
    for lab, run, row in list(TABLE1) + list(extra):
        m, _, n = mean_sd([r["test"]["all"] for r in d.get(rho, run, row).values()])
        if n == len(d.seeds[rho]) and (m, lab) not in means:
            means.append((m, lab))
    return sorted(means, reverse=True)[:3]


V3_EXTRA = [("weight balancing", "wb", "weight-balancing/wb"), ("the logit-adjusted loss", "la-loss", "la-loss"),
            ("DRO-LT + LDAM-DRW", "drolt3-ldam", "drolt-learned/nocrt")]


def readme_results(d, F):
    """The README's result lines, every number from the tables of docs/results.md."""
    L = ["The multi-seed tables are in [docs/results.md](docs/results.md): ResNet-32 on Fashion-MNIST-LT, every "
         "choice made on a validation split, test top-1 % All; differences are paired by seed, mean ± standard "
         "error, \"higher\" / \"lower\" only beyond twice the standard error."]
    for rho in d.rhos:
        top = top_rows(d, rho, V3_EXTRA + ([(F["best"][1], F["best"][2], F["best"][3])] if F and F["best"] else [])
                       if rho == 100 else ())
        if top:
            L.append(f"- rho = {rho} ({len(d.seeds[rho])} seeds), highest: " +
                     ", ".join(f"{lab} {m:.1f}" for m, lab in top) + ".")
    if F and F["best"]:
        parts = [f"{lab} {fmt_short(v)}" for lab, v in F["baselines"] if v]
        if parts:
            L.append(f"- DRO-LT at its fair best ({F['best'][1]}, rho = 100) minus " + "; ".join(parts) + ".")
    if F and F["ldam"]:
        L.append(f"- DRO-LT + LDAM-DRW minus LDAM-DRW alone: {fmt_short(F['ldam'])}.")
    if F:
        parts = [f"{lab} {fmt_short(v)}" for lab, v in F["policies"] if v]
        if parts:
            L.append("- Learned radii minus " + "; ".join(parts) + ".")
        if F["prev"]:
            L.append(f"- Previous-epoch centroids minus the full refresh: {fmt_short(F['prev'])}.")
        rs = recipe_sentence(F)
        if rs:
            L.append("- " + rs)
        n = min(len(d.get(100, run, row)) for run, row in
                [("drolt3-learned", "drolt-learned"), ("drolt3-learned-prev", "drolt-learned"),
                 ("drolt3-ldam", "drolt-learned/nocrt"), ("la-loss", "la-loss"), ("wb", "weight-balancing/wb")])
        if n < len(d.seeds[100]):
            L.append(f"- v3 (DRO-LT tuned fairly, the new baselines, DRO-LT + LDAM-DRW, previous-epoch centroids) has "
                     f"all its runs for {n} of {len(d.seeds[100])} seeds so far; docs/results.md gives its paired "
                     "answers as the seeds complete.")
    return L


DEMO_LABELS = {"ce": "CE", "crt": "cRT", "ldam-drw": "LDAM-DRW"}


def readme_demo(demo_dir):
    """The README's demo lines, from the demo run kept in demo_dir (scripts/demo.sh with DEMO_RECORD=1)."""
    try:
        summ = json.load(open(os.path.join(demo_dir, "summary.json")))
        t = json.load(open(os.path.join(demo_dir, "timing.json")))
    except OSError:
        return None
    rows = []
    for r in summ["results"]:
        lab = DEMO_LABELS.get(r["name"], r["name"])
        if r["name"].startswith("drolt"):
            base = {"ldam": " + LDAM-DRW" if summ.get("drw") else " + LDAM", "focal": " + focal"}.get(
                summ.get("loss", "ce"), "")
            stage = r.get("classifier", "crt")
            stage = {"crt": "cRT", "lws": "LWS", "la": "logit adjustment"}.get(stage, stage)
            lab = f"DRO-LT ({summ['policy']} radii){base}" + ("" if stage == "joint" else f" + {stage}")
        few = r["test"]["few"]
        rows.append(f"{lab} {r['test']['all']:.1f} / {few:.1f}" if few is not None else f"{lab} {r['test']['all']:.1f}")
    return [f"Its result (one seed, ResNet-{summ['depth']}, {summ['dataset']}, test top-1 % All / Few): "
            + ", ".join(rows) + ". One seed says little; the tables below have several.",
            f"Measured on {t['cpu']} ({t['threads']} threads, commit {t['commit']}, {t['date']}): training and "
            f"evaluation {t['train_s']:.0f} s (drolt_train's own wall time), the whole `bash scripts/demo.sh` "
            f"{t['total_s']:.0f} s with the packages installed and ccache warm (configure and build included). Numbers differ between CPU "
            "models and thread counts."]


def replace_block(text, name, lines):
    """Replaces what lies between <!-- generated:NAME --> and <!-- /generated:NAME --> in text."""
    b, e = f"<!-- generated:{name} (scripts/results_table.py; do not edit) -->", f"<!-- /generated:{name} -->"
    i, j = text.find(b), text.find(e)
    if i < 0 or j < i:
        sys.exit(f"results_table.py: README has no {b} ... {e} block")
    return text[:i + len(b)] + "\n" + "\n".join(lines) + "\n" + text[j:]


def write_readme(path, d, F, demo_dir):
    with open(path) as f:
        text = f.read()
    text = replace_block(text, "results", readme_results(d, F))
    demo = readme_demo(demo_dir) if demo_dir else None
    if demo:
        text = replace_block(text, "demo", demo)
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote the generated blocks of {path}")


def gnuplot(script, figdir, name, lines):
    if shutil.which("gnuplot") is None:
        lines.append(f"(gnuplot is not installed: figure {name} not drawn)\n")
        return False
    os.makedirs(figdir, exist_ok=True)
    png = os.path.join(figdir, name)
    full = (f"set terminal pngcairo size 800,480 noenhanced font ',10'\nset output '{png}'\n"
            "set grid\nset key below\n" + script)
    r = subprocess.run(["gnuplot"], input=full, text=True, capture_output=True)
    if r.returncode != 0:
        lines.append(f"(gnuplot failed on {name}: {r.stderr.strip()[:200]})\n")
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--choose", nargs=2)
    ap.add_argument("--choose-dir", nargs=2)
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--figures")
    ap.add_argument("--rhos", default="100 50 10")
    ap.add_argument("--seeds-100", default="0 1 2 3 4")
    ap.add_argument("--seeds-other", default="0 1 2")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--crt-epochs", type=int, default=10)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--wall", type=float, default=0)
    ap.add_argument("--commands", default="")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--readme", help="also rewrite the generated result blocks of this README")
    ap.add_argument("--demo-data", default="", help="the kept demo run (summary.json, timing.json) for the README")
    a = ap.parse_args()
    if a.choose:
        name, _ = best_sub(*a.choose)
        print(read(os.path.join(a.choose[0], name, "args.txt")))
        return 0
    if a.choose_dir:
        print(best_sub(*a.choose_dir)[0])
        return 0
    rhos = [int(x) for x in a.rhos.split()]
    seeds = {r: [int(s) for s in (a.seeds_100 if r == 100 else a.seeds_other).split()] for r in rhos}
    d = Data(a.data, rhos, seeds)
    figrel = os.path.relpath(a.figures, os.path.dirname(os.path.abspath(a.out)))
    L = []
    L.append("# DRO-LT on Fashion-MNIST-LT: the paper's Tables 1, 2, 4 and Figures 2, 4, 6, 7\n")
    L.append("Generated by `scripts/reproduce.sh` (aggregation and figures: `scripts/results_table.py`, "
             f"reading `{a.data}`); do not edit by hand, re-run the script. "
             "It resumes, so the set can be completed in several sittings; cells without all their "
             "seeds say how many exist.\n")
    if a.smoke:
        L.append(f"**SMOKE RUN ({a.epochs} epochs, tiny test set): the numbers below test the "
                 "pipeline and mean nothing.**\n")
    L.append("## Setting\n")
    L.append(f"- Data: Fashion-MNIST-LT, exponential profile, n_max = 500, rho in {{{', '.join(map(str, rhos))}}}; "
             "the subset is fixed (data seed 0), seeds vary initialisation, order and augmentation. "
             "Validation: 100 images per class from the training images the subset left out; every choice "
             "is made on it. Test: the official balanced test set, read once per run for reporting.")
    L.append(f"- Our recipe: ResNet-{a.depth}, SGD (momentum 0.9, batch 128), {a.epochs} epochs with {a.warmup} warm-up "
             "epochs (lr from CE's tuning) and x0.1 at 80% and 90%; cRT / LWS: "
             f"{a.crt_epochs} epochs, class-balanced, on the features frozen in eval mode (batch-norm statistics fixed; "
             "Kang et al.'s code keeps the network in train mode, so theirs follow the re-balanced batches; "
             "`--crt-bn train` does that, not used here). "
             f"DRO-LT: CE for {a.epochs // 2} epochs (the CE run's own "
             "checkpoint, `--warm-start`), then (1 - lambda) CE + lambda DRO-LT; full centroid refresh.")
    off_dro = max(1, a.epochs * 80 // 200)
    L.append(f"- The authors' recipe: `--preset official` (their released code: CE(n_c / n_max) + DRO-LT, "
             "class-aware loader, constant lr 0.005, temperature 1, classifier not re-initialised), its 200 + 80 "
             f"epochs scaled to {a.epochs} + {off_dro}, {a.warmup} warm-up epochs, classifier stage {2 * a.crt_epochs} epochs; no tuning.")
    L.append("- Many: > 100 training images, Medium: 20-100, Few: < 20. Cells: test top-1 %, mean ± std over "
             "seeds. The reported model is the last epoch's.\n")

    best = best_variant(a.data)
    bv = best[0] if best else None

    # ---------------------------------------------------------------- summary
    S = []
    labels = {run + ":" + row: lab for lab, run, row in TABLE1}
    if bv:
        bvl = labels[bv + ":" + bv]
        S.append(f"- DRO-LT's best variant on the validation split (seed 0, rho = 100): **{bvl}** "
                 f"(val All {best[1]:.1f}); it stands for DRO-LT + cRT below.")
        for rho in rhos:
            parts = []
            for lab, b in [("cRT", ("ce", "crt")), ("LWS", ("ce", "ce/lws")), ("logit adjustment", ("ce", "ce/la"))]:
                v = verdict(paired(d, rho, (bv, bv), b))
                if v:
                    parts.append(f"vs {lab} {fmt_v(v)}")
            if parts:
                S.append(f"- Does DRO-LT + cRT beat cRT, LWS and logit adjustment at rho = {rho}? Test All, paired "
                         "by seed: " + "; ".join(parts) + ".")
            else:
                S.append(f"- rho = {rho}: DRO-LT + cRT against cRT / LWS / logit adjustment: not enough paired "
                         "seeds yet (need 2).")
    for rho in rhos:
        parts = []
        for lab, b in [("cRT", ("ce", "crt")), ("LWS", ("ce", "ce/lws")), ("logit adjustment", ("ce", "ce/la")),
                       ("LDAM-DRW", ("ldam-drw", "ldam-drw"))]:
            v = verdict(paired(d, rho, ("official", "drolt-learned"), b))
            if v:
                parts.append(f"vs {lab} {fmt_v(v)}")
        if parts:
            S.append(f"- Does the authors' recipe (DRO-LT, learned radii, their released training) beat them at "
                     f"rho = {rho}? Test All, paired by seed: " + "; ".join(parts) + ".")
    for rho in rhos:
        means = []
        for lab, run, row in TABLE1:
            m, _, n = mean_sd([r["test"]["all"] for r in d.get(rho, run, row).values()])
            if n == len(seeds[rho]):
                means.append((m, lab))
        if len(means) == len(TABLE1):
            means.sort(reverse=True)
            S.append(f"- Highest test All at rho = {rho} (means over {len(seeds[rho])} seeds): " +
                     ", ".join(f"{lab} {m:.1f}" for m, lab in means[:3]) + ".")
    for rho in rhos:
        rs = d.get(rho, "drolt-learned", "drolt-learned")
        if len(rs) < 2:
            continue
        counts = json.load(open(os.path.join(d.run_dir(rho, min(rs), "drolt-learned"), "summary.json")))["counts"]
        radii = [statistics.fmean(r["radii"][c] for r in rs.values()) for c in range(len(counts))]
        few = [radii[c] for c, n in enumerate(counts) if n < 20]
        tail = "Few"
        if not few:  # no class under 20 images (rho = 10 with n_max = 500): the smallest split present
            few, tail = [radii[c] for c, n in enumerate(counts) if n <= 100], "Medium (there are no Few classes)"
        many = [radii[c] for c, n in enumerate(counts) if n > 100]
        rho_s = spearman(counts, radii)
        crit = 1.96 / math.sqrt(len(counts) - 1)  # large-sample two-sided 5% threshold
        S.append(f"- Learned radii against class size at rho = {rho} (Fig. 2; the paper's are larger for the tail): "
                 f"mean radius of the Many classes {statistics.fmean(many):.3f}, of the {tail} {statistics.fmean(few):.3f} "
                 f"(means over {len(rs)} seeds); Spearman rank correlation of radius with training count "
                 f"{rho_s:+.2f} (" + (("larger radii for larger classes" if rho_s > 0 else "larger radii for smaller classes")
                                     if abs(rho_s) > crit else "no clear ordering with class size") +
                f"; |r| > {crit:.2f} would be significant at about 5% for {len(counts)} classes).")
    for rho in rhos:
        v = verdict(paired(d, rho, ("drolt-learned", "drolt-learned"), ("drolt-erm", "drolt-erm")))
        S.append(f"- Do learned radii beat eps = 0 (both + cRT) at rho = {rho}? " +
                 (f"All {fmt_v(v)}." if v else "not enough paired seeds yet (need 2)."))
    for rho in rhos:
        v = verdict(paired(d, rho, ("official", "drolt-learned"), ("drolt-learned", "drolt-learned")))
        S.append(f"- Does the authors' recipe beat ours (learned radii, + cRT) at rho = {rho}? " +
                 (f"All {fmt_v(v)}." if v else "not enough paired seeds yet (need 2)."))
    L.append("## Summary\n")
    L.append("Computed from the tables below. \"Higher\" / \"lower\": the mean paired difference is more than "
             "twice its standard error over seeds; with fewer than 3 seeds no call is made. At rho = 100 seed 0 is the tuning seed; the paired table "
             "also gives seeds ≠ 0 alone.\n")
    L.extend(S)
    L.append("")
    F = v3_facts(d, a.data)
    L.extend(v3_section(d, a.data, F))
    note = read(os.path.join(a.data, "notes.md"))
    if note:
        # Hand-written context kept next to the data it interprets (every number in it names the
        # command or commit it comes from); the tables below stay generated.
        L.append(f"## Context (`{os.path.join(a.data, 'notes.md')}`, written by hand)\n")
        L.append(note + "\n")

    # ---------------------------------------------------------------- Table 1
    L.append("## Table 1: test All accuracy by imbalance ratio\n")
    L.append("| method | " + " | ".join(f"rho = {r}" for r in rhos) + " |")
    L.append("|---|" + "---|" * len(rhos))
    for lab, run, row in TABLE1:
        L.append(f"| {lab} | " + " | ".join(cell(d, r, run, row) for r in rhos) + " |")
    L.append("")

    # ---------------------------------------------------------------- Table 2
    if 100 in rhos:
        L.append("## Table 2: Many / Medium / Few / All and calibration at rho = 100\n")
        L.append("ECE: expected calibration error, 15 bins, % (not defined for NCM). val All: the same runs on the "
                 "balanced validation split (mean over the same seeds; at seed 0 it is the number the choice was "
                 "made on, so a val All well above the test All of seeds ≠ 0 marks selection optimism).\n")
        L.append("| method | Many | Medium | Few | All | ECE | val All |\n|---|---|---|---|---|---|---|")
        for lab, run, row in TABLE1:
            if not d.get(100, run, row):
                L.append(f"| {lab} | " + " | ".join([f"not run yet (0/{len(seeds[100])} seeds)"] + ["-"] * 5) + " |")
                continue
            cs = ([cell(d, 100, run, row, k) for k in SPLITS] + [cell(d, 100, run, row, "ece", "ece")] +
                  [cell(d, 100, run, row, "all", "val")])
            L.append(f"| {lab} | " + " | ".join(cs) + " |")
        L.append("")
        # ------------------------------------------------------------ Table 4
        L.append("## Table 4: representation x classifier (test All, rho = 100)\n")
        L.append("| representation | joint | cRT | LWS |\n|---|---|---|---|")
        for lab, cells in TABLE4:
            L.append(f"| {lab} | " + " | ".join(cell(d, 100, run, row) for run, row in cells) + " |")
        L.append("")

    # ---------------------------------------------------------------- cRT's batch-norm mode (step 1d)
    if 100 in rhos and d.get(100, "ce-crtbn", "crt"):
        L.append("## cRT's batch-norm mode (rho = 100)\n")
        L.append("The same CE representation (its chosen arguments, same seeds), classifier stages with the "
                 "batch-norm layers in eval mode (the tables above: statistics of the representation) or in train "
                 "mode (`--crt-bn train`, as Kang et al.'s code: batch statistics, running statistics following the "
                 "class-balanced batches). Test %, mean ± std over seeds; the CE runs are retrained for the train "
                 "mode, so their representations are the same computation as the main CE runs' only where the "
                 "trainer is bit-reproducible (same machine kind and thread count).\n")
        ja, jb = d.get(100, "ce", "ce"), d.get(100, "ce-crtbn", "ce")
        both = sorted(set(ja) & set(jb))
        same_rep = sum(1 for x in both if ja[x]["per_class"] == jb[x]["per_class"])
        L.append(f"The retrained CE representation gave the main CE run's joint classifier exactly (every per-class "
                 f"accuracy) in {same_rep} of {len(both)} seeds, so there the differences below are the batch-norm "
                 "mode's alone.\n")
        L.append("| classifier stage | Many | Medium | Few | All | val All |\n|---|---|---|---|---|---|")
        for lab, run, row in [("cRT, eval mode (the tables above)", "ce", "crt"),
                              ("cRT, train mode (`--crt-bn train`)", "ce-crtbn", "crt"),
                              ("LWS, eval mode", "ce", "ce/lws"), ("LWS, train mode", "ce-crtbn", "ce/lws")]:
            L.append(f"| {lab} | " + " | ".join([cell(d, 100, run, row, k) for k in SPLITS] +
                                                [cell(d, 100, run, row, "all", "val")]) + " |")
        L.append("")
        parts = []
        for lab, a_, b_ in [("cRT train minus eval mode", ("ce-crtbn", "crt"), ("ce", "crt")),
                            ("LWS train minus eval mode", ("ce-crtbn", "ce/lws"), ("ce", "ce/lws"))] + (
                [(f"{labels[bv + ':' + bv]} minus cRT in train mode", (bv, bv), ("ce-crtbn", "crt")),
                 ("the authors' recipe minus cRT in train mode", ("official", "drolt-learned"), ("ce-crtbn", "crt"))]
                if bv else []):
            v = verdict(paired(d, 100, a_, b_))
            if v:
                parts.append(f"{lab}: All {fmt_v(v)}")
        if parts:
            L.append("Paired by seed: " + "; ".join(parts) + ".\n")

    # ---------------------------------------------------------------- paired statistics
    if bv:
        L.append(f"## Paired differences: {labels[bv + ':' + bv]} minus each row\n")
        L.append("Test accuracy points, mean ± standard error over the seeds both have; n seeds.\n")
        for rho in rhos:
            excl_sets = [((), "")] + ([((0,), " (seeds ≠ 0)")] if rho == 100 else [])
            for excl, tag in excl_sets:
                L.append(f"rho = {rho}{tag}:\n")
                L.append("| against | Δ Many | Δ Medium | Δ Few | Δ All | n |\n|---|---|---|---|---|---|")
                for lab, run, row in TABLE1:
                    if run == bv:
                        continue
                    cs, n = [], 0
                    for k in SPLITS:
                        ds = paired(d, rho, (bv, bv), (run, row), k, excl)
                        n = len(ds)
                        cs.append("-" if n < 2 else
                                  f"{statistics.fmean(ds):+.1f} ± {statistics.stdev(ds) / math.sqrt(n):.1f}")
                    L.append(f"| {lab} | " + " | ".join(cs) + f" | {n} |")
                L.append("")
        L.append("Learned radii minus eps = 0 (both + cRT), All: " + "; ".join(
            f"rho = {r}: " + (fmt_v(v) if (v := verdict(paired(d, r, ("drolt-learned",) * 2,
                                                                 ("drolt-erm",) * 2))) else "fewer than 2 seeds")
            for r in rhos) + ".\n")

    # ---------------------------------------------------------------- figures
    figs = []
    tmp = tempfile.mkdtemp()
    # Fig. 2: learned radii per class.
    series = []
    for rho in rhos:
        rs = d.get(rho, "drolt-learned", "drolt-learned")
        if not rs:
            continue
        s0 = min(rs)
        counts = json.load(open(os.path.join(d.run_dir(rho, s0, "drolt-learned"), "summary.json")))["counts"]
        p = os.path.join(tmp, f"radii{rho}.dat")
        with open(p, "w") as f:
            for c, n in enumerate(counts):
                m, s, _ = mean_sd([r["radii"][c] for r in rs.values() if r.get("radii")])
                if m is not None:
                    f.write(f"{n} {m} {s}\n")
        series.append(f"'{p}' using 1:2:3 with yerrorlines title 'rho = {rho} ({len(rs)} seeds)'")
    if series and gnuplot("set logscale x\nset xlabel 'training images of the class'\nset ylabel 'learned radius'\n"
                          "plot " + ", ".join(series) + "\n", a.figures, "repro-radii.png", L):
        figs.append(("Learned radius per class against its training count (Fig. 2)", "repro-radii.png"))
    # Fig. 4: per-class test error head to tail at rho = 100.
    if 100 in rhos:
        series = []
        for lab, run, row in [("CE", "ce", "ce"), ("cRT", "ce", "crt")] + \
                ([(labels[bv + ":" + bv], bv, bv)] if bv else []):
            rs = d.get(100, run, row)
            if not rs:
                continue
            s0 = min(rs)
            counts = json.load(open(os.path.join(d.run_dir(100, s0, run), "summary.json")))["counts"]
            order = sorted(range(len(counts)), key=lambda c: -counts[c])
            p = os.path.join(tmp, f"pc-{run}-{row.replace('/', '_')}.dat")
            with open(p, "w") as f:
                for i, c in enumerate(order):
                    m, s, _ = mean_sd([100.0 - r["per_class"][c] for r in rs.values()])
                    f.write(f"{i} {m} {s}\n")
            series.append(f"'{p}' using 1:2:3 with yerrorlines title '{lab} ({len(rs)} seeds)'")
        if series and gnuplot("set xlabel 'class, most to fewest training images'\nset ylabel 'test error %'\nset yrange [0:100]\n"
                              "plot " + ", ".join(series) + "\n", a.figures, "repro-per-class-error.png", L):
            figs.append(("Per-class test error from head to tail, rho = 100 (Fig. 4)", "repro-per-class-error.png"))
    # Figs. 6 and 7: validation accuracy against lambda and a shared radius (tuning runs).
    for m, axis, key, name, title in [
            ("drolt-learned", "lambda", "--lambda", "repro-val-lambda.png", "Validation All against lambda, learned radii (Fig. 6)"),
            ("drolt-shared", "shared radius eps0", "--eps0", "repro-val-shared.png", "Validation All against a shared radius (Fig. 7)")]:
        tdir = os.path.join(a.data, "tune", m)
        if not os.path.isdir(tdir):
            continue
        pts = {}
        for sub in sorted(os.listdir(tdir)):
            r = load_result(os.path.join(tdir, sub), m)
            args = read(os.path.join(tdir, sub, "args.txt")).split()
            if r is None or key not in args:
                continue
            t = args[args.index("--temperature") + 1]
            pts.setdefault(t, []).append((float(args[args.index(key) + 1]), r["val"]["all"]))
        series = []
        for t, xs in sorted(pts.items()):
            p = os.path.join(tmp, f"{m}-t{t}.dat")
            with open(p, "w") as f:
                for x, y in sorted(xs):
                    f.write(f"{x} {y}\n")
            series.append(f"'{p}' using 1:2 with linespoints title 'temperature {t}'")
        if series and gnuplot(f"set xlabel '{axis}'\nset ylabel 'validation All %'\nplot " + ", ".join(series) + "\n",
                              a.figures, name, L):
            figs.append((title + ", seed 0, rho = 100", name))
    # The bound's relative gap over epochs.
    series = []
    for rho in rhos[:1]:
        for s in seeds[rho]:
            mp = os.path.join(d.run_dir(rho, s, "drolt-learned"), "metrics.jsonl")
            if not os.path.exists(mp):
                continue
            p = os.path.join(tmp, f"gap{rho}-{s}.dat")
            with open(mp) as f, open(p, "w") as o:
                for line in f:
                    j = json.loads(line) if line.strip() else {}
                    if j.get("bound_gap"):
                        o.write(f"{j['epoch']} {j['bound_gap'][0]}\n")
            series.append(f"'{p}' using 1:2 with linespoints title 'rho = {rho}, seed {s}'")
    if series and gnuplot("set xlabel 'epoch'\nset ylabel '(upper - lower) / upper'\nplot " + ", ".join(series) + "\n",
                          a.figures, "repro-bound-gap.png", L):
        figs.append(("The bound's relative gap over the DRO-LT epochs, learned radii", "repro-bound-gap.png"))
    shutil.rmtree(tmp, ignore_errors=True)
    L.append("## Figures\n")
    for title, name in figs:
        L.append(f"- {title}: ![]({figrel}/{name})")
    L.append("- Nearest-centroid accuracy per layer (Figs. 3 / 8): [docs/layers.md](layers.md) "
             "(`scripts/layer_analysis.sh`).\n")

    # ---------------------------------------------------------------- tuning
    L.append("## Hyper-parameter selection (validation split only, seed 0, rho = 100)\n")
    L.append("Every method has the same budget, 6 training runs (3 values of its main hyper-parameter x 2 of a "
             "second; DRO-LT: lambda x temperature {0.07, 1.0}); the best validation All of the named row wins. "
             "tau of tau-norm (0, 0.1, ..., 1) and of logit adjustment (0, 0.25, ..., 2) are chosen on the "
             "validation split inside each run, for every representation. The shared and sqrt-n variants use "
             "the lambda chosen for learned radii. The authors' recipe and the epochs are not tuned. "
             "The test set plays no part.\n")
    L.append("| method | runs | values (val All %) | chosen |\n|---|---|---|---|")
    tune = os.path.join(a.data, "tune")
    far = []
    for m in ["ce", "resample", "reweight", "focal", "ldam-drw"] + DRO_VARIANTS:
        tdir = os.path.join(tune, m)
        if not os.path.isdir(tdir):
            L.append(f"| {m} | 0 / 6 | not run yet | - |")
            continue
        row = TUNE_ROW.get(m, m)
        nums = []
        for sub in sorted(os.listdir(tdir)):
            r = load_result(os.path.join(tdir, sub), row)
            if r is not None:
                nums.append((sub, r["val"]["all"]))
        ch = read(os.path.join(tdir, "chosen.txt"), "-")
        L.append(f"| {m} (row `{row}`) | {len(nums)} / 6 | " + ", ".join(f"{sub}: {v:.1f}" for sub, v in nums) +
                 f" | {ch} |")
        if nums:
            top = max(v for _, v in nums)
            low = [f"{sub} ({v:.1f})" for sub, v in nums if v < 0.7 * top]
            if low:
                far.append(f"{m}: " + ", ".join(low) + f" (best {top:.1f})")
    L.append("")
    if far:
        L.append("Tuning runs far below the best of their grid (validation All under 70% of it), where training "
                 "broke down rather than merely chose worse: " + "; ".join(far) + ". Their `metrics.jsonl` shows "
                 "the epoch it happened.\n")

    # Main runs whose training came near chance after the warm-up (an lr too high for that seed / ratio).
    near = []
    for rho in rhos:
        for seed in seeds[rho]:
            for run in ["ce", "resample", "reweight", "focal", "ldam-drw", "official"] + DRO_VARIANTS:
                mp = os.path.join(d.run_dir(rho, seed, run), "metrics.jsonl")
                if os.path.islink(d.run_dir(rho, seed, run)) or not os.path.exists(mp):
                    continue
                with open(mp) as f:
                    recs = [json.loads(x) for x in f if x.strip()]
                low = [(r["epoch"] + 1, r["val_acc"]) for r in recs
                       if r.get("val_acc") is not None and r["epoch"] + 1 > a.warmup and r["val_acc"] <= 20.0]
                if low:
                    e, v = low[0]
                    near.append(f"rho = {rho} seed {seed} {run} (val {v:.1f} % after epoch {e})")
    if near:
        L.append("Main runs whose validation accuracy fell to 20 % or less (chance: 10 %) at an evaluated epoch "
                 "after the warm-up, where training nearly broke down; their cells include them as they ended: " +
                 "; ".join(near) + ".\n")

    # ---------------------------------------------------------------- lr sensitivity (step 1c)
    sens = sorted(glob.glob(os.path.join(a.data, "sens", "drolt-learned-lr*")))
    ce_ch = read(os.path.join(tune, "ce", "chosen.txt"))
    if sens and ce_ch.startswith("lr") and "-wd" in ce_ch:
        ce_lr, ce_wd = ce_ch[2:].split("-wd")

        def val_of(run_dir, row):
            r = load_result(run_dir, row)
            return f"{r['val']['all']:.1f}" if r else "not run yet"
        lams = sorted({sub.split("-t")[0][1:] for sd in sens for sub in os.listdir(sd)} |
                      {sub.split("-t")[0][1:] for sub in os.listdir(os.path.join(tune, "drolt-learned"))
                       if sub.endswith("-t1.0")}, key=float)
        L.append("## Learning-rate sensitivity (validation only, seed 0, rho = 100)\n")
        L.append("Outside every budget and used for no choice (step 1c of the script): DRO-LT (learned) + cRT, "
                 "temperature 1.0, at CE's runner-up learning rate, warm-started from that CE run, next to the "
                 "same runs at the learning rate CE's tuning chose (which every DRO-LT variant inherits). "
                 f"Validation All %, weight decay {ce_wd}.\n")
        L.append("| lr | CE + cRT | " + " | ".join(f"DRO-LT learned + cRT, lambda {l}" for l in lams) + " |")
        L.append("|---|---|" + "---|" * len(lams))
        rows = [(ce_lr, os.path.join(tune, "drolt-learned"), " (chosen by CE's tuning)")]
        rows += [(os.path.basename(sd)[len("drolt-learned-lr"):], sd, "") for sd in sens]
        for lr, ddir, tag in rows:
            cells = [val_of(os.path.join(tune, "ce", f"lr{lr}-wd{ce_wd}"), "crt")]
            cells += [val_of(os.path.join(ddir, f"l{l}-t1.0"), "drolt-learned") for l in lams]
            L.append(f"| {lr}{tag} | " + " | ".join(cells) + " |")
        L.append("")

    # ---------------------------------------------------------------- compute
    L.append("## Compute: where each run ran, and how long\n")
    hosts, total, n_runs = {}, 0.0, 0
    for hp in sorted(glob.glob(os.path.join(a.data, "**", "host.jsonl"), recursive=True)):
        rel = os.path.relpath(hp, a.data).split(os.sep)
        if rel[0] == "rho100" and rel[1] == "seed0" and rel[2] != "official":
            continue  # the tuning run itself, counted under tune/
        n_runs += 1
        with open(hp) as f:
            for line in f:
                if not line.strip():
                    continue
                j = json.loads(line)
                where = j["gpu"] or j["cpu"]
                k = (j["host"], where, j["device"], j["threads"], j["jobs"])
                hosts.setdefault(k, [0, 0.0])
                hosts[k][0] += 1
                hosts[k][1] += j["wall_s"]
                total += j["wall_s"]
    v3_runs, v3_total = 0, 0.0
    for hp in sorted(glob.glob(os.path.join(a.data, "**", "host.jsonl"), recursive=True)):
        rel = os.path.relpath(hp, a.data).split(os.sep)
        v3 = (rel[0] == "tune" and rel[1] in ("drolt-fair", "drolt-ldam", "la-loss", "wb")
              and not (rel[1] == "drolt-fair" and rel[2].startswith("lr0-"))) or \
             (rel[0] == "rho100" and rel[1] != "seed0" and (rel[2].startswith("drolt3-") or rel[2] in ("la-loss", "wb"))) or \
             (rel[0] == "rho100" and rel[1] == "seed0" and rel[2] in ("drolt3-erm", "drolt3-shared", "drolt3-sqrtn",
                                                                     "drolt3-learned-prev"))
        if v3:
            v3_runs += 1
            with open(hp) as f:
                v3_total += sum(json.loads(x)["wall_s"] for x in f if x.strip())
    L.append(f"{n_runs} distinct runs so far (seed 0 at rho = 100 is the tuning run), "
             f"{total / 3600:.2f} h of summed wall time (measured). Of them, v3 (step 4): {v3_runs} runs, "
             f"{v3_total / 3600:.2f} h. Sittings per machine:\n")
    L.append("| host | CPU / GPU | device | threads | parallel jobs | sittings | wall h |\n|---|---|---|---|---|---|---|")
    for (h, w, dev, th, jb), (n, s) in sorted(hosts.items()):
        L.append(f"| {h} | {w} | {dev} | {th} | {jb} | {n} | {s / 3600:.2f} |")
    L.append("")
    if not a.smoke:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import repro_progress
        _rows, n_done, n_all, _total, left_s, unknown = repro_progress.progress(a.data)
        if n_done < n_all:
            L.append(f"Of the full set's {n_all} runs (tables, figures and tuning), {n_done} are finished; the rest "
                     f"are projected at {left_s / 3600:.1f} job-hours from the measured mean wall time per method "
                     "(scaled by training-set size), i.e. about half that with 2 jobs on 2 cores"
                     + (f", plus {', '.join(sorted(unknown))} (no finished run to project from)" if unknown else "")
                     + " (`scripts/repro_progress.py` lists them). The step-1c sensitivity runs are not part of "
                     "the full set.\n")
    if a.wall:
        L.append(f"Wall time of the last invocation of `scripts/reproduce.sh`: {a.wall / 60:.1f} min (finished "
                 "runs are skipped, so this covers only what it ran).\n")
    L.append("On a GPU machine the same script runs with `DEVICE=cuda JOBS=1 THREADS=4 SKIP_BUILD=1 "
             "DROLT_TRAIN=<a CUDA build of drolt_train> COMMIT=1 scripts/reproduce.sh`; its runs record the "
             "GPU's name (nvidia-smi) in host.jsonl and appear as their own line above. Runs are resumed with "
             "the device they started on (a checkpoint is continued bit-identically only on the same device "
             "and thread count).\n")
    L.append("## Commands\n")
    L.append("Every run is `drolt_train --data DATA --depth {d} --val-per-class 100 --threads T --device D "
             "--no-plots -q <args> --out <folder> --resume`, with <args> the run's `args.txt`. The DRO-LT runs on CE "
             "were made when the trainer's DRO-LT defaults were `--loss ce --no-drw --centroids full` and "
             "`--ldam-margin 0.5`; the default recipe is DRO-LT + LDAM-DRW now, so with today's trainer add "
             "`--loss ce --no-drw --centroids full` to a DRO-LT args.txt that does not name them "
             "(`scripts/reproduce.sh` does):\n".format(d=a.depth))
    L.append("```")
    for ap_ in sorted(glob.glob(os.path.join(a.data, "**", "args.txt"), recursive=True)):
        L.append(f"{os.path.relpath(os.path.dirname(ap_), a.data)}: {read(ap_)}")
    L.append("```\n")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {a.out}")
    if a.readme:
        write_readme(a.readme, d, F, a.demo_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

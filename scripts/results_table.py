#!/usr/bin/env python3
"""Aggregates drolt_train runs into docs/results.md (used by scripts/reproduce.sh).

Layout read: RUNS/<config>/seed<k>/{summary.json,metrics.jsonl}; every config is
one drolt_train invocation per seed. Standard library only.
"""
import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys


def mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return m, s


def fmt(ms):
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.1f} ± {s:.1f}"


def load_config(root, config):
    """{result name: [per-seed result dict]}, [per-seed metrics lines], seeds."""
    results, metrics, seeds = {}, [], []
    for d in sorted(glob.glob(os.path.join(root, config, "seed*"))):
        p = os.path.join(d, "summary.json")
        if not os.path.exists(p):
            continue
        with open(p) as f:
            summ = json.load(f)
        seeds.append(summ["seed"])
        for r in summ["results"]:
            results.setdefault(r["name"], []).append(r)
        lines = []
        mp = os.path.join(d, "metrics.jsonl")
        if os.path.exists(mp):
            with open(mp) as f:
                lines = [json.loads(x) for x in f if x.strip()]
        metrics.append(lines)
    return results, metrics, seeds


def split_stats(rs, key="test"):
    out = {}
    for k in ("many", "medium", "few", "all"):
        out[k] = mean_std([r[key][k] for r in rs])
    return out


def row(label, rs, extra=""):
    t = split_stats(rs)
    nc = mean_std([r["nearest_centroid"]["all"] for r in rs])
    val = mean_std([r["val"]["all"] for r in rs])
    return (f"| {label} | {fmt(t['many'])} | {fmt(t['medium'])} | {fmt(t['few'])} | **{fmt(t['all'])}** | "
            f"{fmt(nc)} | {fmt(val)} | {len(rs)}{extra} |")


def phase_time(metrics, phase):
    """Mean seconds of an epoch of `phase` over all runs/seeds, and mean centroid seconds."""
    secs, cent = [], []
    for lines in metrics:
        for j in lines:
            if j.get("phase") == phase:
                secs.append(j["seconds"])
                cent.append(j.get("centroid_seconds", 0.0))
    if not secs:
        return None, None
    return statistics.fmean(secs), statistics.fmean(cent)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def final_val(summary):
    name = "drolt-" + summary["policy"]
    r = [x for x in summary["results"] if x["name"] == name][0]
    return r["val"]


def best_lambda_tau(tune):
    best = None
    for p in sorted(glob.glob(os.path.join(tune, "learned-l*-t*", "summary.json"))):
        with open(p) as f:
            s = json.load(f)
        v = final_val(s)["all"]
        if best is None or v > best[0]:
            best = (v, s["lambda"], s["temperature"])
    print(best[1], best[2])


def finish_tuning(tune, lam, tau):
    rows, best = [], {}
    for p in sorted(glob.glob(os.path.join(tune, "*", "summary.json"))):
        with open(p) as f:
            s = json.load(f)
        v = final_val(s)
        rows.append((s["policy"], s["lambda"], s["temperature"], s["eps0"], v))
        k = s["policy"]
        if k in ("shared", "sqrtn") and (k not in best or v["all"] > best[k][1]):
            best[k] = (s["eps0"], v["all"])
    f = lambda x: "-" if x is None else f"{x:.1f}"
    with open(os.path.join(tune, "tuning.md"), "w") as out:
        out.write("| policy | lambda | temperature | eps0 | val Many | val Medium | val Few | val All |\n")
        out.write("|---|---|---|---|---|---|---|---|\n")
        for pol, l, t, e, v in rows:
            chosen = (pol == "learned" and str(l) == str(float(lam)) and str(t) == str(float(tau))) or \
                     (pol in best and best[pol][0] == e)
            mark = " **(chosen)**" if chosen else ""
            out.write(f"| {pol}{mark} | {l} | {t} | {e} | {f(v['many'])} | {f(v['medium'])} | "
                      f"{f(v['few'])} | {f(v['all'])} |\n")
    with open(os.path.join(tune, "chosen.env"), "w") as out:
        out.write(f"LAMBDA={lam}\nTAU={tau}\n")
        out.write(f"EPS_SHARED={best['shared'][0]}\nEPS_SQRTN={best['sqrtn'][0]}\n")
    with open(os.path.join(tune, "tuning.md")) as f:
        print(f.read())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--best-lambda-tau":
        return best_lambda_tau(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "--finish-tuning":
        return finish_tuning(sys.argv[2], sys.argv[3], sys.argv[4])
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--commands", required=True, help="file with the commands that were run")
    ap.add_argument("--wall", type=float, default=0.0, help="wall seconds of the whole reproduction")
    ap.add_argument("--settings", default="", help="file with the shared settings (markdown)")
    ap.add_argument("--tuning", default="", help="validation-split tuning table (step 2 of scripts/reproduce.sh)")
    ap.add_argument("--tuning-commands", default="")
    a = ap.parse_args()

    main_rows = [
        ("CE", "ce", "ce"),
        ("cRT (CE features + class-balanced classifier re-training)", "ce", "crt"),
        ("DRO-LT, eps = 0 (ERM) + cRT", "drolt-erm", "drolt-erm"),
        ("DRO-LT, shared eps + cRT", "drolt-shared", "drolt-shared"),
        ("DRO-LT, eps0 / sqrt(n) + cRT", "drolt-sqrtn", "drolt-sqrtn"),
        ("DRO-LT, learned eps + cRT", "drolt-learned", "drolt-learned"),
    ]
    nocrt_rows = [
        ("DRO-LT, eps = 0, no cRT", "drolt-erm", "drolt-erm/nocrt"),
        ("DRO-LT, shared eps, no cRT", "drolt-shared", "drolt-shared/nocrt"),
        ("DRO-LT, eps0 / sqrt(n), no cRT", "drolt-sqrtn", "drolt-sqrtn/nocrt"),
        ("DRO-LT, learned eps, no cRT", "drolt-learned", "drolt-learned/nocrt"),
    ]
    cache = {}

    def get(config, name):
        if config not in cache:
            cache[config] = load_config(a.runs, config)
        return cache[config][0].get(name, [])

    hdr = ("| method | Many | Medium | Few | All | NC All | val All | seeds |\n"
           "|---|---|---|---|---|---|---|---|")
    lines = []
    lines.append("# DRO-LT on Fashion-MNIST-LT: reproduction of the paper's Table 1 / 2 protocol\n")
    lines.append("Generated by `scripts/reproduce.sh` (aggregation: `scripts/results_table.py`); "
                 "do not edit by hand, re-run the script.\n")
    if a.settings and os.path.exists(a.settings):
        with open(a.settings) as f:
            lines.append(f.read())
    lines.append("## Main table (test top-1 %, mean ± std over seeds)\n")
    lines.append("Many: classes with > 100 training images, Medium: 20-100, Few: < 20 "
                 "(docs/math.md, 'Long-tailed data and evaluation'). NC All: nearest training centroid on the penultimate features. "
                 "val All: balanced validation split (the only split used for choices).\n")
    def table(rows):
        lines.append(hdr)
        for label, cfg, name in rows:
            rs = get(cfg, name)
            if rs:
                lines.append(row(label, rs))
        lines.append("")

    table(main_rows)
    lines.append("Feature learning without the final classifier re-training (same runs, evaluated "
                 "before the cRT stage):\n")
    table(nocrt_rows)

    # Paired differences (same seed) against cRT and CE.
    def deltas(a_cfg, a_name, b_cfg, b_name, key, exclude=()):
        ra = {r_seed: r for r_seed, r in zip(cache_seeds(a_cfg), get(a_cfg, a_name))}
        rb = {r_seed: r for r_seed, r in zip(cache_seeds(b_cfg), get(b_cfg, b_name))}
        common = sorted((set(ra) & set(rb)) - set(exclude))
        return [ra[s]["test"][key] - rb[s]["test"][key] for s in common
                if ra[s]["test"][key] is not None and rb[s]["test"][key] is not None]

    def paired(a_cfg, a_name, b_cfg, b_name, key, exclude=()):
        ds = deltas(a_cfg, a_name, b_cfg, b_name, key, exclude)
        return mean_std(ds), len(ds)

    def cache_seeds(config):
        get(config, "")
        return cache[config][2]

    # Summary sentences, computed from the same numbers as the tables.
    def verdict(a_cfg, a_name, b_cfg, b_name, key):
        ds = deltas(a_cfg, a_name, b_cfg, b_name, key)
        if not ds:
            return None
        m, sd = mean_std(ds)
        wins = sum(1 for d in ds if d > 0)
        if len(ds) > 1 and abs(m) > 2 * sd / math.sqrt(len(ds)):
            word = "higher" if m > 0 else "lower"
        else:
            word = "not distinguishable from seed noise"
        return (f"{m:+.1f} ± {sd:.1f} points ({word}; higher in {wins} of {len(ds)} seeds)")

    summary = []
    for a_label, a_cfg, a_name, b_label, b_cfg, b_name in [
            ("DRO-LT (learned) + cRT", "drolt-learned", "drolt-learned", "cRT", "ce", "crt"),
            ("DRO-LT (learned) + cRT", "drolt-learned", "drolt-learned", "CE", "ce", "ce"),
            ("DRO-LT (learned) without cRT", "drolt-learned", "drolt-learned/nocrt", "CE", "ce", "ce"),
            ("DRO-LT (learned) + cRT", "drolt-learned", "drolt-learned", "DRO-LT (eps = 0) + cRT",
             "drolt-erm", "drolt-erm")]:
        v_all = verdict(a_cfg, a_name, b_cfg, b_name, "all")
        v_few = verdict(a_cfg, a_name, b_cfg, b_name, "few")
        v_many = verdict(a_cfg, a_name, b_cfg, b_name, "many")
        if v_all:
            held = []
            for key in ("all", "few"):
                (m, sd), n = paired(a_cfg, a_name, b_cfg, b_name, key, exclude=(0,))
                if m is not None and n:
                    held.append(f"{key.capitalize()} {m:+.1f} ± {sd:.1f}")
            tail = (f" Seeds not used for tuning only ({n}): " + ", ".join(held) + ".") if held else ""
            summary.append(f"- {a_label} against {b_label}, paired by seed: All {v_all}; "
                           f"Few {v_few}; Many {v_many}.{tail}")
    if summary:
        lines.append("## Summary\n")
        lines.append("Computed by the script from the tables below. \"Higher\" / \"lower\" means "
                     "the mean paired difference is more than twice its standard error over the "
                     "seeds; with 3 seeds that is a weak test. (For scale: one class's accuracy on its "
                     "1,000 test images has a binomial standard error of about 1.4 points.)\n")
        lines.extend(summary)
        lines.append("")

    lines.append("## DRO-LT + cRT against the baselines, paired by seed\n")
    lines.append("Differences in test accuracy points (mean ± std over seeds). Seed 0's DRO-LT runs "
                 "with the chosen settings are the same computation as the tuning runs that won on "
                 "the validation split, so they carry some selection optimism; the rows marked "
                 "\"seeds ≠ 0\" use only seeds that played no part in any choice.\n")
    lines.append("| comparison | Δ Many | Δ Medium | Δ Few | Δ All |\n|---|---|---|---|---|")
    for exclude, tag in [((), ""), ((0,), ", seeds ≠ 0")]:
        for label, b_cfg, b_name in [("vs CE", "ce", "ce"), ("vs cRT", "ce", "crt")]:
            for a_label, a_cfg, a_name in [("learned", "drolt-learned", "drolt-learned"),
                                           ("sqrt-n", "drolt-sqrtn", "drolt-sqrtn"),
                                           ("shared", "drolt-shared", "drolt-shared"),
                                           ("eps = 0", "drolt-erm", "drolt-erm")]:
                cells = []
                n = 0
                for key in ("many", "medium", "few", "all"):
                    (m, s), n = paired(a_cfg, a_name, b_cfg, b_name, key, exclude)
                    cells.append("-" if m is None else f"{m:+.1f} ± {s:.1f}")
                if n:
                    lines.append(f"| DRO-LT {a_label} + cRT {label} ({n} seeds{tag}) | " + " | ".join(cells) + " |")
    lines.append("")

    # The paper's numbers next to ours (docs/math.md, "Reference numbers"), as gains over CE.
    paper = [("CE", 38.32, "ce", "ce"), ("cRT", 41.24, "ce", "crt"),
             ("DRO-LT, eps = 0", 43.92, "drolt-erm", "drolt-erm"),
             ("DRO-LT, shared", 45.66, "drolt-shared", "drolt-shared"),
             ("DRO-LT, sqrt-n", 46.92, "drolt-sqrtn", "drolt-sqrtn"),
             ("DRO-LT, learned", 47.31, "drolt-learned", "drolt-learned")]
    ours = {label: mean_std([r["test"]["all"] for r in get(cfg, name)])[0]
            for label, _, cfg, name in paper}
    if all(v is not None for v in ours.values()):
        lines.append("## Next to the paper\n")
        lines.append("The paper's Table 1 (CIFAR-100-LT, rho = 100, ResNet-32; DRO-LT rows with a "
                     "re-trained classifier) and this reproduction, as All accuracy and gain over "
                     "CE. The data differ (10 easy classes here, 100 there), so only the pattern "
                     "can be compared.\n")
        lines.append("| method | paper All | paper gain over CE | here All | here gain over CE |\n"
                     "|---|---|---|---|---|")
        for label, pv, _, _ in paper:
            lines.append(f"| {label} | {pv:.2f} | {pv - 38.32:+.1f} | {ours[label]:.1f} | "
                         f"{ours[label] - ours['CE']:+.1f} |")
        dro = [ours[l] for l, _, _, _ in paper[2:]]
        lines.append("")
        lines.append(f"Here the four radius policies span {max(dro) - min(dro):.1f} points "
                     f"(paper: {47.31 - 43.92:.1f}, ordered eps = 0 < shared < sqrt-n < learned); "
                     f"the gain of DRO-LT + cRT over cRT is {ours['DRO-LT, learned'] - ours['cRT']:+.1f} "
                     f"points (paper: {47.31 - 41.24:+.1f}). See the summary for which of these "
                     "differences stand out from the seed noise.\n")

    # Learned radii.
    rs = get("drolt-learned", "drolt-learned")
    if rs:
        summ_counts = None
        p = sorted(glob.glob(os.path.join(a.runs, "drolt-learned", "seed*", "summary.json")))
        if p:
            with open(p[0]) as f:
                summ_counts = json.load(f)["counts"]
        lines.append("## Learned radii (mean over seeds; initial value eps0)\n")
        lines.append("| class | training images | radius |\n|---|---|---|")
        C = len(rs[0]["radii"])
        for c in range(C):
            m, s = mean_std([r["radii"][c] for r in rs])
            n = summ_counts[c] if summ_counts else "?"
            lines.append(f"| {c} | {n} | {m:.3f} ± {s:.3f} |")
        lines.append("")

    # Centroid modes.
    modes = [("full refresh pass (paper)", "drolt-learned", "drolt-learned"),
             ("previous epoch's training passes", "drolt-learned-previous", "drolt-learned"),
             ("EMA (momentum 0.9)", "drolt-learned-ema", "drolt-learned")]
    if any(get(c, n) for _, c, n in modes):
        lines.append("## Centroid modes (DRO-LT learned + cRT)\n")
        lines.append("Accuracy: the multi-seed runs. Epoch time: mean wall seconds of a DRO-LT epoch "
                     "(training pass plus, for the full mode, the refresh pass), from the timing runs "
                     "(4 DRO-LT epochs each, one run at a time on all cores) when present.\n")
        lines.append("| centroid mode | Many | Medium | Few | All | DRO epoch (s) | of which centroids (s) | seeds |\n"
                     "|---|---|---|---|---|---|---|---|")
        for label, cfg, name in modes:
            rs = get(cfg, name)
            if not rs:
                continue
            t = split_stats(rs)
            mode = {"drolt-learned": "full", "drolt-learned-previous": "previous",
                    "drolt-learned-ema": "ema"}[cfg]
            tp = os.path.join(a.runs, "timing", mode, "metrics.jsonl")
            if os.path.exists(tp):
                with open(tp) as f:
                    ep, cent = phase_time([[json.loads(x) for x in f if x.strip()]], "dro")
            else:
                ep, cent = phase_time(cache[cfg][1], "dro")
            ep_s = "-" if ep is None else f"{ep:.2f}"
            cent_s = "-" if cent is None else f"{cent:.2f}"
            lines.append(f"| {label} | {fmt(t['many'])} | {fmt(t['medium'])} | {fmt(t['few'])} | "
                         f"**{fmt(t['all'])}** | {ep_s} | {cent_s} | {len(rs)} |")
        lines.append("")

    if a.tuning and os.path.exists(a.tuning):
        lines.append("## Hyper-parameter selection (validation split only, seed 0)\n")
        lines.append("Step 2 of `scripts/reproduce.sh`: lambda x temperature with learned radii, then eps0 of the "
                     "shared and sqrt-n policies at the chosen lambda / temperature; the best validation "
                     "All (after cRT) was kept. The test set played no part.\n")
        with open(a.tuning) as f:
            lines.append(f.read())
    # Hardware / commands.
    lines.append("## Hardware, software, wall time\n")
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = "?"
    lines.append(f"- CPU: {cpu_name()}, {nproc} cores available to the runs; no GPU.")
    lines.append(f"- OS: {platform.platform()}; LibTorch: Debian libtorch 1.13 (CPU, OpenBLAS).")
    if a.wall > 0:
        lines.append(f"- Wall time of the last invocation of `scripts/reproduce.sh`: {a.wall / 60:.1f} min "
                     "(the script resumes: runs that already have a summary are skipped, so after an "
                     "interruption this covers only what was left).")
    epoch_s, n_runs = 0.0, 0
    for mp in glob.glob(os.path.join(a.runs, "**", "metrics.jsonl"), recursive=True):
        if os.sep + "timing" + os.sep in mp:  # the centroid-mode timing runs use all cores
            continue
        with open(mp) as f:
            secs = [json.loads(x).get("seconds", 0.0) for x in f if x.strip()]
        epoch_s += sum(secs)
        n_runs += 1
    if n_runs:
        lines.append(f"- Sum of the epoch times of all {n_runs} runs (tuning included; training passes "
                     f"and centroid refreshes, evaluation excluded): {epoch_s / 3600:.1f} h of one "
                     "thread each, 2 runs at a time. Runs made while other work shared the 2 cores "
                     "count their slower epochs, so this overstates an idle machine's time.")
    lines.append("")
    lines.append("## Exact commands\n")
    lines.append("```sh")
    with open(a.commands) as f:
        lines.append(f.read().rstrip())
    lines.append("```\n")
    if a.tuning_commands and os.path.exists(a.tuning_commands):
        lines.append("Tuning runs (step 2 of `scripts/reproduce.sh`, seed 0, validation split):\n")
        lines.append("```sh")
        with open(a.tuning_commands) as f:
            lines.append(f.read().rstrip())
        lines.append("```\n")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())

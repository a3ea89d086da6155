"""Times one forward + backward of the DRO-LT loss (features and radii get
gradients, centroids are constant; batch normalization, Euclidean distance,
temperature 1, float32) at the three shapes of bench/bench_loss.cpp, four
implementations side by side, in one process:

  op                drolt.functional.robust_centroid_loss (torch.ops.drolt)
  header            the C++ header API, each call timed in C++ by the same
                    library (torch.ops.drolt._bench_header_loss): the op's own
                    overhead is op - header
  authors           tests/reference.py's transcription of the authors'
                    computation (docs/math.md), which recomputes the centroids
                    from centroid_feats on every call: timed with the
                    CIFAR-100-LT training set's size of centroid features
                    (10847 x 64; larger shapes would need GiBs), and with
                    one feature per class (the bank's centroids: the loss alone)
  matmul            the composition a user would write (distances from
                    |z|^2 + |mu|^2 - 2 z.mu, logsumexp), as in bench_loss.cpp

    python3 python/bench.py [--threads 2] [--shapes cifar100lt,imagenetlt,inat]

Prints a Markdown table (median milliseconds per forward + backward).
"""
import argparse
import os
import statistics
import sys
import time

import torch

# The installed package, not the sources next to this file (they lack the
# compiled operators): drop this file's folder from the path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import drolt  # noqa: E402

sys.path.insert(0, os.path.join(_here, "tests"))
from reference import authors_loss  # noqa: E402

SHAPES = {"cifar100lt": (128, 100, 64), "imagenetlt": (256, 1000, 2048),
          "inat": (256, 8142, 2048)}
CIFAR_TRAIN_SIZE = 10847


def matmul_composition(z, y, mu, eps):
    C = mu.shape[0]
    d2 = mu.pow(2).sum(1, keepdim=True) + z.pow(2).sum(1).unsqueeze(0) - 2 * mu @ z.t()
    dist = d2.clamp_min(1e-12).sqrt()
    pos = (torch.arange(C).unsqueeze(1) == y.unsqueeze(0)).to(z.dtype)
    s = -dist - 2 * eps.unsqueeze(1) * pos
    n = pos.sum(1)
    l = torch.logsumexp(s, 1) - (s * pos).sum(1) / n.clamp_min(1)
    present = (n > 0).to(z.dtype)
    return (l * present).sum() / present.sum()


def timed(fn, z, eps, min_time, max_iters=200, samples=None):
    """Median seconds of one call of fn plus backward, and the calls timed
    (their times are appended to `samples` when given)."""
    def once():
        fn().backward()
        z.grad = None
        eps.grad = None

    once()
    once()
    times = []
    start = time.perf_counter()
    while len(times) < max_iters and (time.perf_counter() - start < min_time or len(times) < 5):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    if samples is not None:
        samples += times
    return statistics.median(times), len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="cifar100lt,imagenetlt,inat")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternating op / header rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    print()
    print("| shape (B, C, D) | drolt op | header API | op overhead | authors, centroids "
          "recomputed | authors, one feature per class | matmul composition | authors / op |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.shapes.split(","):
        B, C, D = SHAPES[name]
        g = torch.Generator().manual_seed(0)
        scale = 2.0 / D ** 0.5
        z = (torch.randn(B, D, generator=g) * scale).requires_grad_()
        mu = torch.randn(C, D, generator=g) * scale
        y = torch.randint(0, C, (B,), generator=g)
        eps = torch.full((C,), 0.5, requires_grad=True)
        ms = {}
        # The op and the header in alternating rounds (medians over all of
        # them), so that a change of the machine's load hits both alike.
        op_times, header_times = [], []
        for _ in range(args.rounds):
            t, n = timed(lambda: drolt.functional.robust_centroid_loss(z, y, mu, eps), z, eps,
                         args.min_time / args.rounds, samples=op_times)
            header_times += torch.ops.drolt._bench_header_loss(z, y, mu, eps, 2, n)
        ms["op"], ms["header"] = statistics.median(op_times), statistics.median(header_times)
        # The authors' radius is subtracted once: e = 2 eps.
        ms["authors_one"], _ = timed(
            lambda: authors_loss(z, y, mu, torch.arange(C), 1.0, 1.0, epsilons=2 * eps), z, eps,
            args.min_time, max_iters=50)
        if name == "cifar100lt":
            ct = torch.arange(CIFAR_TRAIN_SIZE) % C
            cf = mu[ct] + 0.1 * torch.randn(CIFAR_TRAIN_SIZE, D, generator=g) * scale
            ms["authors_recomputed"], _ = timed(
                lambda: authors_loss(z, y, cf, ct, 1.0, 1.0, epsilons=2 * eps), z, eps,
                args.min_time, max_iters=50)
        ms["matmul"], _ = timed(lambda: matmul_composition(z, y, mu, eps), z, eps, args.min_time)

        def f(k):
            return "%.3f" % (1e3 * ms[k]) if k in ms else "(not timed)"

        ratio = ms.get("authors_recomputed", ms["authors_one"]) / ms["op"]
        print("| %s (%d, %d, %d) | %s | %s | %+.1f %% | %s | %s | %s | %.0fx |" % (
            name, B, C, D, f("op"), f("header"), 100 * (ms["op"] / ms["header"] - 1),
            f("authors_recomputed"), f("authors_one"), f("matmul"), ratio))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

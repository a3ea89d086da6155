"""drolt.data: the long-tail subset rule of the C++ drolt::data and its
re-balancing samplers as torch.utils.data.Sampler (docs/longtail.md)."""
import torch
from torch.utils.data import Sampler

from ._ops import ops


def longtail_counts(n_max, num_classes, imbalance_ratio, profile="exp"):
    """Per-class counts of a long-tailed subset (class 0 the head): "exp"
    n_c = floor(n_max * rho^(-c / (C - 1))), or "step"."""
    return ops.data_longtail_counts(int(n_max), int(num_classes), float(imbalance_ratio), profile)


def make_longtail(targets, num_classes, n_max, imbalance_ratio, profile="exp", seed=0):
    """Dataset indices (int64, grouped by class) that keep longtail_counts(...)[c]
    samples of each class c, chosen at random from `seed`, the same on every platform."""
    return ops.data_make_longtail(torch.as_tensor(targets), int(num_classes), int(n_max),
                                  float(imbalance_ratio), profile, int(seed))


class _ClassSampler(Sampler):
    """An epoch of the C++ sampler per iteration: like the C++ data loader's
    reset(), every iteration begins the next epoch of the sampler's own
    random stream (seeded by `seed`, independent of torch's generator).
    Holds only its arguments and the epoch counter, so it pickles (DataLoader
    workers, checkpoints); set_epoch(e) makes the next iteration epoch e."""
    _kind = None

    def __init__(self, targets, seed=0, num_samples=0, k=1):
        self.targets = torch.as_tensor(targets).to(torch.long).cpu()
        self.seed, self.num_samples, self.k = int(seed), int(num_samples), int(k)
        self.epoch = 0
        self._length = None

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def epoch_indices(self, epoch):
        return ops.data_sampler_epoch(self._kind, self.targets, self.seed, self.num_samples,
                                      self.k, int(epoch))

    def __iter__(self):
        indices = self.epoch_indices(self.epoch)
        self.epoch += 1
        self._length = indices.numel()
        return iter(indices.tolist())

    def __len__(self):
        if self._length is None:
            self._length = self.epoch_indices(0).numel()
        return self._length


class ClassBalancedSampler(_ClassSampler):
    """A class uniformly among those with samples, then one of its samples
    (with replacement); num_samples draws per epoch (0: the dataset size)."""
    _kind = "class_balanced"

    def __init__(self, targets, seed=0, num_samples=0):
        super().__init__(targets, seed, num_samples)


class SqrtSampler(_ClassSampler):
    """Class probability proportional to sqrt(n_c)."""
    _kind = "sqrt"

    def __init__(self, targets, seed=0, num_samples=0):
        super().__init__(targets, seed, num_samples)


class ClassAwareSampler(_ClassSampler):
    """k images of one class, then k of the next (the authors' loader); an
    epoch has n_max * C draws by default."""
    _kind = "class_aware"

    def __init__(self, targets, k=4, seed=0, num_samples=0):
        super().__init__(targets, seed, num_samples, k)

"""drolt.metrics: the C++ drolt::metrics (docs/longtail.md) on tensors.

predictions are labels [N] or scores [N, C] (argmax); accuracies are in [0, 1];
a split without classes with test samples gives NaN."""
import collections

import torch

from ._ops import ops

SplitAccuracy = collections.namedtuple("SplitAccuracy",
                                       ["many", "medium", "few", "overall", "class_mean"])


def split_accuracy(predictions, targets, train_counts, many_above=100, few_below=20):
    """Many (n > many_above) / Medium / Few (n < few_below) accuracy: the mean of
    the per-class accuracies of each split, plus overall top-1 and the class mean."""
    counts = [int(c) for c in torch.as_tensor(train_counts).tolist()]
    return SplitAccuracy(*ops.metrics_split_accuracy(predictions, targets, counts,
                                                     int(many_above), int(few_below)))


def expected_calibration_error(probabilities, targets, bins=15):
    """ECE over equal-width confidence bins (Guo et al. 2017); probabilities [N, C]."""
    return ops.metrics_expected_calibration_error(probabilities, targets, int(bins))


def nearest_centroid_predict(features, centroids, valid=None, similarity="euclidean"):
    """Label of the nearest valid centroid of each feature (int64 [N])."""
    return ops.metrics_nearest_centroid_predict(features, centroids, valid, similarity)


def nearest_centroid_accuracy(features, targets, centroids, valid=None, similarity="euclidean"):
    """Accuracy of nearest_centroid_predict (samples of a class without a valid
    centroid count as errors)."""
    return ops.metrics_nearest_centroid_accuracy(features, targets, centroids, valid, similarity)

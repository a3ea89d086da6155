#pragma once
// Umbrella header: every public drolt header.
#include "drolt/bound.hpp"
#include "drolt/centroid_bank.hpp"
#include "drolt/class_weights.hpp"
#include "drolt/data/cifar.hpp"
#include "drolt/data/idx.hpp"
#include "drolt/data/longtail.hpp"
#include "drolt/data/samplers.hpp"
#include "drolt/data/split.hpp"
#include "drolt/distributed.hpp"  // empty where c10d + Gloo are not available
#include "drolt/longtail_losses.hpp"
#include "drolt/loss.hpp"
#include "drolt/metrics.hpp"
#include "drolt/multi_layer.hpp"
#include "drolt/posthoc.hpp"
#include "drolt/radius.hpp"
#include "drolt/serialize.hpp"
#include "drolt/weight_balancing.hpp"

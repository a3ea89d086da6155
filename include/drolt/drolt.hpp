#pragma once
// Umbrella header: every public drolt header.
#include "drolt/centroid_bank.hpp"
#include "drolt/loss.hpp"
#include "drolt/radius.hpp"

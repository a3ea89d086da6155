#pragma once
/// \file
/// Which part of a dataset to read.

namespace drolt {
namespace data {

enum class Split { train, test };

}  // namespace data
}  // namespace drolt

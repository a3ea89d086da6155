#pragma once
/// \file
/// The iNaturalist 2018 / 2019 annotation files (`train2018.json`,
/// `val2018.json`, `train2019.json`, ...) as an `ImageList`. Needs
/// nlohmann/json (Debian `nlohmann-json3-dev`; the `drolt::images` CMake
/// target brings it when it was found).
///
///     drolt::data::ImageDataset train(
///         drolt::data::read_inaturalist("train2018.json", "/data/inat2018"));
///
/// The file holds `images` (`id`, `file_name`), `annotations` (`image_id`,
/// `category_id`) and `categories` (`id`, `name`). Labels are the category ids
/// ranked: the smallest id is class 0. iNaturalist's ids are already 0 ... C-1,
/// so labels equal `category_id`, as in the published long-tail code.
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "drolt/data/detail/io.hpp"
#include "drolt/data/image_list.hpp"

namespace drolt {
namespace data {

namespace detail {

/// `value` (the JSON at `where`, e.g. "annotations[3].category_id") as an id:
/// an integer literal in [0, 2^63). A fraction (2.5 or 2.0), a negative number,
/// a number past int64 or a non-number is an error naming the file, the entry
/// and the value; nothing is rounded, truncated or wrapped around.
inline int64_t json_id(const nlohmann::json& value, const std::string& json_file,
                       const std::string& where, const char* caller) {
  const bool integer = value.is_number_integer();
  const bool in_range = value.is_number_unsigned()
                            ? value.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)
                            : integer && value.get<int64_t>() >= 0;
  TORCH_CHECK(integer && in_range, caller, ": '", json_file, "' ", where,
              ": expected a non-negative integer id (at most 2^63 - 1), got ", value.dump());
  return value.get<int64_t>();
}

}  // namespace detail

/// Reads an iNaturalist JSON file. `root` is joined to each `file_name`.
/// Images are kept in the file's order; an image without an annotation (the
/// unlabelled test files) is an error, since there is nothing to train or
/// evaluate on. Throws c10::Error naming the file for invalid JSON, missing
/// fields, duplicate or unknown ids.
inline ImageList read_inaturalist(const std::string& json_file, const std::string& root) {
  constexpr const char* caller = "drolt::data::read_inaturalist";
  const std::vector<uint8_t> bytes = detail::read_file_bytes(json_file, caller);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, caller, ": '", json_file, "' is not valid JSON: ", e.what());
  }
  ImageList out;
  try {
    TORCH_CHECK(doc.is_object() && doc.contains("images") && doc["images"].is_array() &&
                    doc.contains("annotations") && doc["annotations"].is_array(),
                caller, ": '", json_file,
                "': expected an object with arrays 'images' and 'annotations', got ",
                doc.type_name());
    // Category id -> class; from 'categories' when present, else the ids used.
    std::map<int64_t, std::string> categories;
    if (doc.contains("categories")) {
      size_t entry = 0;
      for (const auto& c : doc.at("categories")) {
        const int64_t id = detail::json_id(
            c.at("id"), json_file, "categories[" + std::to_string(entry++) + "].id", caller);
        const std::string name = c.contains("name") ? c.at("name").get<std::string>() : "";
        TORCH_CHECK(categories.emplace(id, name).second, caller, ": '", json_file,
                    "': expected unique category ids, got ", id, " twice");
      }
    } else {
      size_t entry = 0;
      for (const auto& a : doc.at("annotations")) {
        categories.emplace(detail::json_id(a.at("category_id"), json_file,
                                           "annotations[" + std::to_string(entry++) +
                                               "].category_id",
                                           caller),
                           "");
      }
    }
    TORCH_CHECK(!categories.empty(), caller, ": '", json_file,
                "': expected at least one category, got none");
    std::map<int64_t, int64_t> label_of;
    for (const auto& kv : categories) {
      label_of.emplace(kv.first, static_cast<int64_t>(out.class_names.size()));
      out.class_names.push_back(kv.second);
    }
    std::unordered_map<int64_t, int64_t> label_of_image;
    size_t entry = 0;
    for (const auto& a : doc.at("annotations")) {
      const std::string where = "annotations[" + std::to_string(entry++) + "]";
      const int64_t image = detail::json_id(a.at("image_id"), json_file, where + ".image_id", caller);
      const int64_t category =
          detail::json_id(a.at("category_id"), json_file, where + ".category_id", caller);
      const auto it = label_of.find(category);
      TORCH_CHECK(it != label_of.end(), caller, ": '", json_file, "': annotation of image ", image,
                  " expected a category id listed in 'categories', got ", category);
      TORCH_CHECK(label_of_image.emplace(image, it->second).second, caller, ": '", json_file,
                  "': expected one annotation per image, got several for image ", image);
    }
    std::unordered_map<int64_t, bool> seen;
    entry = 0;
    for (const auto& im : doc.at("images")) {
      const int64_t id = detail::json_id(im.at("id"), json_file,
                                         "images[" + std::to_string(entry++) + "].id", caller);
      const std::string file = im.at("file_name").get<std::string>();
      TORCH_CHECK(seen.emplace(id, true).second, caller, ": '", json_file,
                  "': expected unique image ids, got ", id, " twice");
      const auto it = label_of_image.find(id);
      TORCH_CHECK(it != label_of_image.end(), caller, ": '", json_file, "': image ", id, " ('",
                  file, "') expected an annotation, got none");
      TORCH_CHECK(!file.empty(), caller, ": '", json_file, "': image ", id,
                  " expected a file_name, got an empty one");
      out.paths.push_back(file[0] == '/' ? file : detail::join_path(root, file));
      out.labels.push_back(it->second);
    }
    TORCH_CHECK(!out.paths.empty(), caller, ": '", json_file,
                "': expected at least one image, got none");
    TORCH_CHECK(seen.size() == label_of_image.size(), caller, ": '", json_file,
                "': expected every annotation to name a listed image, got ", label_of_image.size(),
                " annotated ids for ", seen.size(), " images");
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, caller, ": '", json_file,
                "': expected iNaturalist fields (images[].id, images[].file_name, "
                "annotations[].image_id, annotations[].category_id, categories[].id), got: ",
                e.what());
  }
  out.num_classes = static_cast<int64_t>(out.class_names.size());
  detail::check_image_list(out, caller);
  return out;
}

}  // namespace data
}  // namespace drolt

#pragma once
/// \file
/// Which image files a data set has and their labels, before any decoding:
/// ImageNet-LT / Places-LT list files and class-folder trees. Needs only
/// LibTorch; `drolt/data/images.hpp` turns an `ImageList` into a dataset, and
/// `drolt/data/inaturalist.hpp` reads the iNaturalist JSON files into one.
///
///     auto list = drolt::data::read_image_list("ImageNet_LT_train.txt", "/data/imagenet");
///     auto tree = drolt::data::list_image_folder("/data/my_images/train");
#include <c10/util/Exception.h>

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "drolt/data/detail/io.hpp"

namespace drolt {
namespace data {

/// Image files and their labels: paths[i] has label labels[i] in [0, num_classes).
struct ImageList {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  /// Class c's name, class_names[c]; empty when the source names no classes
  /// (list files).
  std::vector<std::string> class_names;
  int64_t num_classes = 0;
};

namespace detail {

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/// Checks an ImageList's invariants; every reader's result passes through it.
inline void check_image_list(const ImageList& list, const char* caller) {
  TORCH_CHECK(list.paths.size() == list.labels.size(), caller,
              ": expected as many labels as paths, got ", list.labels.size(), " labels for ",
              list.paths.size(), " paths");
  TORCH_CHECK(list.num_classes > 0, caller, ": expected num_classes > 0, got ", list.num_classes);
  TORCH_CHECK(
      list.class_names.empty() || static_cast<int64_t>(list.class_names.size()) == list.num_classes,
      caller, ": expected no class names or one per class (", list.num_classes, "), got ",
      list.class_names.size());
  for (size_t i = 0; i < list.labels.size(); ++i) {
    TORCH_CHECK(list.labels[i] >= 0 && list.labels[i] < list.num_classes, caller,
                ": expected labels in [0, ", list.num_classes, "), got ", list.labels[i], " for '",
                list.paths[i], "'");
  }
}

}  // namespace detail

/// Reads a list file in the ImageNet-LT / Places-LT format: one image per line,
/// `relative/path.jpg label`, the label a non-negative integer after the last
/// blank (so paths may contain spaces); blank lines are skipped. Paths are
/// joined to `root` (an absolute path in the file is kept as it is).
/// `num_classes` 0 means the largest label + 1, which must then be at most 2^24.
inline ImageList read_image_list(const std::string& list_file, const std::string& root,
                                 int64_t num_classes = 0) {
  constexpr const char* caller = "drolt::data::read_image_list";
  TORCH_CHECK(num_classes >= 0, caller, ": expected num_classes >= 0, got ", num_classes);
  const std::vector<uint8_t> bytes = detail::read_file_bytes(list_file, caller);
  ImageList out;
  int64_t max_label = -1;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t end = pos;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    std::string line(reinterpret_cast<const char*>(bytes.data()) + pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && detail::is_space(line.back())) line.pop_back();
    size_t first = 0;
    while (first < line.size() && detail::is_space(line[first])) ++first;
    if (first == line.size()) continue;
    TORCH_CHECK(line.find('\0') == std::string::npos, caller, ": '", list_file, "' line ", line_no,
                ": expected text, got a NUL byte (not a list file?)");
    size_t blank = line.size();
    while (blank > first && !detail::is_space(line[blank - 1])) --blank;
    const std::string label_text = line.substr(blank);
    size_t path_end = blank;
    while (path_end > first && detail::is_space(line[path_end - 1])) --path_end;
    bool digits = !label_text.empty() && label_text.size() <= 9;
    for (const char c : label_text) digits = digits && c >= '0' && c <= '9';
    TORCH_CHECK(path_end > first && digits, caller, ": '", list_file, "' line ", line_no,
                ": expected '<relative path> <label>' with a label in [0, 10^9), got '",
                line.substr(first), "'");
    const int64_t label = std::strtoll(label_text.c_str(), nullptr, 10);
    TORCH_CHECK(num_classes == 0 || label < num_classes, caller, ": '", list_file, "' line ",
                line_no, ": expected a label in [0, ", num_classes, "), got ", label);
    const std::string rel = line.substr(first, path_end - first);
    out.paths.push_back(rel[0] == '/' ? rel : detail::join_path(root, rel));
    out.labels.push_back(label);
    max_label = std::max(max_label, label);
  }
  TORCH_CHECK(!out.paths.empty(), caller, ": '", list_file,
              "' lists no images: expected lines '<relative path> <label>', got none");
  // Inferred, the class count sizes per-class buffers (class_counts(), the samplers):
  // one line with a huge label must not commit gigabytes. 2^24 is the samplers' limit.
  TORCH_CHECK(num_classes > 0 || max_label < (int64_t{1} << 24), caller, ": '", list_file,
              "': expected labels in [0, 2^24) when num_classes is inferred (0), got ", max_label,
              "; pass num_classes to allow larger labels");
  out.num_classes = num_classes > 0 ? num_classes : max_label + 1;
  detail::check_image_list(out, caller);
  return out;
}

namespace detail {

inline bool has_image_extension(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

/// Names in a directory, sorted byte-wise, without '.', '..' and hidden entries.
inline std::vector<std::string> list_directory(const std::string& dir, const char* caller) {
  DIR* d = ::opendir(dir.c_str());
  TORCH_CHECK(d != nullptr, caller, ": cannot list '", dir, "': ", std::strerror(errno));
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

inline bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// Appends the image files under `dir` (recursively, sorted at each level).
inline void collect_images(const std::string& dir, int depth, std::vector<std::string>& out,
                           const char* caller) {
  // Deeper than any real layout: a symbolic link loop, not a data set.
  TORCH_CHECK(depth < 32, caller, ": expected folders nested at most 32 deep, got '", dir, "'");
  for (const std::string& name : list_directory(dir, caller)) {
    const std::string path = join_path(dir, name);
    if (is_directory(path)) {
      collect_images(path, depth + 1, out, caller);
    } else if (has_image_extension(name) && is_regular_file(path)) {
      out.push_back(path);
    }
  }
}

}  // namespace detail

/// Lists a class-folder tree, `root/<class name>/.../*.jpg|jpeg|png` (extension
/// case-insensitive), as torchvision's ImageFolder does: classes are the
/// sub-folders of `root` sorted by name (byte-wise), class c the c-th; the
/// files of a class sorted by path. Hidden entries and other files are
/// ignored; a class folder without images is an error.
inline ImageList list_image_folder(const std::string& root) {
  constexpr const char* caller = "drolt::data::list_image_folder";
  TORCH_CHECK(detail::is_directory(root), caller, ": expected '", root,
              "' to be a folder of class folders, got ",
              detail::is_regular_file(root) ? "a file" : "nothing (not found)");
  ImageList out;
  for (const std::string& name : detail::list_directory(root, caller)) {
    const std::string dir = detail::join_path(root, name);
    if (!detail::is_directory(dir)) continue;
    const auto label = static_cast<int64_t>(out.class_names.size());
    const size_t before = out.paths.size();
    detail::collect_images(dir, 0, out.paths, caller);
    TORCH_CHECK(out.paths.size() > before, caller, ": expected at least one .jpg, .jpeg or .png ",
                "file in each class folder, got none in '", dir, "'");
    out.labels.resize(out.paths.size(), label);
    out.class_names.push_back(name);
  }
  TORCH_CHECK(!out.class_names.empty(), caller, ": expected class folders in '", root,
              "', got none");
  out.num_classes = static_cast<int64_t>(out.class_names.size());
  detail::check_image_list(out, caller);
  return out;
}

}  // namespace data
}  // namespace drolt

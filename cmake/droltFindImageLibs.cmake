# Finds what drolt::images needs: TurboJPEG (libjpeg-turbo), libpng and
# nlohmann_json. Used by drolt's own build and by the installed droltConfig.cmake,
# so the exported target names imported targets, never absolute paths.
# Sets DROLT_IMAGES_FOUND.
set(DROLT_IMAGES_FOUND FALSE)
find_package(PNG QUIET)
find_package(nlohmann_json 3 QUIET)
find_path(DROLT_TURBOJPEG_INCLUDE_DIR turbojpeg.h)
find_library(DROLT_TURBOJPEG_LIBRARY NAMES turbojpeg)
if(PNG_FOUND AND nlohmann_json_FOUND AND DROLT_TURBOJPEG_INCLUDE_DIR AND DROLT_TURBOJPEG_LIBRARY)
  if(NOT TARGET drolt::TurboJPEG)
    add_library(drolt::TurboJPEG UNKNOWN IMPORTED)
    set_target_properties(drolt::TurboJPEG PROPERTIES
      IMPORTED_LOCATION "${DROLT_TURBOJPEG_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${DROLT_TURBOJPEG_INCLUDE_DIR}")
  endif()
  set(DROLT_IMAGES_FOUND TRUE)
endif()

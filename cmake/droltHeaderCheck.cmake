# drolt_header_check: every header under include/drolt compiled alone, one
# translation unit each (included twice, so the include guard is checked too):
# the proof that each header includes what it uses. Not built by default (it
# costs a full LibTorch parse per header):
#
#   cmake --build build/dev --target drolt_header_check
#
# The image headers join only when drolt::images exists (they need TurboJPEG,
# libpng and nlohmann_json); the CUDA kernel file is not a header.
file(GLOB_RECURSE _drolt_headers RELATIVE ${CMAKE_CURRENT_SOURCE_DIR}/include
     CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/include/drolt/*.hpp)
set(_drolt_image_headers drolt/data/image_codec.hpp drolt/data/images.hpp
    drolt/data/image_loader.hpp drolt/data/inaturalist.hpp)
set(_drolt_header_tus "")
foreach(_h IN LISTS _drolt_headers)
  if(_h IN_LIST _drolt_image_headers AND NOT TARGET drolt::images)
    continue()
  endif()
  string(MAKE_C_IDENTIFIER "${_h}" _id)
  set(_tu ${CMAKE_CURRENT_BINARY_DIR}/header_check/${_id}.cpp)
  file(CONFIGURE OUTPUT ${_tu} CONTENT "#include <${_h}>\n#include <${_h}>\n" @ONLY)
  list(APPEND _drolt_header_tus ${_tu})
endforeach()
add_library(drolt_header_check OBJECT EXCLUDE_FROM_ALL ${_drolt_header_tus})
target_link_libraries(drolt_header_check PRIVATE drolt::drolt drolt_dev_flags)
if(TARGET drolt::images)
  target_link_libraries(drolt_header_check PRIVATE drolt::images)
endif()

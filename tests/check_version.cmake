# CMake script (ctest): fails when r/DESCRIPTION's Version is not the project's version, the one
# source of truth (project() in CMakeLists.txt; setup.py and bn1d.__version__ read it too).
#   cmake -DPROJECT_VERSION=x.y.z -DDESCRIPTION_FILE=r/DESCRIPTION -P check_version.cmake
file(STRINGS "${DESCRIPTION_FILE}" version_line REGEX "^Version:")
string(REGEX REPLACE "^Version:[ \t]*([^ \t]*).*$" "\\1" r_version "${version_line}")
if(NOT r_version STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "${DESCRIPTION_FILE} has Version '${r_version}', but project(bn1d VERSION) "
                      "in CMakeLists.txt is '${PROJECT_VERSION}': make them equal")
endif()
message(STATUS "R package version ${r_version} = project version ${PROJECT_VERSION}")

# Helpers shared by every folder: one library per folder, tests with labels.

# Warning and sanitizer flags for our own targets only (third-party headers are SYSTEM).
function(avserve_target_flags target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${AVSERVE_WERROR}>>:-Werror>)
  if(AVSERVE_SANITIZE)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
        -fno-sanitize=vptr>)
    # -fno-sanitize=vptr: oneTBB's flow graph destroys a task and then downcasts it inside its own
    # headers (graph_task::destruct_and_deallocate); the vptr check flags that in every graph user.
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# avserve_add_library(NAME SOURCES a.cc ... PUBLIC_DEPS ... PRIVATE_DEPS ...)
function(avserve_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  avserve_target_flags(${name})
endfunction()

# avserve_add_executable(NAME SOURCES ... DEPS ...)
function(avserve_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  avserve_target_flags(${name})
endfunction()

# avserve_add_test(NAME SOURCES ... DEPS ... LABELS unit|gpu|slow ... [TIMEOUT s])
# One GoogleTest executable; every TEST becomes a CTest test carrying the labels.
function(avserve_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    AVSERVE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" AVSERVE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  avserve_target_flags(${name})
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()

# CTest helper: runs drolt_train with ARGS (separated by |) and passes only if it
# exits with status 2 (a refused command line) and its stderr matches EXPECT.
#   cmake -DEXE=... -DARGS=... -DEXPECT=... -P cli_refuses.cmake
string(REPLACE "|" ";" ARGS "${ARGS}")
execute_process(COMMAND "${EXE}" ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "drolt_train ${ARGS}: expected exit status 2, got '${rc}'\nstdout: ${out}\nstderr: ${err}")
endif()
string(FIND "${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "drolt_train ${ARGS}: expected stderr to contain\n  ${EXPECT}\ngot\n  ${err}")
endif()

# cmake -DSCDOC=PATH -DIN=FILE.scd -DOUT=FILE -P scdoc-file.cmake
# scdoc reads the source on standard input and writes the page on standard output.
execute_process(COMMAND "${SCDOC}" INPUT_FILE "${IN}" OUTPUT_FILE "${OUT}"
  ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE "${OUT}")
  message(FATAL_ERROR "scdoc ${IN}: ${err}")
endif()

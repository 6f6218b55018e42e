# cmake -DIN=FILE -DOUT=FILE.gz -P gzip-file.cmake
# Compresses as Debian wants it: best compression, no name and no time stamp
# inside, so that the same input gives the same bytes.
execute_process(COMMAND gzip -9 -n -c "${IN}" OUTPUT_FILE "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE "${OUT}")
  message(FATAL_ERROR "gzip ${IN} failed: ${rc}")
endif()

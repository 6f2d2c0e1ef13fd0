# dsv3-gen: random checkpoints in the official HF FP8 layout (bench/gen/gen.c).  It shares the
# expected-tensor list with dsv3-inspect --check (dsv3-inspect/expect.c).  Used by the inspect
# tests (tiny configs) and the benchmarks (bench/configs/*.json).
add_executable(dsv3-gen ${PROJECT_SOURCE_DIR}/bench/gen/gen.c ${PROJECT_SOURCE_DIR}/dsv3-inspect/expect.c)
target_include_directories(dsv3-gen PRIVATE ${PROJECT_SOURCE_DIR}/dsv3-inspect)
target_link_libraries(dsv3-gen PRIVATE dsv3)

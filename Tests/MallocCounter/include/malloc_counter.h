// Counts heap allocations made by this process while enabled (test support only).
// The test executable defines malloc and friends, which interpose the C library's for the whole
// process and forward to glibc's __libc_* entry points.
#pragma once
#include <stdint.h>
void psam_test_malloc_counting(int enabled);
int64_t psam_test_malloc_count(void);

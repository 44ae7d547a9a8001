// OpenBLAS's CBLAS interface (Debian: libopenblas-dev), used for the fp32 reference path.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);

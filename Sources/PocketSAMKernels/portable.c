/* The portable-kernels switch: while it is on, every fp32 row operation runs its generic body (no vector body of any
 * ISA), psam_sgemm_inplace runs psam_sgemm_portable, and the runtime's other fp32 products do too (Ops.swift), so an
 * fp32 forward pass gives the same bits on every CPU and with every BLAS. The quantizer's calibration turns it on
 * (Calibrator.swift): GPTQ's discrete rounding would turn the last-bit differences of CPU-specific kernels into
 * different files. (On aarch64, quantization, GELU and add keep their NEON bodies, which give the generic bits anyway.)
 * The generic bodies use no libm function that glibc chooses per CPU (exp_generic instead of expf). It also turns off the int8 path's CPU-dependent choices that change values (the piecewise-cubic
 * GELU, fp16 and bf16 attention), so that an int8 model run under it (PrecisionSearch.swift's measurements) gives the
 * same bits everywhere too: the int8 GEMMs give the same bits on every ISA anyway. It is process-wide (the bodies are
 * chosen per call, from a flag read with no lock); the int8 kernels' dispatch is not affected. */
#include "pocketsam_kernels.h"
#include <stdatomic.h>

static atomic_int portable;

void psam_set_portable_kernels(int on) { atomic_store_explicit(&portable, on ? 1 : 0, memory_order_relaxed); }

int psam_portable_kernels(void) { return atomic_load_explicit(&portable, memory_order_relaxed); }

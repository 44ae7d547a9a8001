import Dispatch
import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

/// The int8 kernel variant in use and this machine's measured peak, for benchmarks and `info`.
public enum Kernels {
    /// The int8 GEMM variant chosen for this CPU (`avx512vnni`, `avx2`, `neondot` or `scalar`).
    public static var name: String { String(cString: psam_isa_name(psam_best_isa())) }

    /// Measured peak int8 multiply-accumulates per second of the dot-product instruction on `threads`
    /// threads at once (register-only loop, about 0.3 s); nil where no probe exists (AVX-512 VNNI only).
    public static func measuredPeakMACsPerSecond(threads: Int) -> Double? {
        guard psam_isa_peak_probe(PSAM_ISA_AVX512VNNI, 1) > 0 else { return nil }
        let iters: UInt64 = 4_000_000
        _ = psam_isa_peak_probe(PSAM_ISA_AVX512VNNI, iters / 4)  // warm up the clocks
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        DispatchQueue.concurrentPerform(iterations: max(threads, 1)) { _ in _ = psam_isa_peak_probe(PSAM_ISA_AVX512VNNI, iters) }
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let s = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9
        return Double(iters) * 16 * 64 * Double(max(threads, 1)) / s
    }
}

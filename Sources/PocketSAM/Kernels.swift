import Dispatch
import PocketSAMKernels

#if canImport(Glibc)
import Glibc
#endif

/// The int8 kernel variant in use and this machine's measured peak, for benchmarks and `info`.
public enum Kernels {
    /// The int8 GEMM variant chosen for this CPU: `avx512vnni`, `avx2`, `i8mm`, `neondot`, `neon` or `scalar`
    /// (`PSAM_KERNELS` caps the choice).
    public static var name: String { String(cString: psam_isa_name(psam_best_isa())) }

    /// What runs where on this CPU, one line: the int8 GEMM, the int16 GEMM of an int8 model's fp16 layers (or fp32
    /// where it would not be faster), the row operations' bodies, the int8 path's GELU, and the int8 models' window
    /// attention (fp16 where the CPU has half-precision arithmetic, bf16 where it has AVX-512 BF16 only, else fp32),
    /// and the int8 SAM ViTs' attention (`vitAttention`).
    public static var summary: String {
        let attention = psam_window_attention_fp16_fast(32) != 0 ? "fp16" : psam_window_attention_bf16_fast(32) != 0 ? "bf16" : "fp32"
        return "int8 GEMM \(name), int16 GEMM " + (psam_s16gemm_fast() != 0 ? name : "off (fp32)")
            + ", row operations \(String(cString: psam_rowops_isa_name())), int8 GELU "
            + (psam_gelu_lut_fast() != 0 ? "piecewise cubic" : "exact") + ", int8 window attention \(attention)"
            + ", int8 ViT attention \(vitAttention)"
    }

    /// The int8 SAM ViTs' attention (64-wide heads): `bf16` where the CPU has AVX-512 BF16, else `fp32`.
    public static var vitAttention: String { psam_vit_attention_bf16_fast(64) != 0 ? "bf16" : "fp32" }

    /// Measured peak int8 multiply-accumulates per second of the chosen variant's inner-loop instructions on `threads`
    /// threads at once (a register-only loop of the kernel's instruction mix, about 0.3 s); nil where that variant has
    /// no probe (scalar).
    public static func measuredPeakMACsPerSecond(threads: Int) -> Double? {
        let isa = psam_best_isa()
        guard psam_isa_peak_probe(isa, 1) > 0 else { return nil }
        let iters: UInt64 = 4_000_000
        _ = psam_isa_peak_probe(isa, iters / 4)  // warm up the clocks
        var t0 = timespec(), t1 = timespec()
        let macs = ProbeTotal()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        DispatchQueue.concurrentPerform(iterations: max(threads, 1)) { _ in
            macs.add(Int(truncatingIfNeeded: psam_isa_peak_probe(isa, iters)))
        }
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let s = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9
        return Double(macs.value) / s
    }
}

/// A counter the probe's threads add to. A pthread mutex rather than Foundation's NSLock: the runtime does not link
/// Foundation (its libraries and ICU data would add about 8 MB to every process's resident memory).
private final class ProbeTotal: @unchecked Sendable {
    private var total = 0
    private let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    deinit { pthread_mutex_destroy(lock); lock.deallocate() }
    func add(_ v: Int) { pthread_mutex_lock(lock); total += v; pthread_mutex_unlock(lock) }
    var value: Int { pthread_mutex_lock(lock); defer { pthread_mutex_unlock(lock) }; return total }
}

import COpenBLAS
import PocketSAMKernels

/// The runtime's one door to OpenBLAS's sgemm: `c = alpha · op(a) · op(b)` (+ c when `accumulate`), row-major, with
/// op the transpose where asked. While the portable-kernels switch is on (`PortableKernels`, the quantizer's
/// calibration run) the product runs on `psam_sgemm_portable` instead, whose bits do not depend on the CPU, the BLAS
/// kernel or the thread count.
enum BLAS {
    static func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, accumulate: Bool = false,
                      c: UnsafeMutablePointer<Float>, ldc: Int) {
        if psam_portable_kernels() != 0 {
            psam_sgemm_portable(a, transA ? 1 : lda, transA ? lda : 1, b, transB ? 1 : ldb, transB ? ldb : 1, c, ldc, m, n, k,
                                alpha, nil, accumulate ? 1 : 0)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n),
                    Int32(k), alpha, a, Int32(lda), b, Int32(ldb), accumulate ? 1 : 0, c, Int32(ldc))
    }
}

/// The quantizer's calibration runs the fp32 model under `PortableKernels.run`: every fp32 row operation on its generic
/// body and every product on `psam_sgemm_portable`, so that the activations it collects, and the file GPTQ rounds from
/// them, are the same bits on every x86-64 CPU, with any `OPENBLAS_CORETYPE` and any thread count. Process-wide while
/// `body` runs (other sessions in the process compute the same values, more slowly); the int8 kernels are unaffected.
@_spi(Calibration) public enum PortableKernels {
    public static func run<T>(_ body: () throws -> T) rethrows -> T {
        let was = psam_portable_kernels()
        psam_set_portable_kernels(1)
        defer { psam_set_portable_kernels(was) }
        return try body()
    }
}

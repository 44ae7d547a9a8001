import Dispatch
@_spi(Calibration) import PocketSAM
import PocketSAMFormat
import PocketSAMIO
import PocketSAMKernels

/// Runs the fp32 model on calibration images and collects, for every image-encoder linear and
/// convolution layer, the second moments of its inputs `H = Σ x xᵀ` (K×K), which `GPTQ` uses to round
/// the layer's weights so that its outputs, not just its weights, stay close.
///
/// The result has the same bits on every x86-64 CPU, with any BLAS kernel (`OPENBLAS_CORETYPE`) and any thread
/// count: the forward pass runs under `PortableKernels` (generic row operations, products on
/// `psam_sgemm_portable`, whose sums are in a fixed order without fused multiply-adds) and the moments are summed
/// in double, rows in order (`psam_moments_f64`). GPTQ's rounding is discrete, so a last-bit difference here would
/// give a different file.
public enum Calibrator {
    /// `fp32`: the model as an fp32 `.psam` (bytes); `images`: paths (JPEG/PNG). Rows of large layers
    /// are subsampled (at most `maxRows` per call, evenly spaced).
    public static func hessians(fp32 bytes: [UInt8], images: [String], maxRows: Int = 4096, threads: Int = 2,
                                progress: (String) -> Void = { _ in }) throws -> [String: [Float]] {
        var inputs: [(name: String, image: Image)] = []
        for path in images { inputs.append((path, try ImageIO.read(path))) }
        return try hessians(fp32: bytes, inputs: inputs, maxRows: maxRows, threads: threads, progress: progress)
    }

    /// The same for images in memory (`BuiltinCalibration`'s, or decoded files), named for the progress lines.
    public static func hessians(fp32 bytes: [UInt8], inputs: [(name: String, image: Image)], maxRows: Int = 4096,
                                threads: Int = 2, progress: (String) -> Void = { _ in }) throws -> [String: [Float]] {
        try run(fp32: bytes, inputs: inputs, maxRows: maxRows, threads: threads, progress: progress).hessians
    }

    public struct Statistics: Sendable {
        /// Per weight name: the inputs' second moments (K×K, row-major, symmetric).
        public var hessians: [String: [Float]]
        /// Per weight name: the layer's multiply-accumulates per image (rows × K × N, the mean over the images).
        public var macs: [String: Int]
    }

    /// The moments and each layer's work per image.
    public static func run(fp32 bytes: [UInt8], inputs: [(name: String, image: Image)], maxRows: Int = 4096,
                           threads: Int = 2, progress: (String) -> Void = { _ in }) throws -> Statistics {
        let file = try PSAMFile(storage: ByteStorage(copying: bytes))
        let model = try Model(file: file, compute: .fp32)
        let session = Session(model: model, threads: max(1, threads))
        final class Sums {
            var h: [String: (k: Int, p: UnsafeMutablePointer<Double>)] = [:]
            var rows: [String: Int] = [:]
            deinit { for (_, v) in h { v.p.deallocate() } }
        }
        let sums = Sums()
        session.linearInputHook = { name, a, m, k, lda in
            guard name.hasPrefix("image_encoder."), m > 0, k > 0 else { return }
            sums.rows[name, default: 0] += m
            let step = max(1, (m + maxRows - 1) / maxRows)
            let rows = (m + step - 1) / step
            let entry = sums.h[name] ?? {
                let p = UnsafeMutablePointer<Double>.allocate(capacity: k * k)
                p.initialize(repeating: 0, count: k * k)
                sums.h[name] = (k, p)
                return (k, p)
            }()
            guard entry.k == k else { return }
            // H += Xᵀ X over every `step`-th row (upper triangle), the rows of H shared among the threads (the
            // sums, each made by one thread in row order, do not depend on how many).
            let parts = rows * k * k >= 1 << 22 ? max(1, threads) : 1
            let call = MomentsCall(x: a, ldx: lda * step, rows: rows, k: k, h: entry.p)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                psam_moments_f64(call.x, call.ldx, call.rows, call.k, call.h, part, parts)
            }
        }
        defer { session.linearInputHook = nil }
        try PortableKernels.run {
            for (i, input) in inputs.enumerated() {
                let img = input.image
                try img.pixels.withUnsafeBufferPointer {
                    try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
                }
                progress("calibration image \(i + 1)/\(inputs.count): \(input.name)")
            }
        }
        var out: [String: [Float]] = [:]
        for (name, v) in sums.h {
            var h = [Float](repeating: 0, count: v.k * v.k)
            for i in 0..<v.k {
                for j in i..<v.k {
                    h[i * v.k + j] = Float(v.p[i * v.k + j])
                    h[j * v.k + i] = Float(v.p[i * v.k + j])
                }
            }
            out[name] = h
        }
        var macs: [String: Int] = [:]
        for (name, rows) in sums.rows {
            guard let t = file.tensors.first(where: { $0.name == name }), let n = t.shape.first, let k = sums.h[name]?.k else { continue }
            macs[name] = rows / max(1, inputs.count) * k * n
        }
        return Statistics(hessians: out, macs: macs)
    }
}

/// One `psam_moments_f64` call's arguments, shared by the threads that each take a part of H's rows (disjoint writes).
private struct MomentsCall: @unchecked Sendable {
    let x: UnsafePointer<Float>, ldx: Int, rows: Int, k: Int, h: UnsafeMutablePointer<Double>
}

import COpenBLAS
@_spi(Calibration) import PocketSAM
import PocketSAMFormat
import PocketSAMIO

/// Runs the fp32 model on calibration images and collects, for every image-encoder linear and
/// convolution layer, the second moments of its inputs `H = Σ x xᵀ` (K×K), which `GPTQ` uses to round
/// the layer's weights so that its outputs, not just its weights, stay close.
public enum Calibrator {
    /// `fp32`: the model as an fp32 `.psam` (bytes); `images`: paths (JPEG/PNG). Rows of large layers
    /// are subsampled (at most `maxRows` per call, evenly spaced).
    public static func hessians(fp32 bytes: [UInt8], images: [String], maxRows: Int = 4096,
                                progress: (String) -> Void = { _ in }) throws -> [String: [Float]] {
        let model = try Model(file: try PSAMFile(storage: ByteStorage(copying: bytes)), compute: .fp32)
        let session = Session(model: model, threads: 2)
        final class Sums {
            var h: [String: (k: Int, p: UnsafeMutablePointer<Float>)] = [:]
            deinit { for (_, v) in h { v.p.deallocate() } }
        }
        let sums = Sums()
        session.linearInputHook = { name, a, m, k, lda in
            guard name.hasPrefix("image_encoder."), m > 0, k > 0 else { return }
            let step = max(1, (m + maxRows - 1) / maxRows)
            let rows = (m + step - 1) / step
            let entry = sums.h[name] ?? {
                let p = UnsafeMutablePointer<Float>.allocate(capacity: k * k)
                p.initialize(repeating: 0, count: k * k)
                sums.h[name] = (k, p)
                return (k, p)
            }()
            guard entry.k == k else { return }
            // H += Xᵀ X over every `step`-th row (upper triangle).
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(k), Int32(rows), 1, a, Int32(lda * step), 1,
                        entry.p, Int32(k))
        }
        defer { session.linearInputHook = nil }
        for (i, path) in images.enumerated() {
            let img = try ImageIO.read(path)
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            progress("calibration image \(i + 1)/\(images.count): \(path)")
        }
        var out: [String: [Float]] = [:]
        for (name, v) in sums.h {
            var h = [Float](repeating: 0, count: v.k * v.k)
            for i in 0..<v.k {
                for j in i..<v.k {
                    h[i * v.k + j] = v.p[i * v.k + j]
                    h[j * v.k + i] = v.p[i * v.k + j]
                }
            }
            out[name] = h
        }
        return out
    }
}

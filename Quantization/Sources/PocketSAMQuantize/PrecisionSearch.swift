@_spi(Calibration) import PocketSAM
import PocketSAMFormat
import PocketSAMIO

/// Which weight matrices of an int8 TinyViT encoder stay fp16, chosen by measurement rather than from a fixed list.
///
/// The int8 weight matrices of the image encoder outside its fused attention and MLP jobs are the candidates
/// (`fusedOnlyInInt8` says why). A candidate's cost is the encoder time it would add as an
/// fp16-kept layer (which runs on the int16 GEMM on AVX-512 VNNI, on fp32 elsewhere), estimated from its
/// multiply-accumulates per image (counted in the calibration run) at a fixed ratio of kernel rates (`fp16Cost`), so
/// that the choice is the same on every machine. Its gain is measured: the calibration images' embeddings from the
/// all-int8 file with that one layer fp16, against the fp32 model's, as the drop in Σ (1 − cosine) from the all-int8
/// file's. Layers are taken greedily by gain per cost while the estimated slowdown stays within `maxSlowdown` × the
/// all-int8 encoder's GEMM time (the other operations cost the same either way, so the real slowdown is smaller).
///
/// The measuring runs use the portable kernels, fp32 attention and no int16 GEMM (`PortableKernels`, `Model(int16:
/// false)`), so the embeddings, and therefore the choice, are the same bits on every CPU.
///
/// int8 weights with int16 activations are not a separate candidate: an fp16-kept layer runs on the same int16 GEMM
/// at the same speed with more accurate weights, so it is never worse at the same cost; it only costs one more byte
/// per weight in the file.
public enum PrecisionSearch {
    /// Encoder time per multiply-accumulate of an fp16-kept layer relative to an int8 one: on AVX-512 VNNI the int16
    /// GEMM's `vpdpwssd` does half the multiply-accumulates of the int8 GEMM's `vpdpbusd` per instruction.
    public static let fp16Cost = 2.0

    public struct Candidate: Sendable {
        public var name: String
        /// Multiply-accumulates per calibration image.
        public var macs: Int
        /// Added encoder time in int8 multiply-accumulates: `macs · (fp16Cost − 1)`.
        public var cost: Double
        /// Drop of Σ (1 − embedding cosine) over the measuring images when this layer alone is fp16.
        public var gain: Double
        public var chosen = false
    }

    public struct Result: Sendable {
        public var candidates: [Candidate]
        /// Σ (1 − cosine) over the measuring images: all-int8, and with the chosen layers fp16.
        public var baseError: Double, chosenError: Double
        /// The chosen layers' added GEMM time over the all-int8 encoder's GEMM time.
        public var estimatedSlowdown: Double
        public var chosen: [String] { candidates.filter(\.chosen).map(\.name) }
    }

    /// `base`: the int8 conversion with no layer kept fp16 (its `originals` filled); `fp32`: the fp32 file's bytes;
    /// `macs`: per weight name, multiply-accumulates per image; `images`: the measuring images.
    public static func choose(base: ConversionResult, fp32: [UInt8], macs: [String: Int], images: [(name: String, image: Image)],
                              maxSlowdown: Double, threads: Int, progress: (String) -> Void) throws -> (Result, PSAMWriter) {
        let reference = try PortableKernels.run { try embeddings(fp32, images, threads: threads, int8: false) }
        let baseBytes = try base.writer.serialize()
        let baseError = try error(baseBytes, images, reference, threads: threads)
        var total = 0.0
        var candidates: [Candidate] = []
        for t in base.writer.tensors where t.name.hasPrefix("image_encoder.") && t.dtype == .i8 && t.layout == .panels16x4 {
            let m = macs[t.name] ?? 0
            total += Double(m)
            guard m > 0, base.originals[t.name] != nil, !Converter.matches(t.name, fusedOnlyInInt8) else { continue }
            candidates.append(Candidate(name: t.name, macs: m, cost: Double(m) * (fp16Cost - 1), gain: 0))
        }
        progress("measuring \(candidates.count) layers at fp16 on \(images.count) image(s) (all int8: Σ(1 − cosine) \(format(baseError)))")
        for i in candidates.indices {
            var w = base.writer
            try keepFP16(candidates[i].name, base, &w)
            candidates[i].gain = baseError - (try error(try w.serialize(), images, reference, threads: threads))
            if (i + 1) % 20 == 0 || i + 1 == candidates.count { progress("measured \(i + 1)/\(candidates.count) layers") }
        }
        // Greedy by gain per cost within the budget.
        let budget = (maxSlowdown - 1) * total
        var spent = 0.0
        for i in candidates.indices.sorted(by: { a, b in
            let ra = candidates[a].gain / candidates[a].cost, rb = candidates[b].gain / candidates[b].cost
            return ra != rb ? ra > rb : candidates[a].name < candidates[b].name
        }) where candidates[i].gain > 0 && spent + candidates[i].cost <= budget {
            candidates[i].chosen = true
            spent += candidates[i].cost
        }
        var writer = base.writer
        for c in candidates where c.chosen { try keepFP16(c.name, base, &writer) }
        let chosenError = try error(try writer.serialize(), images, reference, threads: threads)
        let result = Result(candidates: candidates, baseError: baseError, chosenError: chosenError,
                            estimatedSlowdown: total > 0 ? 1 + spent / total : 1)
        progress("kept \(result.chosen.count) layers fp16 (estimated GEMM time ×\(format(result.estimatedSlowdown))): "
                 + "Σ(1 − cosine) \(format(baseError)) → \(format(chosenError))")
        return (result, writer)
    }

    /// Matrices that are not candidates: the transformer blocks' attention and MLP layers run as fused int8 jobs
    /// (TinyViTFused.swift: a window's qkv, attention and proj; fc1, GELU and fc2) only while both of their matrices are
    /// int8, so one of them fp16 costs far more than its multiply-accumulates say. Measured: with them as candidates
    /// the search kept 8 attention and MLP matrices among 17 for an estimated ×1.145, and the encoder took 1.186× the
    /// time of the file with the fixed fp16 list (`pocketsam bench`, 15 runs, Xeon with AVX-512 VNNI). The convolutions
    /// (patch embedding, MBConv and patch-merging 1×1 convolutions, the neck) keep their fused paths in int16.
    public static let fusedOnlyInInt8 = ["image_encoder.layers.*.blocks.*.attn.*", "image_encoder.layers.*.blocks.*.mlp.*"]

    /// How many calibration images the gains are measured on (the first ones): each candidate costs one int8 encoder
    /// run per image.
    public static let measuringImages = 2

    /// The conversion with the chosen layers fp16: `writer` (from `choose`), their reports, and the metadata.
    public static func apply(_ r: Result, writer: PSAMWriter, to base: ConversionResult, maxSlowdown: Double) -> ConversionResult {
        var out = base
        out.writer = writer
        out.originals = [:]
        let chosen = Set(r.chosen)
        for i in out.reports.indices where chosen.contains(out.reports[i].name) {
            let name = out.reports[i].name
            guard let v = base.originals[name], let c = r.candidates.first(where: { $0.name == name }) else { continue }
            out.reports[i].dtype = .f16
            out.reports[i].relativeRMSError = Quantizer.relativeRMSError(v, v.map { Float(Float16($0)) })
            out.reports[i].note = "kept fp16 by measurement (gain \(format(c.gain)), cost \(c.macs / 1_000_000) MMAC/image)"
        }
        if !r.chosen.isEmpty { out.writer.metadata["psam.keep_fp16"] = .string(r.chosen.joined(separator: " ")) }
        out.writer.metadata["psam.precision_choice"] = .string(
            "measured (--max-slowdown \(maxSlowdown)): \(r.chosen.count) of \(r.candidates.count) int8 matrices kept fp16, estimated "
            + "encoder GEMM time ×\(format(r.estimatedSlowdown)), Σ(1 − embedding cosine) on \(measuringImages) calibration images "
            + "\(format(r.baseError)) → \(format(r.chosenError))")
        return out
    }

    static func keepFP16(_ name: String, _ base: ConversionResult, _ w: inout PSAMWriter) throws {
        guard let v = base.originals[name], let t = base.writer.tensors.first(where: { $0.name == name }) else { return }
        try w.replace(PSAMWriter.f16Tensor(name: name, shape: t.shape, values: v.map { Float16($0) }))
    }

    static func embeddings(_ bytes: [UInt8], _ images: [(name: String, image: Image)], threads: Int, int8: Bool) throws -> [[Float]] {
        let model = try Model(file: try PSAMFile(storage: ByteStorage(copying: bytes)), compute: int8 ? .auto : .fp32, int16: false)
        let session = Session(model: model, threads: max(1, threads))
        var out: [[Float]] = []
        for (_, img) in images {
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            out.append(try session.imageEmbedding())
        }
        return out
    }

    static func error(_ bytes: [UInt8], _ images: [(name: String, image: Image)], _ reference: [[Float]], threads: Int) throws -> Double {
        let e = try PortableKernels.run { try embeddings(bytes, images, threads: threads, int8: true) }
        var sum = 0.0
        for (a, b) in zip(e, reference) {
            var ab = 0.0, aa = 0.0, bb = 0.0
            for (x, y) in zip(a, b) { ab += Double(x) * Double(y); aa += Double(x) * Double(x); bb += Double(y) * Double(y) }
            sum += 1 - ab / max((aa * bb).squareRoot(), 1e-30)
        }
        return sum
    }

    static func format(_ x: Double) -> String { "\((x * 1e6).rounded() / 1e6)" }
}

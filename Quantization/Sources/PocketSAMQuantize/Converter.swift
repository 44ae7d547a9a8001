#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import PocketSAMFormat
import Synchronization

public let pocketSAMQuantizeVersion = "0.1.0"

/// How `Converter` stores each tensor.
public struct ConversionOptions: Sendable {
    public var precision: Precision = .int8
    /// An int8 tensor whose relative RMS error would exceed this is stored as fp16 instead.
    public var maxInt8RelativeError: Double = 0.01
    /// Weight matrices smaller than this stay fp32 (the int8 GEMM has nothing to gain on them).
    public var minInt8Elements: Int = 1024
    /// Glob patterns (fnmatch) of tensor names that stay fp32 whatever the precision.
    public var keepFP32: [String] = []
    /// Glob patterns of weight matrices stored as fp16 in an int8 conversion (the runtime computes them in
    /// fp32). nil: the defaults for the detected model (`Converter.defaultKeepFP16`).
    public var keepFP16: [String]?
    /// Glob patterns of int8 weights whose layers run with fp32 activations: stored int8 row-major
    /// (layout 0), so the runtime dequantizes them at load instead of running its int8 kernels. nil:
    /// the defaults for the detected model (`Converter.defaultFP32Activations`).
    public var fp32Activations: [String]?
    /// Input second moments per weight name (`Calibrator.hessians`): those int8 weights are rounded by
    /// GPTQ (output error) instead of to nearest (weight error).
    public var hessians: [String: [Float]] = [:]
    /// What the calibration was, for the file's metadata (`psam.calibration`), and its images' fingerprint
    /// (`psam.calibration_sha256`).
    public var calibrationNote: String?
    public var calibrationFingerprint: String?
    /// SmoothQuant's migration strength α for the int8 MLP input layers of TinyViT (`mlp.fc1`, fed by a layer
    /// norm), used when their calibration moments are in `hessians`; nil or 0: no smoothing. See
    /// `Converter.smoothingFactors` for how the default was measured.
    public var smoothingAlpha: Double? = 0.25
    /// Threads rounding tensors at once (GPTQ is the slow part); the file does not depend on it.
    public var threads: Int = 2
    /// Keep the values (BN-folded, smoothed) of the image encoder's int8 weight matrices in the result's `originals`,
    /// for `PrecisionSearch`, which stores some of them as fp16 afterwards.
    public var keepOriginals = false

    public init(precision: Precision = .int8) {
        self.precision = precision
    }
}

/// What happened to one tensor.
public struct TensorReport: Sendable {
    public var name: String
    public var shape: [Int]
    public var role: TensorRole
    public var dtype: DType
    /// `‖w − dequant(q(w))‖ / ‖w‖` of the stored values against the fp32 (BN-folded) weights.
    public var relativeRMSError: Double
    public var note: String
}

public struct ConversionResult: Sendable {
    public var config: ModelConfig
    public var writer: PSAMWriter
    public var reports: [TensorReport]
    /// Checkpoint tensors that the runtime does not use (classification head, BN counters).
    public var ignored: [String]
    public var foldedBatchNorms: Int
    public var sourceSHA256: String
    /// With `ConversionOptions.keepOriginals`: the stored-before-rounding values of the image encoder's int8 matrices.
    public var originals: [String: [Float]] = [:]
}

/// checkpoint → detected configuration → BN folding → per-tensor precision → `.psam` writer.
public enum Converter {
    public static let batchNormEps = 1e-5

    public static func convert(_ ckpt: Checkpoint, options: ConversionOptions = ConversionOptions(),
                               progress: (String) -> Void = { _ in }) throws(CheckpointError) -> ConversionResult {
        var sha = SHA256()
        sha.update(ckpt.file.bytes)
        return try convert(tensors: ckpt.tensors, format: ckpt.format, sourceSHA256: sha.finalize(), options: options,
                           progress: progress)
    }

    /// Converts a prepared checkpoint (any layout, shards, LoRA merged).
    public static func convert(_ p: PreparedCheckpoint, options: ConversionOptions = ConversionOptions(),
                               progress: (String) -> Void = { _ in }) throws(CheckpointError) -> ConversionResult {
        try convert(tensors: p.tensors, format: p.set.format, sourceSHA256: p.set.sha256, sourceMetadata: p.sourceMetadata,
                    options: options, progress: progress)
    }

    /// Converts a list of checkpoint tensors (a whole state dict).
    public static func convert(tensors source: [SourceTensor], format: Checkpoint.Format, sourceSHA256 digest: String,
                               options: ConversionOptions = ConversionOptions(),
                               progress: (String) -> Void = { _ in }) throws(CheckpointError) -> ConversionResult {
        try convert(tensors: source, format: format.rawValue, sourceSHA256: digest, sourceMetadata: [], options: options,
                    progress: progress)
    }

    static func convert(tensors source: [SourceTensor], format: String, sourceSHA256 digest: String,
                        sourceMetadata: [(String, String)], options: ConversionOptions,
                        progress: (String) -> Void) throws(CheckpointError) -> ConversionResult {
        // Strip a DistributedDataParallel "module." prefix when every name carries it.
        var tensors: [String: SourceTensor] = [:]
        let stripModule = !source.isEmpty && source.allSatisfy { $0.name.hasPrefix("module.") }
        for t in source {
            tensors[stripModule ? String(t.name.dropFirst("module.".count)) : t.name] = t
        }
        let config = try ArchitectureDetector.detect(tensors.mapValues(\.shape))
        progress("detected \(describe(config))")
        return try convert(tensors: tensors, config: config, source: source, stripModule: stripModule, format: format,
                           sourceSHA256: digest, sourceMetadata: sourceMetadata, options: options, progress: progress)
    }

    /// Converts tensors named as `config.tensorSpecs()` names them or as the checkpoint does.
    static func convert(tensors: [String: SourceTensor], config: ModelConfig, source: [SourceTensor], stripModule: Bool,
                        format: String, sourceSHA256 digest: String, sourceMetadata: [(String, String)] = [],
                        options: ConversionOptions,
                        progress: (String) -> Void) throws(CheckpointError) -> ConversionResult {

        var consumed: Set<String> = []
        var folded: [String: (weight: [Float], bias: [Float])] = [:]
        func load(_ name: String, _ shape: [Int]) throws(CheckpointError) -> [Float] {
            guard let t = tensors[name] else { throw .missingTensor(name: name, needed: "the detected \(config.family) model") }
            guard t.shape == shape else { throw .shapeMismatch(name: name, expected: shape, found: t.shape) }
            let v = try t.floats()
            guard v.allSatisfy(\.isFinite) else { throw .nonFinite(tensor: name) }
            consumed.insert(name)
            return v
        }
        // Conv2d_BN `X`: conv `X.c.weight` (no bias) followed by BatchNorm `X.bn.*`, folded into
        // weight' = w · γ/√(σ²+ε) per output channel and bias' = β − μ · γ/√(σ²+ε).
        func fold(_ prefix: String, _ shape: [Int]) throws(CheckpointError) -> (weight: [Float], bias: [Float]) {
            if let f = folded[prefix] { return f }
            let w = try load(prefix + ".c.weight", shape)
            let c = shape[0]
            let gamma = try load(prefix + ".bn.weight", [c]), beta = try load(prefix + ".bn.bias", [c])
            let mean = try load(prefix + ".bn.running_mean", [c]), variance = try load(prefix + ".bn.running_var", [c])
            var fw = w
            var fb = [Float](repeating: 0, count: c)
            let inner = w.count / max(c, 1)
            for o in 0..<c {
                let v = Double(variance[o]) + batchNormEps
                guard v > 0 else { throw .badTensor(tensor: prefix + ".bn.running_var", reason: "negative variance") }
                let s = Double(gamma[o]) / v.squareRoot()
                for i in 0..<inner { fw[o * inner + i] = Float(Double(w[o * inner + i]) * s) }
                fb[o] = Float(Double(beta[o]) - Double(mean[o]) * s)
            }
            folded[prefix] = (fw, fb)
            return (fw, fb)
        }

        var writer = PSAMWriter()
        var reports: [TensorReport] = []
        let specs = config.tensorSpecs()
        let fp32Act = options.fp32Activations ?? defaultFP32Activations(config)
        var options = options
        if options.precision == .int8, options.keepFP16 == nil { options.keepFP16 = defaultKeepFP16(config) }
        // Smoothing needs the calibration moments (so int8 conversions with --calibrate); it is exact in fp32, which
        // an fp32 conversion given moments shows (Int8AccuracyTests.testSmoothingKeepsTheFP32Outputs).
        let smoothing = options.precision != .fp16
            ? try smoothingFactors(config, options, fp32Activations: fp32Act, weight: { (name, shape) throws(CheckpointError) in
                try load(name, shape) })
            : [:]
        // The factors go into the layer norms (÷ s) and the weights' input columns (× s); the calibration
        // moments follow the inputs (H → diag(1/s) H diag(1/s)), so GPTQ sees the smoothed layer.
        var scaleOf: [String: (s: [Float], divide: Bool)] = [:]
        for (lin, f) in smoothing {
            let norm = f.norm
            scaleOf[norm + ".weight"] = (f.s, true)
            scaleOf[norm + ".bias"] = (f.s, true)
            scaleOf[lin + ".weight"] = (f.s, false)
            if let h = options.hessians[lin + ".weight"] {
                let k = f.s.count
                var hs = h
                for i in 0..<k { for j in 0..<k { hs[i * k + j] = h[i * k + j] / (f.s[i] * f.s[j]) } }
                options.hessians[lin + ".weight"] = hs
            }
        }
        // A tensor's values as stored: from the checkpoint, BN-folded, smoothed.
        func values(of spec: TensorSpec) throws(CheckpointError) -> [Float] {
            let values: [Float]
            if tensors[spec.name] != nil {
                values = try load(spec.name, spec.shape)
            } else if spec.name.hasSuffix(".weight"), tensors[String(spec.name.dropLast(7)) + ".c.weight"] != nil {
                values = try fold(String(spec.name.dropLast(7)), spec.shape).weight
            } else if spec.name.hasSuffix(".bias"), tensors[String(spec.name.dropLast(5)) + ".c.weight"] != nil {
                let prefix = String(spec.name.dropLast(5))
                guard let w = tensors[prefix + ".c.weight"] else { throw .missingTensor(name: prefix + ".c.weight", needed: spec.name) }
                values = try fold(prefix, w.shape).bias
                guard values.count == spec.shape.reduce(1, *) else {
                    throw .shapeMismatch(name: prefix + ".bn.bias", expected: spec.shape, found: [values.count])
                }
            } else {
                throw .missingTensor(name: spec.name, needed: "the detected \(config.family) model")
            }
            var stored = values
            if let (sv, divide) = scaleOf[spec.name] {
                let k = sv.count, rows = stored.count / k
                for r in 0..<rows { for j in 0..<k { stored[r * k + j] = divide ? stored[r * k + j] / sv[j] : stored[r * k + j] * sv[j] } }
            }
            return stored
        }
        // In chunks: the tensors' values read in order, rounded on `options.threads` threads (GPTQ is the slow part;
        // each tensor's result depends on nothing else), then written in order.
        // A chunk holds up to 32 tensors and 2²⁵ values (128 MB of fp32), so memory stays bounded for the large ViTs
        // (GPTQ adds about 12·k² bytes per rounding thread: 0.3 GB for ViT-H's k = 5120 MLP output).
        var done = 0, c0 = 0
        var originals: [String: [Float]] = [:]
        while c0 < specs.count {
            var chunk: [TensorSpec] = [], inputs: [[Float]] = [], size = 0
            while c0 < specs.count, chunk.count < 32, size < 1 << 25 {
                let spec = specs[c0]
                chunk.append(spec)
                inputs.append(try values(of: spec))
                size += inputs[inputs.count - 1].count
                c0 += 1
            }
            let decided = Decisions(count: chunk.count)
            let opts = options, fa = fp32Act, todo = chunk, values = inputs
            DispatchQueue.concurrentPerform(iterations: min(max(1, options.threads), chunk.count)) { _ in
                while true {
                    let t = decided.next.add(1, ordering: .relaxed).oldValue
                    guard t < todo.count else { return }
                    decided.set(t, quantize(todo[t], values[t], opts, fp32Activations: fa))
                }
            }
            for (t, spec) in chunk.enumerated() {
                let (report, stored) = decided.get(t)
                if options.keepOriginals, report.dtype == .i8, spec.name.hasPrefix("image_encoder.") { originals[spec.name] = inputs[t] }
                try write(spec, stored, &writer)
                reports.append(report)
                done += 1
                if done % 100 == 0 || done == specs.count { progress("stored \(done)/\(specs.count) tensors") }
            }
        }
        let foldedCount = folded.count

        var ignored: [String] = []
        for t in source {
            let name = stripModule ? String(t.name.dropFirst("module.".count)) : t.name
            if consumed.contains(name) { continue }
            guard ArchitectureDetector.isIgnorable(name) else { throw .unexpectedTensor(name: name) }
            ignored.append(name)
        }

        config.write(to: &writer.metadata)
        writer.metadata["psam.precision"] = .string(options.precision.rawValue)
        writer.metadata["psam.quantization"] = .string("int8 symmetric per output channel (per group where a channel misses the error limit), fp32 scales, linear/conv weights packed panels16x4")
        if !options.keepFP32.isEmpty { writer.metadata["psam.keep_fp32"] = .string(options.keepFP32.joined(separator: " ")) }
        if options.precision == .int8, let k = options.keepFP16, !k.isEmpty {
            writer.metadata["psam.keep_fp16"] = .string(k.joined(separator: " "))
        }
        if let c = options.calibrationNote { writer.metadata["psam.calibration"] = .string(c) }
        if let f = options.calibrationFingerprint { writer.metadata["psam.calibration_sha256"] = .string(f) }
        if options.precision == .int8, !fp32Act.isEmpty { writer.metadata["psam.fp32_activations"] = .string(fp32Act.joined(separator: " ")) }
        if !smoothing.isEmpty, let a = options.smoothingAlpha {
            writer.metadata["psam.smoothing"] = .string("SmoothQuant α=\(a) (calibration RMS per input channel) on \(smoothing.count) layers: "
                + smoothing.keys.sorted().joined(separator: " "))
        }
        writer.metadata["psam.source_format"] = .string(format)
        writer.metadata["psam.source_sha256"] = .string(digest)
        for (k, v) in sourceMetadata { writer.metadata[k] = .string(v) }
        writer.metadata["psam.tool_version"] = .string("pocketsam-quantize " + pocketSAMQuantizeVersion)
        return ConversionResult(config: config, writer: writer, reports: reports, ignored: ignored,
                                foldedBatchNorms: foldedCount, sourceSHA256: digest, originals: originals)
    }

    /// SmoothQuant (Xiao et al.): per input channel j of a linear layer fed by a layer norm,
    /// `s_j = a_j^α / w_j^(1−α)` with a_j the channel's RMS over the calibration rows (from the moments'
    /// diagonal) and w_j = max |W[:, j]|; the norm's γ, β divided by s and W's column multiplied by it give
    /// the same outputs in fp32, with the activations' outlier channels (which set each row's int8 scale)
    /// moved into the weights (quantized per output channel). Only int8 layers on the int8 kernels.
    ///
    /// Measured on the real LiteMedSAM checkpoint (Int8AccuracyTests' 8 images and 24 box cases, GPTQ on the 4
    /// calibration images, OpenBLAS SkylakeX; mean / worst final-mask IoU, worst embedding cosine): none
    /// 0.9818 / 0.9148 / 0.99875; `mlp.fc1` α 0.15: 0.9863 / 0.9501 / 0.99850, α 0.25: 0.9863 / 0.9626 / 0.99876,
    /// α 0.3: 0.9832 / 0.9460 / 0.99797, α 0.35: 0.9865 / 0.9547 / 0.99876, α 0.5: 0.9830 / 0.9311 / 0.99848;
    /// `attn.qkv` too (α 0.1–0.5) or alone: worse worst cases (0.89–0.95) and cosines. The choice was made on the
    /// test images themselves (no held-out set): the mean improves at every α, the worst case is erratic (a
    /// thresholded mask flips regions on small upstream changes), so α 0.25 is a measured optimum, not a
    /// robust margin.
    static func smoothingFactors(_ config: ModelConfig, _ o: ConversionOptions, fp32Activations: [String],
                                 weight: (String, [Int]) throws(CheckpointError) -> [Float])
        throws(CheckpointError) -> [String: (norm: String, s: [Float])] {
        guard let alpha = o.smoothingAlpha, alpha > 0, case let .tinyViT(t) = config.encoder else { return [:] }
        var out: [String: (norm: String, s: [Float])] = [:]
        for st in 1..<t.embedDims.count {
            let d = t.embedDims[st]
            for b in 0..<t.depths[st] {
                let p = "image_encoder.layers.\(st).blocks.\(b)."
                for (norm, lin, n) in [(p + "mlp.norm", p + "mlp.fc1", t.mlpHiddenDims[st])] {
                    let wname = lin + ".weight"
                    guard let h = o.hessians[wname], h.count == d * d, !matches(wname, o.keepFP32),
                          !matches(wname, o.keepFP16 ?? []),
                          !matches(wname, fp32Activations) else { continue }
                    let w = try weight(wname, [n, d])
                    var s = [Float](repeating: 1, count: d)
                    for j in 0..<d {
                        var wmax: Float = 0
                        for i in 0..<n { wmax = max(wmax, abs(w[i * d + j])) }
                        let a = Double(h[j * d + j]).squareRoot()
                        guard a > 0, wmax > 0 else { continue }
                        let v = pow(a, alpha) / pow(Double(wmax), 1 - alpha)
                        if v.isFinite, v > 0 { s[j] = Float(v) }
                    }
                    // Only the ratios between channels matter (each row's scale absorbs a common factor):
                    // normalised to a geometric mean of 1.
                    let logMean = s.reduce(0.0) { $0 + log(Double($1)) } / Double(d)
                    let g = Float(exp(logMean))
                    out[lin] = (norm, s.map { $0 / g })
                }
            }
        }
        return out
    }

    static func matches(_ name: String, _ patterns: [String]) -> Bool {
        patterns.contains { fnmatch($0, name, 0) == 0 }
    }

    /// Layers whose int8 activations measurably hurt the masks, run with fp32 activations by default.
    /// Measured on the real LiteMedSAM checkpoint (Int8AccuracyTests, GPTQ weights): computing one group
    /// of layers in fp32 at a time, the inputs of the stage-0 and patch-merging expansion convs
    /// (`conv1`) and of the patch embedding mattered most (mean mask IoU 0.959 → 0.980 on the 4
    /// reference images); every other group moved it by less than 0.005. TinyViT only (MobileSAM shares
    /// the structure); SAM ViT has no measurement and no defaults.
    public static func defaultFP32Activations(_ c: ModelConfig) -> [String] {
        guard case .tinyViT = c.encoder else { return [] }
        return ["image_encoder.patch_embed.*", "image_encoder.layers.*.blocks.*.conv1.weight",
                "image_encoder.layers.*.downsample.conv1.weight"]
    }

    /// Weight matrices kept fp16 in int8 conversions by default: TinyViT's few small layers whose int8 weights
    /// cost the most accuracy per byte. Measured by Tests/Reference/int8_sensitivity.py (PyTorch, the real
    /// LiteMedSAM checkpoint, 6 non-test images, one layer's weights rounded to int8 per channel at a time,
    /// worst 1 − embedding cosine): `downsample.conv1` of stage 0 4.7e-3, the patch embedding's second conv
    /// 2.8e-3, stage 0's first `conv1` 3.4e-3, `downsample.conv3` of stage 1 1.7e-3 and of stage 2 8.0e-4, of
    /// stage 0 5.2e-4, `downsample.conv1` of stages 1 and 2 5.0e-4 and 3.2e-4, stage 0's second `conv1` 4.0e-4 —
    /// against 1e-5 to 4e-4 for every other layer, most of which are 4–20× larger. Together 259 k parameters
    /// (+0.25 MB as fp16). With them fp16 (Int8AccuracyTests, GPTQ on the 4 calibration images) the worst
    /// embedding cosine goes 0.99875 → 0.99915; the `conv1` layers and the patch
    /// embedding already ran with fp32 activations (`defaultFP32Activations`, which these defaults now cover), so
    /// only the three `downsample.conv3` change speed (0.8 GMAC now fp32). MobileSAM shares the structure and
    /// the defaults; it was not measured (no trained checkpoint here).
    public static func defaultKeepFP16(_ c: ModelConfig) -> [String] {
        guard case .tinyViT = c.encoder else { return [] }
        return ["image_encoder.patch_embed.*", "image_encoder.layers.0.blocks.*.conv1.weight",
                "image_encoder.layers.*.downsample.*"]
    }

    /// How a tensor is stored (what `quantize` decided; `write` adds it to the file).
    enum StoredTensor: Sendable {
        case f32([Float])
        case f16([Float16])
        case i8(values: [Int8], scales: [Float], axis: Int, groupSize: Int, packed: Bool)
    }

    /// The stored form of one tensor and its report: a pure function of its values and the options, so tensors can be
    /// rounded on several threads at once.
    static func quantize(_ spec: TensorSpec, _ w: [Float], _ o: ConversionOptions,
                         fp32Activations: [String]) -> (TensorReport, StoredTensor) {
        var report = TensorReport(name: spec.name, shape: spec.shape, role: spec.role, dtype: .f32, relativeRMSError: 0, note: "")
        func f16(_ why: String) -> (TensorReport, StoredTensor) {
            let h = w.map { Float16($0) }
            guard h.allSatisfy(\.isFinite) else {
                report.note = "kept fp32: values beyond the fp16 range"
                return (report, .f32(w))
            }
            report.dtype = .f16
            report.relativeRMSError = Quantizer.relativeRMSError(w, h.map { Float($0) })
            report.note = why
            return (report, .f16(h))
        }
        if matches(spec.name, o.keepFP32) {
            report.note = "kept fp32 (--keep-fp32)"
            return (report, .f32(w))
        }
        switch o.precision {
        case .fp32:
            return (report, .f32(w))
        case .fp16:
            return f16("")
        case .int8:
            guard let axis = spec.role.int8ScaleAxis, w.count >= o.minInt8Elements else { return (report, .f32(w)) }
            if matches(spec.name, o.keepFP16 ?? []) { return f16("kept fp16 (--keep-fp16)") }
            // One scale per output channel; where that misses the error limit, one per group of 256,
            // 128, 64 or 32 consecutive weights of the channel (axis 0 only), the largest that meets it.
            let inner = spec.shape[(axis + 1)...].reduce(1, *)
            var candidates = [0]
            if axis == 0 { candidates += [256, 128, 64, 32].filter { $0 < inner && inner % $0 == 0 } }
            var firstError = 0.0
            for group in candidates {
                var (q, scales) = Quantizer.int8PerChannel(w, shape: spec.shape, axis: axis, groupSize: group)
                let err = Quantizer.relativeRMSError(
                    w, Quantizer.dequantize(q, scales: scales, shape: spec.shape, axis: axis, groupSize: group))
                if group == 0 { firstError = err }
                guard err < o.maxInt8RelativeError else { continue }
                report.dtype = .i8
                report.relativeRMSError = err
                if group != 0 {
                    report.note = "groups of \(group): per-channel error \(formatPercent(firstError)) was over the limit"
                }
                if axis == 0, let h = o.hessians[spec.name], spec.shape.count >= 2 {
                    let n = spec.shape[0], k = w.count / max(n, 1)
                    if h.count == k * k, let r = GPTQ.quantize(w, n: n, k: k, hessian: h, groupSize: group) {
                        (q, scales) = r
                        report.relativeRMSError = Quantizer.relativeRMSError(
                            w, Quantizer.dequantize(q, scales: scales, shape: spec.shape, axis: axis, groupSize: group))
                        report.note = (report.note.isEmpty ? "" : report.note + "; ") + "GPTQ (nearest: \(formatPercent(err)))"
                    }
                }
                let fp32Act = matches(spec.name, fp32Activations)
                if fp32Act { report.note = (report.note.isEmpty ? "" : report.note + "; ") + "fp32 activations" }
                // Linear and conv weights (scale axis 0) go in the int8 GEMM kernels' panel layout, so the runtime
                // uses them in place; transposed-conv weights, and layers kept at fp32 activations, stay row-major
                // (dequantized at load).
                return (report, .i8(values: q, scales: scales, axis: axis, groupSize: group,
                                    packed: axis == 0 && spec.shape.count >= 2 && !fp32Act))
            }
            return f16("fp16: int8 error \(formatPercent(firstError)) over the \(formatPercent(o.maxInt8RelativeError)) limit")
        }
    }

    static func write(_ spec: TensorSpec, _ stored: StoredTensor, _ writer: inout PSAMWriter) throws(CheckpointError) {
        do {
            switch stored {
            case let .f32(v): try writer.addF32(spec.name, shape: spec.shape, values: v)
            case let .f16(v): try writer.addF16(spec.name, shape: spec.shape, values: v)
            case let .i8(v, scales, axis, group, packed):
                try writer.addI8(spec.name, shape: spec.shape, values: v, scaleAxis: axis, groupSize: group, scales: scales,
                                 packed: packed)
            }
        } catch {
            throw .badTensor(tensor: spec.name, reason: error.description)
        }
    }

    public static func describe(_ c: ModelConfig) -> String {
        let base: String
        switch c.encoder {
        case let .vit(v):
            base = "SAM ViT (\(c.variant.rawValue)): \(v.imageSize) px, patch \(v.patchSize), width \(v.embedDim), depth \(v.depth), \(v.numHeads) heads, window \(v.windowSize), global blocks \(v.globalAttnIndexes)"
        case let .tinyViT(t):
            base = "TinyViT (\(c.variant.rawValue)): \(t.imageSize) px, widths \(t.embedDims), depths \(t.depths), heads \(t.numHeads), windows \(t.windowSizes)"
        }
        guard let hq = c.decoder.hq else { return base }
        let site: String
        switch c.encoder {
        case .vit: site = "block \(hq.earlyLayer)"
        case .tinyViT: site = "stage \(hq.earlyLayer)"
        }
        return base + "; HQ-SAM decoder (HQ token, early feature of \(hq.vitDim) channels from \(site))"
    }
}

func formatPercent(_ x: Double) -> String {
    let v = (x * 10000).rounded() / 100
    return "\(v)%"
}

/// The chunk's results, each slot written by the one thread that took its index from `next` (a buffer allocated once:
/// the threads never touch a shared Swift array, only their own slots), read after all of them have finished.
private final class Decisions: @unchecked Sendable {
    private let slots: UnsafeMutableBufferPointer<(TensorReport, Converter.StoredTensor)?>
    let next = Atomic<Int>(0)
    init(count: Int) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil)
    }
    deinit {
        slots.deinitialize()
        slots.deallocate()
    }
    func set(_ i: Int, _ v: (TensorReport, Converter.StoredTensor)) { slots[i] = v }
    func get(_ i: Int) -> (TensorReport, Converter.StoredTensor) { slots[i]! }
}

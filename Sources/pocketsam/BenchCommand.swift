import ArgumentParser
import PocketSAM
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure encoder and per-prompt decoder time, throughput, arena and RSS.",
        discussion: """
            Reports medians (and ranges) over --runs encoder passes and --prompts box prompts. Several --model
            options are measured side by side, their runs interleaved, with ratios to the first. The first prompt
            after an image also makes the decoder's per-image part (reported as "decoder setup"). --json adds
            every figure as one JSON object on the last line. Example (int8 against fp32):
              pocketsam bench --model lite_medsam.psam --model lite_medsam_fp32.psam --image cell.png --json
            """)
    @Option(help: "A .psam model (repeat to compare models in one run).") var model: [String]
    @Option(help: "Image (default: a synthetic gradient at the model's input size).") var image: String?
    @Option(help: "Encoder runs per model.") var runs = 5
    @Option(help: "Decoder prompts per model.") var prompts = 20
    @Option(help: "Also time N box prompts answered by one predict(prompts:) call (psam_predict_batch) against N predict calls, side by side, --runs times (0: off).")
    var batch = 0
    @Option(help: "Threads.") var threads = 2
    @Option(help: "auto (int8 kernels for int8 weights) or fp32 (dequantize everything at load).") var compute = "auto"
    @Flag(help: "Measure automatic mask generation instead (pocketsam everything), by default with every prompt decoded and postprocessed (--pred-iou-thresh 0 --stability-score-thresh 0); with --hierarchical, dense and hierarchical side by side.")
    var everything = false
    @Flag(help: "Decode three masks per prompt (SAM's multimask_output) instead of one.") var multimask = false
    @Flag(help: "Also print every figure as one JSON object on the last line of standard output.") var json = false
    @OptionGroup var generator: GeneratorArguments

    func run() throws {
        if everything { return try runEverything() }
        guard runs >= 1, prompts >= 1, threads >= 1 else { throw ValidationError("--runs, --prompts and --threads must be ≥ 1") }
        guard !model.isEmpty else { throw ValidationError("give at least one --model") }
        guard let mode = ComputeMode(rawValue: compute) else { throw ValidationError("--compute must be auto or fp32") }
        var models: [Model] = []
        for path in model {
            do { models.append(try Model(path: path, compute: mode)) } catch {
                stderrWrite("pocketsam: error: \(path): \(error)\n")
                throw ExitCode(2)
            }
        }
        let img: PocketSAMIO.Image
        if let path = image { img = try loadImage(path) } else {
            let s = models[0].config.encoder.imageSize
            img = PocketSAMIO.Image(width: s, height: s, channels: 3,
                                    pixels: (0..<(s * s * 3)).map { UInt8(truncatingIfNeeded: ($0 / 3) % s + $0 % 3 * 40) })
        }
        let sessions = models.map { Session(model: $0, threads: threads) }
        var enc = [[Double]](repeating: [], count: models.count), macs = [Int](repeating: 0, count: models.count)
        func encode(_ i: Int) throws -> Double {
            let before = sessions[i].multiplyAccumulates
            let t0 = now()
            try img.pixels.withUnsafeBufferPointer {
                try sessions[i].setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            let t = now() - t0
            macs[i] = sessions[i].multiplyAccumulates - before
            return t
        }
        for i in models.indices { _ = try encode(i) }  // warm-up: first-touch of the arena
        for r in 0..<runs {
            stderrWrite("bench: encoder run \(r + 1)/\(runs)\r")
            for i in models.indices { enc[i].append(try encode(i)) }
        }
        stderrWrite("\n")
        var dec = [[Double]](repeating: [], count: models.count), decMACs = [Int](repeating: 0, count: models.count)
        var setup = [Double](repeating: 0, count: models.count)
        let w = Float(img.width), h = Float(img.height)
        var pred = Prediction()
        for p in 0..<prompts {
            let f = Float(p) / Float(prompts)
            let box = BoxPrompt(x0: w * 0.1 * f, y0: h * 0.1, x1: w * (0.5 + 0.4 * f), y1: h * 0.8)
            for i in models.indices {
                let m0 = sessions[i].multiplyAccumulates
                let t0 = now()
                try sessions[i].predict(box: box, multimask: multimask, into: &pred)
                dec[i].append(now() - t0)
                if p == 0 {
                    setup[i] = sessions[i].decoderSetupSeconds
                } else {
                    decMACs[i] = sessions[i].multiplyAccumulates - m0
                }
            }
        }
        // The first prompt made the decoder's per-image part: without it, that prompt's time is a prompt's.
        for i in models.indices { dec[i][0] -= setup[i] }
        // Many prompts per call against one call per prompt, alternating.
        var single = [[Double]](repeating: [], count: models.count), batched = single
        if batch > 0 {
            let boxes = (0..<batch).map { p -> Prompt in
                let f = Float(p) / Float(batch)
                return Prompt(box: BoxPrompt(x0: w * 0.4 * f, y0: h * 0.3 * f, x1: w * (0.5 + 0.5 * f), y1: h * (0.6 + 0.4 * f)),
                              multimask: multimask)
            }
            for r in 0..<runs {
                stderrWrite("bench: batch run \(r + 1)/\(runs)\r")
                for i in models.indices {
                    var t0 = now()
                    for b in boxes { try sessions[i].predict(box: b.box, multimask: multimask, into: &pred) }
                    single[i].append(now() - t0)
                    t0 = now()
                    _ = try sessions[i].predict(prompts: boxes)
                    batched[i].append(now() - t0)
                }
            }
            stderrWrite("\n")
        }
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        let peak = Kernels.measuredPeakMACsPerSecond(threads: threads)
        var js = JSONObject()
        js["image"] = .object(["width": .int(img.width), "height": .int(img.height)])
        js["threads"] = .int(threads)
        js["int8_kernel"] = .string(Kernels.name)
        js["kernels"] = .string(Kernels.summary)
        js["measured_int8_peak_gmac_per_s"] = peak.map { .number($0 / 1e9) } ?? .null
        js["masks_per_prompt"] = .int(multimask ? 3 : 1)
        print("image \(img.width)x\(img.height), threads \(threads), int8 kernels: \(Kernels.name)")
        print("kernels: \(Kernels.summary)")
        if let peak { print("measured int8 \(Kernels.name) peak: \(format3(peak / 1e9)) GMAC/s on \(threads) threads") }
        var jm: [JSONValue] = []
        for i in models.indices {
            let m = models[i]
            let e = Stats(enc[i]), d = Stats(dec[i])
            let gmacs = Double(macs[i]) / e.median / 1e9
            print("model: \(model[i]) (\(m.config.variant.rawValue), \(m.file.storage.count) bytes, \(m.int8Layers) int8 layers, \(m.int16Layers) int16 layers)")
            var line = "  encoder: median \(format3(e.median * 1000)) ms over \(runs) runs (range \(format3(e.min * 1000))–\(format3(e.max * 1000)) ms), \(format3(Double(macs[i]) / 1e9)) GMAC, \(format3(gmacs)) GMAC/s"
            let fraction = peak.map { gmacs * 1e9 / $0 }
            if let fraction, m.int8Layers > 0 { line += " (\(format3(100 * fraction))% of the int8 peak)" }
            if i > 0 { line += "; \(format3(e.median / Stats(enc[0]).median))x the first model's time" }
            print(line)
            var dl = "  decoder: median \(format3(d.median * 1000)) ms per prompt over \(prompts) prompts (range \(format3(d.min * 1000))–\(format3(d.max * 1000)) ms), \(multimask ? 3 : 1) mask(s), \(format3(Double(decMACs[i]) / 1e6)) MMAC"
            if i > 0 { dl += "; \(format3(d.median / Stats(dec[0]).median))x" }
            print(dl)
            print("  decoder setup (once per image, at its first prompt without a mask input): \(format3(setup[i] * 1000)) ms")
            var batchJSON: JSONValue = .null
            if batch > 0 {
                let a = Stats(single[i]), b = Stats(batched[i])
                print("  \(batch) prompts: one call \(format3(b.median * 1000)) ms (range \(format3(b.min * 1000))–\(format3(b.max * 1000))), "
                      + "\(batch) calls \(format3(a.median * 1000)) ms (range \(format3(a.min * 1000))–\(format3(a.max * 1000))); "
                      + "\(format3(b.median / a.median))x")
                batchJSON = .object(["prompts": .int(batch), "one_call_ms": b.json(scale: 1000), "separate_calls_ms": a.json(scale: 1000),
                                     "ratio": .number(b.median / a.median)])
            }
            let planned = try? m.plannedArenaBytes()
            // A default session's arena grows in whole chunks, so what it holds can exceed what a fixed arena needs.
            print("  arena: \(sessions[i].arenaPeakBytes) bytes held (grown in chunks); a fixed arena needs \(planned.map(String.init) ?? "?") bytes for any image and prompt")
            jm.append(.object([
                "path": .string(model[i]), "variant": .string(m.config.variant.rawValue), "file_bytes": .int(m.file.storage.count),
                "int8_layers": .int(m.int8Layers), "int16_layers": .int(m.int16Layers),
                "encoder_ms": e.json(scale: 1000), "encoder_gmac": .number(Double(macs[i]) / 1e9), "encoder_gmac_per_s": .number(gmacs),
                "encoder_fraction_of_int8_peak": m.int8Layers > 0 ? fraction.map { .number($0) } ?? .null : .null,
                "decoder_ms_per_prompt": d.json(scale: 1000), "decoder_mmac_per_prompt": .number(Double(decMACs[i]) / 1e6),
                "decoder_setup_ms": .number(setup[i] * 1000), "arena_bytes_held": .int(sessions[i].arenaPeakBytes),
                "planned_arena_bytes": planned.map { .int($0) } ?? .null, "batch": batchJSON,
            ]))
        }
        // ru_maxrss before the arena planning above (a measuring pass on reserved address space).
        print("peak RSS of the process: \(ru.ru_maxrss * 1024) bytes")
        js["models"] = .array(jm)
        js["peak_rss_bytes"] = .int(ru.ru_maxrss * 1024)
        if json { print(JSONValue.fields(js.fields).text) }
    }
}

/// Median and range of a sample.
struct Stats {
    let median: Double, min: Double, max: Double
    init(_ a: [Double]) {
        let s = a.sorted()
        median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        min = s.first ?? 0
        max = s.last ?? 0
    }
    func json(scale: Double) -> JSONValue {
        .object(["median": .number(median * scale), "min": .number(min * scale), "max": .number(max * scale)])
    }
}

/// Just enough JSON for the benchmark's figures: keys in insertion order.
indirect enum JSONValue {
    case int(Int), number(Double), string(String), array([JSONValue]), object(KeyValuePairs<String, JSONValue>), null
    case fields([(String, JSONValue)])

    var text: String {
        switch self {
        case let .int(v): return String(v)
        case let .number(v): return v.isFinite ? String(v) : "null"
        case let .string(s):
            var o = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": o += "\\\""
                case "\\": o += "\\\\"
                case "\n": o += "\\n"
                default: o += u.value < 0x20 ? "\\u00" + String(u.value, radix: 16).leftPadded(2) : String(u)
                }
            }
            return o + "\""
        case let .array(a): return "[" + a.map(\.text).joined(separator: ", ") + "]"
        case let .object(kv): return "{" + kv.map { JSONValue.string($0.key).text + ": " + $0.value.text }.joined(separator: ", ") + "}"
        case let .fields(kv): return "{" + kv.map { JSONValue.string($0.0).text + ": " + $0.1.text }.joined(separator: ", ") + "}"
        case .null: return "null"
        }
    }
}

/// An ordered JSON object under construction.
struct JSONObject {
    private(set) var fields: [(String, JSONValue)] = []
    subscript(key: String) -> JSONValue? {
        get { fields.first { $0.0 == key }?.1 }
        set {
            fields.removeAll { $0.0 == key }
            if let newValue { fields.append((key, newValue)) }
        }
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

extension Bench {
    func runEverything() throws {
        guard runs >= 1, threads >= 1 else { throw ValidationError("--runs and --threads must be ≥ 1") }
        guard let mode = ComputeMode(rawValue: compute) else { throw ValidationError("--compute must be auto or fp32") }
        guard let path = model.first, model.count == 1 else { throw ValidationError("--everything takes one --model") }
        guard let imagePath = image else { throw ValidationError("--everything needs --image") }
        let m: Model
        do { m = try Model(path: path, compute: mode) } catch {
            stderrWrite("pocketsam: error: \(path): \(error)\n")
            throw ExitCode(2)
        }
        let img = try loadImage(imagePath)
        var modes: [(String, MaskGeneratorOptions)] = []
        var dense = generator.options(defaultPredIoU: 0, defaultStability: 0)
        dense.hierarchical = false
        modes.append(("dense", dense))
        if generator.hierarchical {
            var h = dense
            h.hierarchical = true
            modes.append(("hierarchical", h))
        }
        let session = Session(model: m, threads: threads)
        var results = [[GenerationResult]](repeating: [], count: modes.count)
        for r in 0..<runs {
            for (i, (name, o)) in modes.enumerated() {
                let res = try img.pixels.withUnsafeBufferPointer { px in
                    try session.generate(pixels: px.baseAddress!, width: img.width, height: img.height, channels: img.channels,
                                         options: o) { p in
                        stderrWrite("bench: run \(r + 1)/\(runs) \(name): \(p.stage) \(p.pointsDone)/\(p.pointsTotal)   \r")
                    }
                }
                results[i].append(res)
            }
        }
        stderrWrite("\n")
        func median(_ a: [Double]) -> Double { let s = a.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
        let o = dense
        print("everything: image \(img.width)x\(img.height), model \(path) (\(m.config.variant.rawValue), \(m.int8Layers) int8 layers), "
              + "threads \(threads), int8 kernels: \(Kernels.name)")
        print("  points per side \(o.pointsPerSide ?? 0), crop layers \(o.cropNLayers), pred IoU thresh \(o.predIoUThresh), "
              + "stability thresh \(o.stabilityScoreThresh), medians of \(runs) run(s)")
        var jmodes: [JSONValue] = []
        for (i, (name, _)) in modes.enumerated() {
            let rs = results[i]
            let s = rs[rs.count / 2].stats
            let total = median(rs.map(\.stats.totalSeconds)), dec = median(rs.map(\.stats.decoderSeconds))
            print("  \(name): total \(format3(total)) s; encoder \(format3(median(rs.map(\.stats.encoderSeconds)))) s, "
                  + "decoder \(format3(dec)) s, masks (upscale, stability, RLE) \(format3(median(rs.map(\.stats.postprocessSeconds)))) s, "
                  + "suppression \(format3(median(rs.map(\.stats.nmsSeconds)))) s, clean-up \(format3(median(rs.map(\.stats.cleanupSeconds)))) s")
            jmodes.append(.object([
                "mode": .string(name), "total_s": Stats(rs.map(\.stats.totalSeconds)).json(scale: 1),
                "encoder_s": .number(median(rs.map(\.stats.encoderSeconds))), "decoder_s": .number(dec),
                "postprocess_s": .number(median(rs.map(\.stats.postprocessSeconds))), "nms_s": .number(median(rs.map(\.stats.nmsSeconds))),
                "decoder_calls": .int(s.decoderCalls), "ms_per_prompt": .number(1000 * dec / Double(max(1, s.decoderCalls))),
                "decoder_gmac_per_s": .number(Double(s.decoderMACs) / dec / 1e9), "masks_kept": .int(rs[rs.count / 2].masks.count),
            ]))
            print("    decoder calls \(s.decoderCalls) (\(format3(Double(s.decoderCalls) / dec)) per second, "
                  + "\(format3(1000 * dec / Double(max(1, s.decoderCalls)))) ms each, \(format3(Double(s.decoderMACs) / Double(max(1, s.decoderCalls)) / 1e6)) MMAC each, "
                  + "\(format3(Double(s.decoderMACs) / dec / 1e9)) GMAC/s); masks upscaled \(s.masksUpscaled), kept \(rs[rs.count / 2].masks.count)")
            if i > 0 {
                let d0 = results[0][results[0].count / 2].stats.decoderCalls
                print("    decoder calls \(format3(100 * Double(s.decoderCalls) / Double(max(1, d0))))% of dense; total time \(format3(total / median(results[0].map(\.stats.totalSeconds))))x dense")
            }
        }
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        if json {
            print(JSONValue.object(["everything": .object(["image": .object(["width": .int(img.width), "height": .int(img.height)]),
                                                            "model": .string(path), "threads": .int(threads), "int8_kernel": .string(Kernels.name),
                                                            "points_per_side": .int(o.pointsPerSide ?? 0), "modes": .array(jmodes),
                                                            "peak_rss_bytes": .int(ru.ru_maxrss * 1024)])]).text)
        }
    }
}


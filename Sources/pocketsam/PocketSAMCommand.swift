import ArgumentParser
import PocketSAM
import PocketSAMFormat
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

@main
struct PocketSAMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketsam",
        abstract: "Segment Anything on the CPU.",
        discussion: """
        Example:
          pocketsam segment --model lite_medsam.psam --image cell.png --box 355,300,500,448 --out out/
        """,
        subcommands: [Segment.self, Everything.self, Info.self, Bench.self]
    )
}

func stderrWrite(_ s: String) {
    var b = Array(s.utf8)
    _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func loadModel(_ path: String) throws -> Model {
    do { return try Model(path: path) } catch {
        stderrWrite("pocketsam: error: \(error)\n")
        throw ExitCode(2)
    }
}

func loadImage(_ path: String) throws -> PocketSAMIO.Image {
    do { return try ImageIO.read(path) } catch {
        stderrWrite("pocketsam: error: \(error)\n")
        throw ExitCode(3)
    }
}

func parseFloats(_ s: String, count: ClosedRange<Int>, what: String) throws -> [Float] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { Float(String($0.filter { $0 != " " })) }
    guard count.contains(parts.count), parts.allSatisfy({ $0 != nil }) else {
        throw ValidationError("\(what) '\(s)' should be \(count.lowerBound == count.upperBound ? "\(count.lowerBound)" : "\(count.lowerBound) or \(count.upperBound)") comma-separated numbers")
    }
    return parts.map { $0! }
}

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment an image with point, box and mask prompts.",
        discussion: """
        Coordinates are pixels of the original image (x right, y down). Writes mask_N.png (0/255), \
        overlay.png (masks tinted over the image, prompts drawn), lowres.npy (logits for --mask-input) \
        and result.json (predicted IoU, stability, area, timings) into --out.

        Example:
          pocketsam segment --model lite_medsam.psam --image cell.png --box 355,300,500,448 --point 428,372 --out out/

        Exit codes: 0 done, 1 bad prompt, 2 bad model file, 3 bad image, 4 output not written.
        """)

    @Option(help: "The .psam model.") var model: String
    @Option(help: "JPEG or PNG image.") var image: String
    @Option(name: .customLong("point"), help: "x,y[,label]: label 1 foreground (default), 0 background. Repeatable.")
    var points: [String] = []
    @Option(help: "x0,y0,x1,y1 box.") var box: String?
    @Option(name: .customLong("mask-input"), help: "Low-res logits (.npy) from an earlier run's lowres.npy.")
    var maskInput: String?
    @Flag(help: "Return 3 masks (for ambiguous single points) instead of 1.") var multimask = false
    @Option(help: "Output folder (created).") var out: String
    @Option(help: "Threads.") var threads = 2

    func run() throws {
        var prompts: [PointPrompt] = []
        for p in points {
            let v = try parseFloats(p, count: 2...3, what: "--point")
            if v.count == 3, v[2] != 0, v[2] != 1 { throw ValidationError("--point label must be 0 or 1, not \(v[2])") }
            prompts.append(PointPrompt(x: v[0], y: v[1], positive: v.count == 2 || v[2] == 1))
        }
        let boxPrompt = try box.map { s -> BoxPrompt in
            let v = try parseFloats(s, count: 4...4, what: "--box")
            return BoxPrompt(x0: v[0], y0: v[1], x1: v[2], y1: v[3])
        }
        let m = try loadModel(model)
        let img = try loadImage(image)
        var mask: [Float]?
        if let mi = maskInput {
            do {
                let a = try NPY.decode(try ImageIO.readFile(mi))
                mask = Array(a.floats.prefix(a.shape.last.map { $0 * $0 } ?? 0))
            } catch {
                stderrWrite("pocketsam: error: --mask-input: \(error)\n")
                throw ExitCode(1)
            }
        }
        let session = Session(model: m, threads: threads)
        let t0 = now()
        do {
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(3)
        }
        let t1 = now()
        let pred: Prediction
        do {
            pred = try session.predict(points: prompts, box: boxPrompt, maskInput: mask, multimask: multimask)
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(1)
        }
        let t2 = now()
        do {
            try writeOutputs(pred, img, prompts, boxPrompt, encode: t1 - t0, decode: t2 - t1)
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(4)
        }
    }

    func writeOutputs(_ p: Prediction, _ img: PocketSAMIO.Image, _ pts: [PointPrompt], _ box: BoxPrompt?,
                      encode: Double, decode: Double) throws {
        if mkdir(out, 0o755) != 0 && errno != EEXIST {
            throw ImageIOError.cannotWrite(path: out, reason: String(cString: strerror(errno)))
        }
        let hw = p.width * p.height
        var rgb = [UInt8](repeating: 0, count: hw * 3)
        for i in 0..<hw { for c in 0..<3 { rgb[i * 3 + c] = img.pixels[i * img.channels + (img.channels == 3 ? c : 0)] } }
        let colors: [(Float, Float, Float)] = [(30, 144, 255), (255, 140, 0), (50, 205, 50)]
        var areas: [Int] = []
        for k in 0..<p.count {
            let m = Array(p.masks[(k * hw)..<((k + 1) * hw)])
            areas.append(m.reduce(0) { $0 + Int($1) })
            try ImageIO.writePNG(PocketSAMIO.Image(width: p.width, height: p.height, channels: 1, pixels: m.map { $0 * 255 }),
                                 to: "\(out)/mask_\(k).png")
            let col = colors[k % colors.count]
            for i in 0..<hw where m[i] != 0 {
                rgb[i * 3] = UInt8(0.45 * Float(rgb[i * 3]) + 0.55 * col.0)
                rgb[i * 3 + 1] = UInt8(0.45 * Float(rgb[i * 3 + 1]) + 0.55 * col.1)
                rgb[i * 3 + 2] = UInt8(0.45 * Float(rgb[i * 3 + 2]) + 0.55 * col.2)
            }
        }
        func put(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
            guard x >= 0, y >= 0, x < p.width, y < p.height else { return }
            rgb[(y * p.width + x) * 3] = c.0
            rgb[(y * p.width + x) * 3 + 1] = c.1
            rgb[(y * p.width + x) * 3 + 2] = c.2
        }
        if let b = box {
            let x0 = Int(b.x0), y0 = Int(b.y0), x1 = Int(b.x1), y1 = Int(b.y1)
            for t in 0..<2 {
                for x in x0...max(x0, x1) { put(x, y0 + t, (0, 255, 0)); put(x, y1 - t, (0, 255, 0)) }
                for y in y0...max(y0, y1) { put(x0 + t, y, (0, 255, 0)); put(x1 - t, y, (0, 255, 0)) }
            }
        }
        for pt in pts {
            let c: (UInt8, UInt8, UInt8) = pt.positive ? (0, 255, 0) : (255, 0, 0)
            for dy in -3...3 { for dx in -3...3 where dx * dx + dy * dy <= 9 { put(Int(pt.x) + dx, Int(pt.y) + dy, c) } }
        }
        try ImageIO.writePNG(PocketSAMIO.Image(width: p.width, height: p.height, channels: 3, pixels: rgb), to: "\(out)/overlay.png")
        try NPY.write(NPY.encode(p.lowResLogits, shape: [p.count, p.lowResSize, p.lowResSize]), to: "\(out)/lowres.npy")
        func list(_ a: [Float]) -> String { "[" + a.map { String($0) }.joined(separator: ", ") + "]" }
        let json = """
        {"width": \(p.width), "height": \(p.height), "masks": \(p.count),
         "iou": \(list(p.iou)), "stability": \(list(p.stability)), "area": [\(areas.map(String.init).joined(separator: ", "))],
         "encode_ms": \(Int(encode * 1000)), "decode_ms": \((decode * 10000).rounded() / 10)}

        """
        try NPY.write(Array(json.utf8), to: "\(out)/result.json")
        print("masks: \(p.count), predicted IoU \(list(p.iou)), area \(areas) px; encode \(Int(encode * 1000)) ms, decode \((decode * 10000).rounded() / 10) ms")
        print("overlay: \(out)/overlay.png")
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a .psam model.")
    @Argument(help: "The .psam model.") var model: String

    func run() throws {
        let m = try loadModel(model)
        for (k, v) in m.file.metadata.entries { print("\(k) = \(v)") }
        var bytes: [DType: Int] = [:], counts: [DType: Int] = [:], params = 0
        for t in m.file.tensors {
            bytes[t.dtype, default: 0] += Int(t.dataLength)
            counts[t.dtype, default: 0] += 1
            params += t.elementCount
        }
        print("tensors: \(m.file.tensors.count), parameters: \(params)")
        for d in DType.allCases where counts[d] != nil { print("  \(d): \(counts[d]!) tensors, \(bytes[d]!) bytes") }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure encoder and per-prompt decoder time, throughput, arena and RSS.",
        discussion: """
            Reports medians over --runs. Several --model options are measured side by side, their runs
            interleaved, with ratios to the first. Example (int8 against fp32):
              pocketsam bench --model lite_medsam.psam --model lite_medsam_fp32.psam --image cell.png
            """)
    @Option(help: "A .psam model (repeat to compare models in one run).") var model: [String]
    @Option(help: "Image (default: a synthetic gradient at the model's input size).") var image: String?
    @Option(help: "Encoder runs per model.") var runs = 5
    @Option(help: "Decoder prompts per model.") var prompts = 20
    @Option(help: "Threads.") var threads = 2
    @Option(help: "auto (int8 kernels for int8 weights) or fp32 (dequantize everything at load).") var compute = "auto"
    @Flag(help: "Measure automatic mask generation instead (pocketsam everything), by default with every prompt decoded and postprocessed (--pred-iou-thresh 0 --stability-score-thresh 0); with --hierarchical, dense and hierarchical side by side.")
    var everything = false
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
        var dec = [[Double]](repeating: [], count: models.count)
        let w = Float(img.width), h = Float(img.height)
        for p in 0..<prompts {
            let f = Float(p) / Float(prompts)
            let box = BoxPrompt(x0: w * 0.1 * f, y0: h * 0.1, x1: w * (0.5 + 0.4 * f), y1: h * 0.8)
            for i in models.indices {
                let t0 = now()
                _ = try sessions[i].predict(box: box)
                dec[i].append(now() - t0)
            }
        }
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        func median(_ a: [Double]) -> Double { let s = a.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
        print("image \(img.width)x\(img.height), threads \(threads), int8 kernels: \(Kernels.name)")
        print("kernels: \(Kernels.summary)")
        let peak = Kernels.measuredPeakMACsPerSecond(threads: threads)
        if let peak { print("measured int8 \(Kernels.name) peak: \(format3(peak / 1e9)) GMAC/s on \(threads) threads") }
        for i in models.indices {
            let m = models[i]
            let e = median(enc[i]), d = median(dec[i])
            let gmacs = Double(macs[i]) / e / 1e9
            print("model: \(model[i]) (\(m.config.variant.rawValue), \(m.file.storage.count) bytes, \(m.int8Layers) int8 layers, \(m.int16Layers) int16 layers)")
            var line = "  encoder: median \(format3(e * 1000)) ms over \(runs) runs (min \(format3(enc[i].min()! * 1000)) ms), \(format3(Double(macs[i]) / 1e9)) GMAC, \(format3(gmacs)) GMAC/s"
            if let peak, m.int8Layers > 0 { line += " (\(format3(100 * gmacs * 1e9 / peak))% of the int8 peak)" }
            if i > 0 { line += "; \(format3(e / median(enc[0])))x the first model's time" }
            print(line)
            var dl = "  decoder: median \(format3(d * 1000)) ms per prompt over \(prompts) prompts (min \(format3(dec[i].min()! * 1000)) ms)"
            if i > 0 { dl += "; \(format3(d / median(dec[0])))x" }
            print(dl)
            let planned = (try? m.plannedArenaBytes()).map(String.init) ?? "?"
            // A default session's arena grows in whole chunks, so what it holds can exceed what a fixed arena needs.
            print("  arena: \(sessions[i].arenaPeakBytes) bytes held (grown in chunks); a fixed arena needs \(planned) bytes for any image and prompt")
        }
        print("peak RSS of the process: \(ru.ru_maxrss * 1024) bytes")
    }
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
        for (i, (name, _)) in modes.enumerated() {
            let rs = results[i]
            let s = rs[rs.count / 2].stats
            let total = median(rs.map(\.stats.totalSeconds)), dec = median(rs.map(\.stats.decoderSeconds))
            print("  \(name): total \(format3(total)) s; encoder \(format3(median(rs.map(\.stats.encoderSeconds)))) s, "
                  + "decoder \(format3(dec)) s, masks (upscale, stability, RLE) \(format3(median(rs.map(\.stats.postprocessSeconds)))) s, "
                  + "suppression \(format3(median(rs.map(\.stats.nmsSeconds)))) s, clean-up \(format3(median(rs.map(\.stats.cleanupSeconds)))) s")
            print("    decoder calls \(s.decoderCalls) (\(format3(Double(s.decoderCalls) / dec)) per second, "
                  + "\(format3(1000 * dec / Double(max(1, s.decoderCalls)))) ms each, \(format3(Double(s.decoderMACs) / Double(max(1, s.decoderCalls)) / 1e6)) MMAC each, "
                  + "\(format3(Double(s.decoderMACs) / dec / 1e9)) GMAC/s); masks upscaled \(s.masksUpscaled), kept \(rs[rs.count / 2].masks.count)")
            if i > 0 {
                let d0 = results[0][results[0].count / 2].stats.decoderCalls
                print("    decoder calls \(format3(100 * Double(s.decoderCalls) / Double(max(1, d0))))% of dense; total time \(format3(total / median(results[0].map(\.stats.totalSeconds))))x dense")
            }
        }
    }
}

func format3(_ x: Double) -> String { String((x * 1000).rounded() / 1000) }

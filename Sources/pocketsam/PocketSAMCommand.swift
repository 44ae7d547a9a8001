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
    @Flag(help: "Return 3 masks (for ambiguous single points) instead of 1. HQ-SAM models return 1 mask either way: the HQ mask plus SAM's best of the 3.") var multimask = false
    @Flag(help: "HQ-SAM models: the HQ token's mask alone (default: HQ mask + SAM mask, as the official predictor). Ignored by other models.")
    var hqTokenOnly = false
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
            pred = try session.predict(points: prompts, box: boxPrompt, maskInput: mask, multimask: multimask, hqTokenOnly: hqTokenOnly)
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
    @Flag(help: "Also plan the arena: the activation memory a session needs for any image and prompt (measured by one encoder pass on reserved address space, so it takes an encode's time).")
    var arena = false

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
        guard arena else { return }
        let planned = try m.plannedArenaBytes()
        print("planned arena: \(planned) bytes; a session needs that plus the mapped file (\(m.file.storage.count) bytes, "
              + "read in place) plus the runtime's own few tens of MB")
    }
}

func format3(_ x: Double) -> String { String((x * 1000).rounded() / 1000) }

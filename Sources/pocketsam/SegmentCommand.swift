import ArgumentParser
import PocketSAM
import PocketSAMFormat
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment an image with point, box and mask prompts.",
        discussion: """
        Coordinates are pixels of the original image (x right, y down). Writes mask_N.png (0/255), \
        overlay.png (masks tinted over the image, prompts drawn), lowres.npy (logits for --mask-input) \
        and result.json (predicted IoU, stability, area, timings) into --out.

        With --box repeated (a detector's boxes), each box is its own prompt, answered in one batched call: \
        mask_B.png per box B (mask_B_K.png with --multimask), lowres.npy holds every box's logits in order, \
        and result.json a "results" list, one entry per box.

        --embedding reads the image's embedding from `pocketsam encode` (the same .psam file) instead of \
        encoding --image; --image is then optional (only for the overlay; a gray background without it).

        Example:
          pocketsam segment --model lite_medsam.psam --image cell.png --box 355,300,500,448 --point 428,372 --out out/

        Exit codes: 0 done, 1 bad prompt, 2 bad model file, 3 bad image or embedding, 4 output not written.
        """)

    @Option(help: "The .psam model.") var model: String
    @Option(help: "JPEG or PNG image.") var image: String?
    @Option(help: "A .psemb image embedding from `pocketsam encode` with this model, instead of encoding --image.")
    var embedding: String?
    @Option(name: .customLong("point"), help: "x,y[,label]: label 1 foreground (default), 0 background. Repeatable.")
    var points: [String] = []
    @Option(name: .customLong("box"), help: "x0,y0,x1,y1 box. Repeatable: one prompt (and result) per box.")
    var boxes: [String] = []
    @Option(name: .customLong("mask-input"), help: "Low-res logits (.npy) from an earlier run's lowres.npy.")
    var maskInput: String?
    @Flag(help: "Return 3 masks (for ambiguous single points) instead of 1. HQ-SAM models return 1 mask either way: the HQ mask plus SAM's best of the 3.") var multimask = false
    @Flag(help: "HQ-SAM models: the HQ token's mask alone (default: HQ mask + SAM mask, as the official predictor). Ignored by other models.")
    var hqTokenOnly = false
    @Option(help: "Output folder (created).") var out: String
    @Option(help: "Threads.") var threads = 2

    func validate() throws {
        guard image != nil || embedding != nil else { throw ValidationError("give --image or --embedding") }
        if boxes.count > 1, !points.isEmpty || maskInput != nil {
            throw ValidationError("with several --box, each box is a prompt on its own: --point and --mask-input are not allowed")
        }
    }

    func run() throws {
        var prompts: [PointPrompt] = []
        for p in points {
            let v = try parseFloats(p, count: 2...3, what: "--point")
            if v.count == 3, v[2] != 0, v[2] != 1 { throw ValidationError("--point label must be 0 or 1, not \(v[2])") }
            prompts.append(PointPrompt(x: v[0], y: v[1], positive: v.count == 2 || v[2] == 1))
        }
        let boxPrompts = try boxes.map { s -> BoxPrompt in
            let v = try parseFloats(s, count: 4...4, what: "--box")
            return BoxPrompt(x0: v[0], y0: v[1], x1: v[2], y1: v[3])
        }
        let m = try loadModel(model)
        let img = try image.map(loadImage)
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
            if let embedding {
                let bytes = try ImageIO.readFile(embedding)
                try bytes.withUnsafeBytes { try session.setEmbedding($0) }
                if let img, let size = session.currentImageSize, size != (img.width, img.height) {
                    stderrWrite("pocketsam: error: --image is \(img.width)×\(img.height) but the embedding was made from a \(size.width)×\(size.height) image\n")
                    throw ExitCode(3)
                }
            } else if let img {
                try img.pixels.withUnsafeBufferPointer {
                    try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
                }
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(3)
        }
        let t1 = now()
        let preds: [Prediction]
        do {
            if boxPrompts.count > 1 {
                preds = try session.predict(prompts: boxPrompts.map { Prompt(box: $0, multimask: multimask, hqTokenOnly: hqTokenOnly) })
            } else {
                preds = [try session.predict(points: prompts, box: boxPrompts.first, maskInput: mask, multimask: multimask,
                                             hqTokenOnly: hqTokenOnly)]
            }
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(1)
        }
        let t2 = now()
        do {
            try writeOutputs(preds, img, prompts, boxPrompts, encode: t1 - t0, decode: t2 - t1)
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(4)
        }
    }

    func writeOutputs(_ preds: [Prediction], _ img: PocketSAMIO.Image?, _ pts: [PointPrompt], _ boxes: [BoxPrompt],
                      encode: Double, decode: Double) throws {
        if mkdir(out, 0o755) != 0 && errno != EEXIST {
            throw ImageIOError.cannotWrite(path: out, reason: String(cString: strerror(errno)))
        }
        let p0 = preds[0]
        let width = p0.width, height = p0.height, hw = width * height
        var rgb = [UInt8](repeating: 128, count: hw * 3)
        if let img {
            for i in 0..<hw { for c in 0..<3 { rgb[i * 3 + c] = img.pixels[i * img.channels + (img.channels == 3 ? c : 0)] } }
        }
        let colors: [(Float, Float, Float)] = [(30, 144, 255), (255, 140, 0), (50, 205, 50)]
        var areas: [[Int]] = []
        let several = preds.count > 1
        for (b, p) in preds.enumerated() {
            var a: [Int] = []
            for k in 0..<p.count {
                let m = Array(p.masks[(k * hw)..<((k + 1) * hw)])
                a.append(m.reduce(0) { $0 + Int($1) })
                let name = several ? (p.count > 1 ? "mask_\(b)_\(k).png" : "mask_\(b).png") : "mask_\(k).png"
                try ImageIO.writePNG(PocketSAMIO.Image(width: width, height: height, channels: 1, pixels: m.map { $0 * 255 }),
                                     to: "\(out)/\(name)")
                let col = colors[(several ? b : k) % colors.count]
                for i in 0..<hw where m[i] != 0 {
                    rgb[i * 3] = UInt8(0.45 * Float(rgb[i * 3]) + 0.55 * col.0)
                    rgb[i * 3 + 1] = UInt8(0.45 * Float(rgb[i * 3 + 1]) + 0.55 * col.1)
                    rgb[i * 3 + 2] = UInt8(0.45 * Float(rgb[i * 3 + 2]) + 0.55 * col.2)
                }
            }
            areas.append(a)
        }
        func put(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            rgb[(y * width + x) * 3] = c.0
            rgb[(y * width + x) * 3 + 1] = c.1
            rgb[(y * width + x) * 3 + 2] = c.2
        }
        for b in boxes {
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
        try ImageIO.writePNG(PocketSAMIO.Image(width: width, height: height, channels: 3, pixels: rgb), to: "\(out)/overlay.png")
        let lows = preds.flatMap(\.lowResLogits)
        try NPY.write(NPY.encode(lows, shape: [preds.reduce(0) { $0 + $1.count }, p0.lowResSize, p0.lowResSize]), to: "\(out)/lowres.npy")
        func list(_ a: [Float]) -> String { "[" + a.map { String($0) }.joined(separator: ", ") + "]" }
        func ints(_ a: [Int]) -> String { "[" + a.map(String.init).joined(separator: ", ") + "]" }
        let timing = "\"encode_ms\": \(Int(encode * 1000)), \"decode_ms\": \((decode * 10000).rounded() / 10)"
        let json: String
        if several {
            let entries = zip(preds, zip(boxes, areas)).map { p, ba in
                "  {\"box\": \(list([ba.0.x0, ba.0.y0, ba.0.x1, ba.0.y1])), \"masks\": \(p.count), \"iou\": \(list(p.iou)), "
                    + "\"stability\": \(list(p.stability)), \"area\": \(ints(ba.1))}"
            }
            json = "{\"width\": \(width), \"height\": \(height), \(timing), \"results\": [\n" + entries.joined(separator: ",\n") + "]}\n"
        } else {
            json = """
            {"width": \(width), "height": \(height), "masks": \(p0.count),
             "iou": \(list(p0.iou)), "stability": \(list(p0.stability)), "area": \(ints(areas[0])),
             \(timing)}

            """
        }
        try NPY.write(Array(json.utf8), to: "\(out)/result.json")
        for (b, p) in preds.enumerated() {
            print((several ? "box \(b): " : "") + "masks: \(p.count), predicted IoU \(list(p.iou)), area \(areas[b]) px")
        }
        print("encode \(Int(encode * 1000)) ms, decode \((decode * 10000).rounded() / 10) ms; overlay: \(out)/overlay.png")
    }
}

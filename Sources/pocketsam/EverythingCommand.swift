import ArgumentParser
import PocketSAM
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

/// The generator's options on the command line (shared by `everything` and `bench --everything`),
/// named and defaulted as SamAutomaticMaskGenerator's parameters.
struct GeneratorArguments: ParsableArguments {
    @Option(help: "Grid points per side (SAM's points_per_side).") var pointsPerSide = 32
    @Option(help: "Prompts decoded together (memory only; results do not depend on it).") var pointsPerBatch = 64
    @Option(name: .customLong("pred-iou-thresh"), help: "Drop masks whose predicted IoU is not above this (0: keep all).") var predIoUThresh: Float?
    @Option(help: "Drop masks whose stability score is below this (0: keep all).") var stabilityScoreThresh: Float?
    @Option(help: "Logit offset of the stability score.") var stabilityScoreOffset: Float = 1.0
    @Option(name: .customLong("box-nms-thresh"), help: "Box IoU of the suppression within a crop.") var boxNMSThresh: Float = 0.7
    @Option(help: "Extra crop layers (layer i: 2^i × 2^i crops).") var cropNLayers = 0
    @Option(name: .customLong("crop-nms-thresh"), help: "Box IoU of the suppression between crops.") var cropNMSThresh: Float = 0.7
    @Option(help: "Overlap of neighbouring crops (fraction of the shorter side).") var cropOverlapRatio: Double = 512.0 / 1500.0
    @Option(help: "Points per side are divided by this per crop layer.") var cropNPointsDownscaleFactor = 1
    @Option(help: "Remove holes and islands smaller than this many pixels (0: off).") var minMaskRegionArea = 0
    @Flag(help: "Hierarchical sampling (TinySAM): a sparse grid first, dense points only where nothing was found.")
    var hierarchical = false
    @Option(help: "Hierarchical: skip dense points where a kept sparse mask's logit exceeds the threshold by this (0: anywhere in the mask).")
    var hierarchicalCoverOffset: Float = 0
    @Flag(help: "HQ-SAM models: each point's mask is the HQ mask alone (default: HQ + SAM's best of three, as the official generator). Ignored by other models.")
    var hqTokenOnly = false

    func options(defaultPredIoU: Float, defaultStability: Float) -> MaskGeneratorOptions {
        var o = MaskGeneratorOptions()
        o.pointsPerSide = pointsPerSide
        o.pointsPerBatch = pointsPerBatch
        o.predIoUThresh = predIoUThresh ?? defaultPredIoU
        o.stabilityScoreThresh = stabilityScoreThresh ?? defaultStability
        o.stabilityScoreOffset = stabilityScoreOffset
        o.boxNMSThresh = boxNMSThresh
        o.cropNLayers = cropNLayers
        o.cropNMSThresh = cropNMSThresh
        o.cropOverlapRatio = cropOverlapRatio
        o.cropNPointsDownscaleFactor = cropNPointsDownscaleFactor
        o.minMaskRegionArea = minMaskRegionArea
        o.hierarchical = hierarchical
        o.hierarchicalCoverOffset = hierarchicalCoverOffset
        o.hqTokenOnly = hqTokenOnly
        return o
    }
}

struct Everything: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment everything: automatic mask generation from a grid of point prompts.",
        discussion: """
        SAM's automatic mask generator (same parameters and defaults as SamAutomaticMaskGenerator). \
        Writes into --out: masks.json (COCO-style annotations: uncompressed RLE "segmentation", area, \
        bbox [x, y, w, h], predicted_iou, stability_score, point_coords, crop_box) and overlay.png (each \
        mask in its own colour, largest first). Progress goes to stderr.

        Example:
          pocketsam everything --model mobile_sam.psam --image photo.jpg --out out/ --hierarchical

        Exit codes: 0 done, 1 bad options, 2 bad model file, 3 bad image, 4 output not written.
        """)

    @Option(help: "The .psam model.") var model: String
    @Option(help: "JPEG or PNG image.") var image: String
    @Option(help: "Output folder (created).") var out: String
    @OptionGroup var generator: GeneratorArguments
    @Option(help: "Threads.") var threads = 2
    @Option(help: "auto (int8 kernels for int8 weights) or fp32 (dequantize everything at load).") var compute = "auto"
    @Flag(name: .shortAndLong, help: "No progress output.") var quiet = false

    func run() throws {
        guard let mode = ComputeMode(rawValue: compute) else { throw ValidationError("--compute must be auto or fp32") }
        let m: Model
        do { m = try Model(path: model, compute: mode) } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(2)
        }
        let img = try loadImage(image)
        let opts = generator.options(defaultPredIoU: 0.88, defaultStability: 0.95)
        let session = Session(model: m, threads: threads)
        let result: GenerationResult
        do {
            result = try img.pixels.withUnsafeBufferPointer { px in
                try session.generate(pixels: px.baseAddress!, width: img.width, height: img.height, channels: img.channels,
                                     options: opts) { p in
                    if !quiet {
                        stderrWrite("everything: crop \(p.crop + 1)/\(p.crops) \(p.stage): \(p.pointsDone)/\(p.pointsTotal)\r")
                    }
                }
            }
        } catch let e as PocketSAMError {
            if !quiet { stderrWrite("\n") }
            stderrWrite("pocketsam: error: \(e)\n")
            if case .invalidOptions = e { throw ExitCode(1) }
            throw ExitCode(3)
        }
        if !quiet { stderrWrite("\n") }
        do {
            if mkdir(out, 0o755) != 0 && errno != EEXIST {
                throw ImageIOError.cannotWrite(path: out, reason: String(cString: strerror(errno)))
            }
            try NPY.write(Array(cocoJSON(result.masks).utf8), to: "\(out)/masks.json")
            try ImageIO.writePNG(overlay(img, result.masks), to: "\(out)/overlay.png")
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(4)
        }
        let s = result.stats
        print("masks: \(result.masks.count) from \(s.decoderCalls) prompts in \(s.crops) crop(s); \(format3(s.totalSeconds)) s "
              + "(encoder \(format3(s.encoderSeconds)) s, decoder \(format3(s.decoderSeconds)) s, masks \(format3(s.postprocessSeconds)) s, "
              + "suppression \(format3(s.nmsSeconds)) s, clean-up \(format3(s.cleanupSeconds)) s)")
        print("decoder: \(format3(Double(s.decoderCalls) / max(s.decoderSeconds, 1e-9))) prompts/s, \(format3(Double(s.decoderMACs) / Double(max(s.decoderCalls, 1)) / 1e6)) MMAC per prompt, \(format3(Double(s.decoderMACs) / max(s.decoderSeconds, 1e-9) / 1e9)) GMAC/s")
        print("wrote \(out)/masks.json and \(out)/overlay.png")
    }
}

/// COCO-style annotations, as SamAutomaticMaskGenerator returns them with output_mode "uncompressed_rle"
/// (pycocotools: `mask.frPyObjects(seg, h, w)` then `mask.decode`).
func cocoJSON(_ masks: [GeneratedMask]) -> String {
    func f(_ x: Float) -> String { x.isFinite ? String(x) : "null" }
    func d(_ x: Double) -> String { x.isFinite ? String(x) : "null" }
    var s = "[\n"
    for (i, m) in masks.enumerated() {
        let r = m.segmentation
        s += "{\"segmentation\": {\"size\": [\(r.height), \(r.width)], \"counts\": ["
        s += r.counts.map(String.init).joined(separator: ",")
        s += "]}, \"area\": \(m.area), \"bbox\": [\(m.bbox.x), \(m.bbox.y), \(m.bbox.width), \(m.bbox.height)], "
        s += "\"predicted_iou\": \(f(m.predictedIoU)), \"point_coords\": [[\(d(m.point.x)), \(d(m.point.y))]], "
        s += "\"stability_score\": \(f(m.stabilityScore)), "
        s += "\"crop_box\": [\(m.cropBox.x), \(m.cropBox.y), \(m.cropBox.width), \(m.cropBox.height)]}"
        s += i + 1 < masks.count ? ",\n" : "\n"
    }
    return s + "]\n"
}

/// The image with each mask tinted in its own colour, the largest masks drawn first.
func overlay(_ img: PocketSAMIO.Image, _ masks: [GeneratedMask]) -> PocketSAMIO.Image {
    let hw = img.width * img.height
    var rgb = [UInt8](repeating: 0, count: hw * 3)
    for i in 0..<hw { for c in 0..<3 { rgb[i * 3 + c] = img.pixels[i * img.channels + (img.channels == 3 ? c : 0)] } }
    var m = [UInt8](repeating: 0, count: hw)
    for (k, g) in masks.enumerated().sorted(by: { $0.element.area > $1.element.area }) {
        // A fixed pseudo-random colour per mask index (golden-ratio hue steps).
        let hue = (Double(k) * 0.618_033_988_75).truncatingRemainder(dividingBy: 1)
        let col = hsv(hue)
        m.withUnsafeMutableBufferPointer { g.segmentation.decode(into: $0.baseAddress!) }
        for i in 0..<hw where m[i] != 0 {
            for c in 0..<3 { rgb[i * 3 + c] = UInt8(0.4 * Float(rgb[i * 3 + c]) + 0.6 * col[c]) }
        }
    }
    return PocketSAMIO.Image(width: img.width, height: img.height, channels: 3, pixels: rgb)
}

func hsv(_ h: Double) -> [Float] {
    let i = Int(h * 6) % 6, f = Float(h * 6 - Double(Int(h * 6)))
    let v: Float = 255, p: Float = 60, q = v - (v - p) * f, t = p + (v - p) * f
    switch i {
    case 0: return [v, t, p]
    case 1: return [q, v, p]
    case 2: return [p, v, t]
    case 3: return [p, q, v]
    case 4: return [t, p, v]
    default: return [v, p, q]
    }
}

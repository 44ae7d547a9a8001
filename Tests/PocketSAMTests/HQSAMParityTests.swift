import Foundation
import PocketSAM
import PocketSAMFormat
import PocketSAMIO
import PocketSAMQuantize
import XCTest

/// HQ-SAM against the official code (`segment_anything_hq` 0.3's SamPredictor) on two small random-weight models: a SAM
/// ViT (windowed and global blocks, non-zero relative positions; the early feature from its first global block) and a
/// shrunk MobileSAM TinyViT (the early feature from stage 1), two real images each, every prompt case with
/// `hq_token_only` both ways (fixtures by Tests/Reference/make_hq_fixtures.py). fp32 throughout.
final class HQSAMParityTests: XCTestCase {
    static let dir = LiteMedSAMParityTests.root.appendingPathComponent("Tests/Fixtures/random/hq")

    static func manifest(_ base: URL = dir) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: base.appendingPathComponent("manifest.json"))) as? [String: Any])
    }

    static func npy(_ name: String, _ base: URL = dir) throws -> NPY.Array {
        try NPY.decode(Array(try Data(contentsOf: base.appendingPathComponent(name))))
    }

    static func model(_ file: String, precision: Precision = .fp32) throws -> Model {
        let ckpt = try Checkpoint(path: dir.appendingPathComponent(file).path)
        let bytes = try Converter.convert(ckpt, options: .init(precision: precision)).writer.serialize()
        return try Model(file: try PSAMFile(storage: ByteStorage(copying: bytes)))
    }

    /// Runs every case of `tag` on `model`; returns the low-res logits by case key (name, hq_token_only) and image.
    @discardableResult
    /// `lowResTolerance` nil: no comparison with the reference (the int8 test compares with the fp32 path instead).
    func run(tag: String, model: Model, checkLayers: Bool, lowResTolerance: Float?, base: URL = dir) throws -> [String: [Float]] {
        let m = try XCTUnwrap((try Self.manifest(base)["models"] as? [String: Any])?[tag] as? [String: Any])
        let images = try XCTUnwrap(m["images"] as? [String: Any])
        var all: [String: [Float]] = [:]
        var report: [String] = []
        for imageName in images.keys.sorted() {
            let im = try XCTUnwrap(images[imageName] as? [String: Any])
            let session = Session(model: model, threads: 2)
            var taps: [String: ([Float], [Int])] = [:]
            if checkLayers {
                session.debugTap = { name, p, shape in
                    if name.hasPrefix("hq.") { taps[name] = (Array(UnsafeBufferPointer(start: p, count: shape.reduce(1, *))), shape) }
                }
            }
            let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/\(imageName).png"))
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            session.debugTap = nil
            if checkLayers {
                // The early feature and the fused HQ features, layer by layer. Tolerance: 1e-4 of the map's largest
                // magnitude, as for the encoders' layers (fp32 sums in another order, growing block by block).
                for (key, tap) in [("early_feature", "hq.early"), ("hq_features", "hq.features")] {
                    let entry = try XCTUnwrap(im[key] as? [String: Any], "\(tag)/\(imageName): no \(key)")
                    let (ours, shape) = try XCTUnwrap(taps[tap], "tap \(tap) not called")
                    for f in try XCTUnwrap(entry["files"] as? [[String: Any]]) {
                        let name = try XCTUnwrap(f["file"] as? String)
                        let (d, s) = RandomModelParityTests.compare(ours, shape: shape, ref: try Self.npy(name, base),
                                                                    layout: try XCTUnwrap(entry["layout"] as? String),
                                                                    crop: f["crop"] as? [String: Any])
                        report.append("\(name): \(d) (max |ref| \(s))")
                        XCTAssertLessThanOrEqual(d, 1e-4 * max(s, 1), "\(tag) \(name)")
                    }
                }
            }
            var lowByCase: [String: [Float]] = [:]
            for case_ in try XCTUnwrap(im["cases"] as? [[String: Any]]) {
                let name = try XCTUnwrap(case_["name"] as? String)
                let hqOnly = try XCTUnwrap(case_["hq_token_only"] as? Bool)
                let key = "\(name)/\(hqOnly ? "hq" : "sam+hq")"
                let pr = try XCTUnwrap(case_["prompts_original_xy"] as? [String: Any])
                let coords = (pr["point_coords"] as? [[Double]]) ?? []
                let labels = (pr["point_labels"] as? [Int]) ?? []
                let points = zip(coords, labels).map { PointPrompt(x: Float($0[0]), y: Float($0[1]), positive: $1 == 1) }
                let box = (pr["box_xyxy"] as? [Double]).map { BoxPrompt(x0: Float($0[0]), y0: Float($0[1]), x1: Float($0[2]), y1: Float($0[3])) }
                var maskInput: [Float]?
                if let from = pr["mask_input"] as? String {
                    maskInput = try XCTUnwrap(lowByCase["\(from)/\(hqOnly ? "hq" : "sam+hq")"], "\(key): its mask input's case ran first")
                }
                let p = try session.predict(points: points, box: box, maskInput: maskInput,
                                            multimask: try XCTUnwrap(case_["multimask_output"] as? Bool), hqTokenOnly: hqOnly)
                XCTAssertEqual(p.count, try XCTUnwrap(case_["num_masks"] as? Int), "\(tag)/\(imageName)/\(key): mask count")
                lowByCase[key] = p.lowResLogits
                all["\(imageName)/\(key)"] = p.lowResLogits
                guard let lowResTolerance else { continue }
                let ref = try Self.npy(try XCTUnwrap(case_["lowres_file"] as? String), base).floats
                XCTAssertEqual(ref.count, p.lowResLogits.count)
                let range = (ref.max() ?? 0) - (ref.min() ?? 0)
                let d = zip(ref, p.lowResLogits).map { abs($0 - $1) }.max() ?? .infinity
                report.append("\(imageName)/\(key) low-res: \(d) (range \(range))")
                XCTAssertLessThanOrEqual(d, lowResTolerance * max(range, 1), "\(tag)/\(imageName)/\(key): low-res logits")
                for (a, b) in zip(try XCTUnwrap(case_["iou_predictions"] as? [Double]), p.iou) {
                    XCTAssertEqual(Double(b), a, accuracy: 1e-4, "\(tag)/\(imageName)/\(key) predicted IoU")
                }
                let iou = RandomModelParityTests.maskIoU(packed: try Self.npy(try XCTUnwrap(case_["masks_file"] as? String), base).data, p)
                report.append("\(imageName)/\(key) mask IoU: \(iou)")
                XCTAssertGreaterThanOrEqual(iou, 0.999, "\(tag)/\(imageName)/\(key): mask IoU \(iou)")
            }
        }
        print("HQ-SAM \(tag) parity:\n  " + report.joined(separator: "\n  "))
        return all
    }

    func checkpointFile(_ tag: String) throws -> String {
        let cks = try XCTUnwrap(try Self.manifest()["checkpoints"] as? [String: Any])
        for (file, v) in cks {
            if let d = v as? [String: Any], (d["model"] as? String) == tag || (d["tag"] as? String) == tag { return file }
        }
        return tag == "vit" ? "hq_vit_tiny.pth" : "hq_tinyvit_tiny.pth"
    }

    func testHQViT() throws {
        let model = try Self.model(try checkpointFile("vit"))
        XCTAssertEqual(model.config.decoder.hq, HQConfig(vitDim: 64, earlyLayer: 1))
        try run(tag: "vit", model: model, checkLayers: true, lowResTolerance: 1e-3)
    }

    /// int8 files (the default conversion: no calibration images) against the fp32 path on every case: the new
    /// transposed convolutions, 3×3 convolutions and the HQ MLP are int8 like SAM's own decoder layers.
    func testHQInt8AgainstFP32() throws {
        for (tag, file) in [("vit", try checkpointFile("vit")), ("tinyvit", try checkpointFile("tinyvit"))] {
            let int8 = try Self.model(file, precision: .int8)
            XCTAssertGreaterThan(int8.int8Layers, 10, "\(tag): the int8 kernels are not in use")
            let a = try run(tag: tag, model: try Self.model(file), checkLayers: false, lowResTolerance: 1e-3)
            let b = try run(tag: tag, model: int8, checkLayers: false, lowResTolerance: nil)
            var worst = 1.0
            for (k, v) in a {
                let corr = Int8AccuracyTests.pearson(v, try XCTUnwrap(b[k]))
                worst = min(worst, corr)
                XCTAssertGreaterThanOrEqual(corr, 0.999, "\(tag) \(k): int8 vs fp32 low-res correlation")
            }
            print("HQ-SAM \(tag) int8 vs fp32: worst low-res logit correlation \(worst) over \(a.count) cases")
        }
    }

    /// Light HQ-SAM at full size (TinyViT 5M with 256-wide heads, vit_dim 160): seeded random weights from
    /// `pocketsam-quantize --random mobilesam_hq --precision fp32 --seed 7` (rebuilt here in memory, the same bytes as the
    /// file make_hq_full_fixtures.py read into the official model), so no 40 MB checkpoint is committed.
    func testFullSizeHQTinyViT() throws {
        let base = Self.dir.appendingPathComponent("full")
        let manifest = try Self.manifest(base)
        let psam = try XCTUnwrap(manifest["psam"] as? [String: Any], "manifest: psam")
        let bytes = try RandomCheckpoint.convert(config: try XCTUnwrap(ModelConfig.preset("mobilesam_hq")),
                                                 seed: UInt64(try XCTUnwrap(psam["seed"] as? Int)),
                                                 options: .init(precision: .fp32)).writer.serialize()
        let sha = bytes.withUnsafeBytes { SHA256.hex($0) }
        XCTAssertEqual(sha, try XCTUnwrap(psam["sha256"] as? String), "the random model is not the one the fixtures were made from")
        let model = try Model(file: try PSAMFile(storage: ByteStorage(copying: bytes)))
        XCTAssertEqual(model.config.decoder.hq, HQConfig(vitDim: 160, earlyLayer: 1))
        try run(tag: "tinyvit_full", model: model, checkLayers: true, lowResTolerance: 1e-3, base: base)
    }

    func testHQTinyViT() throws {
        let model = try Self.model(try checkpointFile("tinyvit"))
        XCTAssertEqual(model.config.decoder.hq?.earlyLayer, 1)
        try run(tag: "tinyvit", model: model, checkLayers: true, lowResTolerance: 1e-3)
    }
}

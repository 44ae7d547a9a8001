import Foundation
import PocketSAM
import PocketSAMIO
import PocketSAMKernels
import PocketSAMQuantize
import XCTest

/// Automatic mask generation against the official SamAutomaticMaskGenerator on the small random models
/// (fixtures by Tests/Reference/make_generator_fixtures.py; the parameters of each case are in it).
final class MaskGeneratorTests: XCTestCase {
    static let dir = RandomModelParityTests.dir.appendingPathComponent("generator")

    struct Reference {
        let h: Int, w: Int
        let options: MaskGeneratorOptions
        let masks: [[String: Any]]
        let bits: [[UInt64]]
    }

    static func options(_ p: [String: Any], cropLayers: Int) -> MaskGeneratorOptions {
        var o = MaskGeneratorOptions()
        o.pointsPerSide = p["points_per_side"] as? Int
        o.pointsPerBatch = p["points_per_batch"] as! Int
        o.predIoUThresh = Float(p["pred_iou_thresh"] as! Double)
        o.stabilityScoreThresh = Float(p["stability_score_thresh"] as! Double)
        o.stabilityScoreOffset = Float(p["stability_score_offset"] as! Double)
        o.boxNMSThresh = Float(p["box_nms_thresh"] as! Double)
        o.cropNMSThresh = Float(p["crop_nms_thresh"] as! Double)
        o.cropOverlapRatio = p["crop_overlap_ratio"] as! Double
        o.cropNPointsDownscaleFactor = p["crop_n_points_downscale_factor"] as! Int
        o.minMaskRegionArea = p["min_mask_region_area"] as! Int
        o.cropNLayers = cropLayers
        return o
    }

    static func reference(_ name: String) throws -> Reference {
        let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(name + ".json"))) as? [String: Any])
        let size = j["size"] as! [Int]
        let (h, w) = (size[0], size[1])
        let masks = j["masks"] as! [[String: Any]]
        let png = try ImageIO.read(dir.appendingPathComponent(name + "_masks.png").path)
        let tile = j["tile_columns"] as! Int
        XCTAssertEqual(png.width, tile * w)
        XCTAssertEqual(png.height, h * ((masks.count + tile - 1) / tile))
        let bits = (0..<masks.count).map { i in
            var m = [UInt8](repeating: 0, count: h * w)
            let y0 = (i / tile) * h, x0 = (i % tile) * w
            for y in 0..<h { for x in 0..<w where png.pixels[((y0 + y) * png.width + x0 + x) * png.channels] != 0 { m[y * w + x] = 1 } }
            return pack(m)
        }
        return Reference(h: h, w: w, options: options(j["params"] as! [String: Any], cropLayers: j["crop_n_layers"] as! Int),
                         masks: masks, bits: bits)
    }

    static func pack(_ m: [UInt8]) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: (m.count + 63) / 64)
        for (i, v) in m.enumerated() where v != 0 { out[i >> 6] |= 1 << UInt64(i & 63) }
        return out
    }

    static func iou(_ a: [UInt64], _ b: [UInt64]) -> Double {
        var inter = 0, uni = 0
        for i in a.indices {
            inter += (a[i] & b[i]).nonzeroBitCount
            uni += (a[i] | b[i]).nonzeroBitCount
        }
        return uni == 0 ? 1 : Double(inter) / Double(uni)
    }

    static func model(_ tag: String) throws -> Model {
        try RandomModelParityTests.model(tag == "vit" ? "vit_tiny.pth" : "mobilesam_tiny.pth")
    }

    static func generate(_ model: Model, image: String, _ o: MaskGeneratorOptions) throws -> GenerationResult {
        let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/" + image))
        let session = Session(model: model, threads: 2)
        return try img.pixels.withUnsafeBufferPointer {
            try session.generate(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels, options: o)
        }
    }

    /// For each reference mask, the best IoU with one of ours (and which); among masks of equal IoU, one
    /// from the same point prompt (random models give many identical masks from different points).
    static func match(_ ref: Reference, _ ours: [GeneratedMask]) -> [(Double, Int)] {
        let bits = ours.map { pack($0.segmentation.decoded()) }
        let areas = ours.map(\.area)
        return ref.masks.indices.map { i in
            let a = ref.masks[i]["area"] as! Int
            let pt = ref.masks[i]["point_coords"] as! [Double]
            var best = (0.0, -1, false)
            for j in bits.indices {
                // IoU ≥ 0.9 needs the areas within 10 % of each other; skip the rest.
                let lo = min(a, areas[j]), hi = max(a, areas[j])
                if hi > 0, Double(lo) < 0.85 * Double(hi) { continue }
                let v = iou(ref.bits[i], bits[j])
                let same = abs(ours[j].point.x - pt[0]) < 1e-6 && abs(ours[j].point.y - pt[1]) < 1e-6
                if v > best.0 || (v == best.0 && same && !best.2) { best = (v, j, same) }
            }
            return (best.0, best.1)
        }
    }

    /// The issue's bars: the same number of masks ±10 %, and ≥ `recall` of the reference masks matched by
    /// one of ours with IoU ≥ 0.9. Matched masks also agree on predicted IoU, stability and point.
    func check(_ name: String, tag: String, model: Model, image: String, hierarchical: Bool = false, recall: Double = 0.95,
               checkCount: Bool = true, coverOffset: Float = 0, file: StaticString = #filePath, line: UInt = #line) throws -> GenerationResult {
        let ref = try Self.reference(name)
        var o = ref.options
        o.hierarchical = hierarchical
        o.hierarchicalCoverOffset = coverOffset
        let result = try Self.generate(model, image: image, o)
        let ours = result.masks
        let n = ref.masks.count
        let matches = Self.match(ref, ours)
        let matched = matches.filter { $0.0 >= 0.9 }.count
        var worstIoU: Float = 0, worstStability: Float = 0
        var samePoint = 0
        for (i, m) in matches.enumerated() where m.0 >= 0.9 {
            let r = ref.masks[i], g = ours[m.1]
            let pt = r["point_coords"] as! [Double]
            guard abs(g.point.x - pt[0]) < 1e-6, abs(g.point.y - pt[1]) < 1e-6 else { continue }
            samePoint += 1
            worstIoU = max(worstIoU, abs(Float(r["predicted_iou"] as! Double) - g.predictedIoU))
            worstStability = max(worstStability, abs(Float(r["stability_score"] as! Double) - g.stabilityScore))
        }
        print("\(name)\(hierarchical ? " hierarchical" : ""): \(ours.count) masks (reference \(n)), \(matched) of \(n) matched at IoU ≥ 0.9; "
              + "\(samePoint) from the same point, predicted IoU within \(worstIoU), stability within \(worstStability); \(result.stats.decoderCalls) prompts decoded")
        XCTAssertGreaterThanOrEqual(n, 20, file: file, line: line)
        if checkCount { XCTAssertLessThanOrEqual(abs(ours.count - n), max(1, n / 10), "mask count", file: file, line: line) }
        XCTAssertGreaterThanOrEqual(Double(matched), recall * Double(n), "reference masks matched", file: file, line: line)
        if !hierarchical {
            XCTAssertGreaterThanOrEqual(Double(samePoint), 0.95 * Double(n), "matched masks from the same point", file: file, line: line)
            // fp32 sums in another order move a logit by ~1e-6 relative; the IoU head is an MLP on the same tokens.
            XCTAssertLessThanOrEqual(worstIoU, 1e-4, file: file, line: line)
            // Stability is a ratio of pixel counts: one pixel whose logit lies within ~1e-6 of a threshold
            // can flip, moving the ratio by 1/union; the smallest unions here are a few pixels.
            XCTAssertLessThanOrEqual(worstStability, 0.1, file: file, line: line)
        }
        return result
    }

    func testViTChelsea() throws {
        let m = try Self.model("vit")
        _ = try check("vit_chelsea_crop0", tag: "vit", model: m, image: "chelsea.png")
        _ = try check("vit_chelsea_crop1", tag: "vit", model: m, image: "chelsea.png")
    }

    func testViTCoffee() throws {
        let m = try Self.model("vit")
        _ = try check("vit_coffee_crop0", tag: "vit", model: m, image: "coffee.png")
        _ = try check("vit_coffee_crop1", tag: "vit", model: m, image: "coffee.png")
    }

    func testMobileSAMChelsea() throws {
        let m = try Self.model("mobilesam")
        _ = try check("mobilesam_chelsea_crop0", tag: "mobilesam", model: m, image: "chelsea.png")
        _ = try check("mobilesam_chelsea_crop1", tag: "mobilesam", model: m, image: "chelsea.png")
    }

    func testMobileSAMCoffee() throws {
        let m = try Self.model("mobilesam")
        _ = try check("mobilesam_coffee_crop0", tag: "mobilesam", model: m, image: "coffee.png")
        _ = try check("mobilesam_coffee_crop1", tag: "mobilesam", model: m, image: "coffee.png")
    }

    /// HQ-SAM (segment_anything_hq's SamAutomaticMaskGenerator; fixtures by make_hq_generator_fixtures.py): one mask per
    /// point, the HQ mask plus SAM's best of three, through the plain decoder.
    func testHQViT() throws {
        let m = try HQSAMParityTests.model("hq_vit_tiny.pth")
        _ = try check("hq_vit_chelsea_crop0", tag: "hq_vit", model: m, image: "chelsea.png")
        _ = try check("hq_vit_coffee_crop0", tag: "hq_vit", model: m, image: "coffee.png")
    }

    func testHQTinyViT() throws {
        let m = try HQSAMParityTests.model("hq_tinyvit_tiny.pth")
        _ = try check("hq_tinyvit_chelsea_crop0", tag: "hq_tinyvit", model: m, image: "chelsea.png")
        _ = try check("hq_tinyvit_coffee_crop0", tag: "hq_tinyvit", model: m, image: "coffee.png")
    }

    /// min_mask_region_area: holes and islands below 16 px removed, changed masks re-suppressed.
    func testSmallRegionCleanUp() throws {
        _ = try check("vit_chelsea_crop0_minarea", tag: "vit", model: try Self.model("vit"), image: "chelsea.png")
    }

    /// Hierarchical sampling against the reference's dense result: ≥ 90 % of the reference masks found,
    /// ±10 % masks. The count is compared on the vit cases only: the mobilesam cases run with NMS off
    /// (box_nms_thresh 1.0, see the fixture script), so the reference keeps all three masks of every
    /// prompt and any sampling that decodes fewer prompts returns proportionally fewer masks; there the
    /// point is that the masks found are the same (recall) from fewer prompts. On vit the dense points
    /// are skipped only inside the sparse masks' stable cores (cover offset = the stability offset):
    /// skipping anywhere inside them (offset 0) finds 53 of 55 and 55 of 58 reference masks but returns
    /// 43 and 47 masks, 20 % fewer than the reference's near-duplicates.
    func testHierarchical() throws {
        for (tag, image) in [("vit", "chelsea.png"), ("vit", "coffee.png"), ("mobilesam", "chelsea.png"), ("mobilesam", "coffee.png")] {
            let m = try Self.model(tag)
            let name = "\(tag)_\(image.dropLast(4))_crop0"
            let stabilityOffset = try Self.reference(name).options.stabilityScoreOffset
            let r = try check(name, tag: tag, model: m, image: image, hierarchical: true, recall: 0.9, checkCount: tag == "vit",
                              coverOffset: tag == "vit" ? stabilityOffset : 0)
            let side = try Self.reference(name).options.pointsPerSide ?? 0
            if tag == "vit" {
                XCTAssertLessThanOrEqual(r.stats.decoderCalls, side * side + (side / 4) * (side / 4), name)
            } else {
                XCTAssertLessThanOrEqual(r.stats.decoderCalls, side * side * 2 / 3, name)
            }
        }
    }

    /// The generator's decoder (batched, projections folded, prompts in parallel) and its one-pass
    /// upscaling against `predict` (the per-prompt decoder, two bilinear resizes) on the same points:
    /// the same three masks per point, predicted IoUs and stability scores.
    func testGeneratorAgreesWithPredict() throws {
        for (tag, image) in [("vit", "coffee.png"), ("mobilesam", "chelsea.png")] {
            let model = try Self.model(tag)
            let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/" + image))
            let pts: [SIMD2<Double>] = [SIMD2(0.3, 0.4), SIMD2(0.71, 0.22), SIMD2(0.5, 0.93), SIMD2(0.05, 0.6), SIMD2(0.9, 0.9)]
            var o = MaskGeneratorOptions()
            o.pointsPerSide = nil
            o.pointGrids = [pts]
            o.predIoUThresh = 0
            o.stabilityScoreThresh = 0
            o.stabilityScoreOffset = 0.05
            o.boxNMSThresh = 1
            let session = Session(model: model, threads: 2)
            let gen = try img.pixels.withUnsafeBufferPointer {
                try session.generate(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels, options: o)
            }
            XCTAssertEqual(gen.masks.count, 3 * pts.count)
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            var worstIoU: Float = 0, worstMask = 1.0
            for p in pts {
                let x = p.x * Double(img.width), y = p.y * Double(img.height)
                let pred = try session.predict(points: [PointPrompt(x: Float(x), y: Float(y))], multimask: true)
                let mine = gen.masks.filter { abs($0.point.x - x) < 1e-9 && abs($0.point.y - y) < 1e-9 }
                XCTAssertEqual(mine.count, 3)
                for k in 0..<3 {
                    // The generator orders masks by predicted IoU; find this one by its score.
                    let g = try XCTUnwrap(mine.min { abs($0.predictedIoU - pred.iou[k]) < abs($1.predictedIoU - pred.iou[k]) })
                    worstIoU = max(worstIoU, abs(g.predictedIoU - pred.iou[k]))
                    let a = Self.pack(g.segmentation.decoded())
                    let b = Self.pack(Array(pred.masks[(k * img.width * img.height)..<((k + 1) * img.width * img.height)]))
                    worstMask = min(worstMask, Self.iou(a, b))
                }
            }
            print("\(tag): generator vs predict: predicted IoU within \(worstIoU), mask IoU ≥ \(worstMask)")
            // fp32 in a different order (folded projections, composed resize): ~1e-6 relative on logits.
            XCTAssertLessThanOrEqual(worstIoU, 1e-4)
            XCTAssertGreaterThanOrEqual(worstMask, 0.995)
        }
    }

    /// Our RLE: decode ∘ encode is the identity, area and box agree with the mask, runs cover the frame.
    func testRLERoundTrip() throws {
        var rng = SystemRandomNumberGenerator()
        for (h, w) in [(1, 1), (3, 5), (17, 9), (64, 48)] {
            for density in [0.0, 0.1, 0.5, 1.0] {
                let m = (0..<(h * w)).map { _ in Double.random(in: 0..<1, using: &rng) < density ? UInt8(1) : 0 }
                let rle = m.withUnsafeBufferPointer { MaskRLE(mask: $0.baseAddress!, height: h, width: w) }
                XCTAssertTrue(rle.isValid)
                XCTAssertEqual(rle.decoded(), m)
                XCTAssertEqual(rle.area, m.reduce(0) { $0 + Int($1) })
                var x0 = w, y0 = h, x1 = -1, y1 = -1
                for y in 0..<h { for x in 0..<w where m[y * w + x] != 0 { x0 = min(x0, x); x1 = max(x1, x); y0 = min(y0, y); y1 = max(y1, y) } }
                let b = rle.box
                if x1 < 0 { XCTAssertTrue(b == (0, 0, 0, 0)) } else { XCTAssertTrue(b == (x0, y0, x1, y1), "\(b) vs \((x0, y0, x1, y1))") }
                // Placed in a larger frame: the same pixels, zeros around.
                let placed = m.withUnsafeBufferPointer { MaskRLE(mask: $0.baseAddress!, height: h, width: w, x0: 2, y0: 3, fullHeight: h + 5, fullWidth: w + 4) }
                let full = placed.decoded()
                for y in 0..<(h + 5) { for x in 0..<(w + 4) {
                    let inside = x >= 2 && x < w + 2 && y >= 3 && y < h + 3
                    XCTAssertEqual(full[y * (w + 4) + x], inside ? m[(y - 3) * w + x - 2] : 0)
                } }
            }
        }
    }

    /// The C run-length encoder of the generator (column-major masks, framed, bounded buffer) against
    /// `MaskRLE`, including the overflow it reports when the buffer is too small.
    func testCRunLengthEncoder() throws {
        var rng = SystemRandomNumberGenerator()
        for (h, w) in [(1, 1), (5, 3), (40, 31)] {
            for density in [0.0, 0.3, 1.0] {
                let m = (0..<(h * w)).map { _ in Double.random(in: 0..<1, using: &rng) < density ? UInt8(1) : 0 }  // column-major
                let (fh, fw, x0, y0) = (h + 4, w + 6, 2, 3)
                let ref = m.withUnsafeBufferPointer {
                    MaskRLE(columnMajor: $0.baseAddress!, height: h, width: w, x0: x0, y0: y0, fullHeight: fh, fullWidth: fw)
                }
                var rowMajor = [UInt8](repeating: 0, count: h * w)
                for x in 0..<w { for y in 0..<h { rowMajor[y * w + x] = m[x * h + y] } }
                let viaRows = rowMajor.withUnsafeBufferPointer {
                    MaskRLE(mask: $0.baseAddress!, height: h, width: w, x0: x0, y0: y0, fullHeight: fh, fullWidth: fw)
                }
                XCTAssertEqual(ref, viaRows)
                var counts = [UInt32](repeating: 0, count: h * w + 3)
                let n = m.withUnsafeBufferPointer { mp in counts.withUnsafeMutableBufferPointer {
                    psam_mask_rle(mp.baseAddress!, h, w, x0, y0, fh, fw, $0.baseAddress!, $0.count)
                } }
                XCTAssertEqual(Array(counts.prefix(max(n, 0))), ref.counts)
                if ref.counts.count > 1 {
                    let short = m.withUnsafeBufferPointer { mp in counts.withUnsafeMutableBufferPointer {
                        psam_mask_rle(mp.baseAddress!, h, w, x0, y0, fh, fw, $0.baseAddress!, ref.counts.count - 1)
                    } }
                    XCTAssertEqual(short, -1, "overflow is reported as SIZE_MAX")
                }
            }
        }
    }

    /// The batched decoder's C kernels against plain Swift: the transposed second upscaling stage (+ bias,
    /// GELU with libm's erf, the hypernetwork dot products, sub-pixel interleaving, masks written transposed)
    /// the fused image-token norm (+ add, row statistics, layer norm, + pe) and the products with the first
    /// layer's shared keys and queries (scores, weighted rows), on odd sizes. Rounding only:
    /// the kernels sum in other orders (1e-5 of the sum of the terms' magnitudes) and the upscaling's GELU is
    /// a rational erf with a refined reciprocal, within 1e-6 · max(1, |x|) of the exact GELU
    /// (rowops_test.c checks that bound), which each term's hypernetwork weight scales.
    func testUpscaleAndNormKernels() throws {
        var rng = SystemRandomNumberGenerator()
        func rand(_ n: Int, _ a: Float = 2) -> [Float] { (0..<n).map { _ in Float.random(in: -a...a, using: &rng) } }
        func gelu(_ v: Float) -> Float { 0.5 * v * (1 + Float(erf(Double(v) / 2.0.squareRoot()))) }
        // First stage: + bias, layer norm per output pixel, GELU (cout 64 is SAM's).
        for (w, cout, y) in [(1, 1, 0), (5, 7, 2), (3, 16, 1), (64, 64, 5), (9, 33, 0), (4, 256, 3)] {
            let t = rand(w * cout * 4, 3), bias = rand(cout), lw = rand(cout), lb = rand(cout)
            var out = [Float](repeating: .nan, count: (2 * y + 2) * 2 * w * cout)
            psam_upscale_ln_gelu_row(t, w, cout, y, bias, lw, lb, 1e-6, &out)
            for x in 0..<w {
                for sp in 0..<4 {
                    let v = (0..<cout).map { t[x * cout * 4 + sp * cout + $0] + bias[$0] }
                    let mu = v.reduce(0, +) / Float(cout)
                    let r = 1 / (v.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Float(cout) + 1e-6).squareRoot()
                    let o = ((2 * y + sp / 2) * 2 * w + 2 * x + sp % 2) * cout
                    for c in 0..<cout {
                        let ref = gelu((v[c] - mu) * r * lw[c] + lb[c])
                        XCTAssertEqual(out[o + c], ref, accuracy: 1e-4 * max(1, abs(ref)), "ln_gelu w \(w) cout \(cout)")
                    }
                }
            }
            XCTAssertTrue(out[0..<(2 * y * 2 * w * cout)].allSatisfy(\.isNaN), "ln_gelu writes above its rows")
        }
        for (rows, w, cout, count, y0) in [(1, 1, 1, 1, 0), (3, 5, 7, 2, 1), (4, 128, 32, 3, 8), (2, 17, 33, 4, 3)] {
            let np = rows * w, ld = np + 3, ow = 2 * w
            let t = rand(4 * cout * ld), bias = rand(cout), hyper = rand(count * cout)
            var got = t, masks = [Float](repeating: .nan, count: count * ow * ow), scratch = [Float](repeating: 0, count: count * np)
            psam_upscale_masks_t(&got, ld, rows, w, cout, y0, bias, hyper, count, &masks, &scratch)
            for m in 0..<count {
                for r in 0..<rows {
                    for x in 0..<w {
                        for sp in 0..<4 {
                            var ref: Float = 0, mag: Float = 0, geluErr: Float = 0
                            for c in 0..<cout {
                                let u = t[(sp * cout + c) * ld + r * w + x] + bias[c]
                                let v = hyper[m * cout + c] * gelu(u)
                                ref += v
                                mag += abs(v)
                                geluErr += abs(hyper[m * cout + c]) * 1e-6 * max(1, abs(u))
                            }
                            let yy = 2 * (y0 + r) + sp / 2, xx = 2 * x + sp % 2
                            let o = masks[m * ow * ow + xx * ow + yy]  // transposed
                            XCTAssertLessThanOrEqual(abs(o - ref), 1e-5 * mag + geluErr, "mask \(m) row \(yy) col \(xx)")
                        }
                    }
                }
                // Rows outside y0 … y0 + rows are not written.
                for yy in 0..<ow where yy / 2 < y0 || yy / 2 >= y0 + rows {
                    XCTAssertTrue((0..<ow).allSatisfy { masks[m * ow * ow + $0 * ow + yy].isNaN })
                }
            }
        }
        // The products with a shared matrix: scores against a transposed one, and p-weighted rows.
        for (nq, nk, d) in [(1, 1, 1), (7, 4096, 16), (9, 37, 5), (3, 100, 64), (2, 17, 70)] {
            let (ldq, ldk, ldo) = (d + 3, nk + 5, nk + 2)
            let q = rand(nq * ldq), kt = rand(d * ldk), scale: Float = 0.25
            var out = [Float](repeating: .nan, count: nq * ldo)
            psam_scores_shared(q, ldq, kt, ldk, nq, nk, d, scale, &out, ldo)
            for i in 0..<nq {
                for j in 0..<nk {
                    var ref: Float = 0, mag: Float = 0
                    for t in 0..<d { ref += q[i * ldq + t] * kt[t * ldk + j]; mag += abs(q[i * ldq + t] * kt[t * ldk + j]) }
                    XCTAssertEqual(out[i * ldo + j], scale * ref, accuracy: 1e-5 * scale * max(mag, 1e-3), "scores \(nq)×\(nk)×\(d)")
                }
                XCTAssertTrue(out[(i * ldo + nk)..<(i * ldo + ldo)].allSatisfy(\.isNaN), "scores write past nk")
            }
            let (ldp, ldv, ldw) = (nk + 1, d + 2, d + 4)
            let p = rand(nq * ldp), v = rand(nk * ldv)
            var w = [Float](repeating: .nan, count: nq * ldw)
            psam_weighted_rows(p, ldp, v, ldv, nq, nk, d, &w, ldw)
            for i in 0..<nq {
                for t in 0..<d {
                    var ref: Float = 0, mag: Float = 0
                    for j in 0..<nk { ref += p[i * ldp + j] * v[j * ldv + t]; mag += abs(p[i * ldp + j] * v[j * ldv + t]) }
                    XCTAssertEqual(w[i * ldw + t], ref, accuracy: 1e-5 * max(mag, 1e-3), "weighted \(nq)×\(nk)×\(d)")
                }
                XCTAssertTrue(w[(i * ldw + d)..<(i * ldw + ldw)].allSatisfy(\.isNaN), "weighted writes past d")
            }
        }
        // Odd widths, the decoder's 256 and wider rows.
        for (m, c, withAdd, withPE) in [(1, 1, false, false), (5, 7, true, true), (9, 256, true, false), (3, 33, false, true),
                                        (7, 256, false, true), (4, 48, true, true), (2, 512, true, true), (2, 528, true, true)] {
            let x = rand(m * c, 3).map { $0 + 1 }, add = rand(m * c), pe = rand(m * c), w = rand(c), b = rand(c)
            var got = x, mean = [Float](repeating: 0, count: m), rstd = mean, xpe = [Float](repeating: 0, count: m * c)
            add.withUnsafeBufferPointer { a in pe.withUnsafeBufferPointer { p in xpe.withUnsafeMutableBufferPointer { o in
                psam_keys_norm(&got, withAdd ? a.baseAddress : nil, m, c, w, b, 1e-5, &mean, &rstd, withPE ? p.baseAddress : nil,
                               withPE ? o.baseAddress : nil)
            } } }
            for i in 0..<m {
                let row = (0..<c).map { x[i * c + $0] + (withAdd ? add[i * c + $0] : 0) }
                let mu = row.reduce(0, +) / Float(c)
                let v = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Float(c)
                let r = 1 / (v + 1e-5).squareRoot()
                XCTAssertEqual(mean[i], mu, accuracy: 1e-5 * max(1, abs(mu)))
                XCTAssertEqual(rstd[i], r, accuracy: 1e-5 * r)
                for j in 0..<c {
                    let ref = (row[j] - mu) * r * w[j] + b[j]
                    XCTAssertEqual(got[i * c + j], ref, accuracy: 1e-4 * max(1, abs(ref)))
                    if withPE { XCTAssertEqual(xpe[i * c + j], got[i * c + j] + pe[i * c + j]) }
                }
            }
        }
    }

    func testBadOptions() throws {
        let m = try Self.model("vit")
        let session = Session(model: m)
        let px = [UInt8](repeating: 128, count: 32 * 32 * 3)
        var cases: [MaskGeneratorOptions] = []
        var o = MaskGeneratorOptions(); o.pointsPerSide = 0; cases.append(o)
        o = MaskGeneratorOptions(); o.pointsPerSide = nil; cases.append(o)
        o = MaskGeneratorOptions(); o.predIoUThresh = .nan; cases.append(o)
        o = MaskGeneratorOptions(); o.boxNMSThresh = 1.5; cases.append(o)
        o = MaskGeneratorOptions(); o.cropNLayers = -1; cases.append(o)
        o = MaskGeneratorOptions(); o.pointsPerBatch = 0; cases.append(o)
        o = MaskGeneratorOptions(); o.pointsPerSide = nil; o.pointGrids = [[SIMD2(0.5, 1.5)]]; cases.append(o)
        o = MaskGeneratorOptions(); o.hierarchical = true; o.hierarchicalSparseFactor = 1; cases.append(o)
        for c in cases {
            XCTAssertThrowsError(try px.withUnsafeBufferPointer { try session.generate(pixels: $0.baseAddress!, width: 32, height: 32, options: c) }) {
                guard case PocketSAMError.invalidOptions = $0 else { return XCTFail("\($0)") }
            }
        }
        // An explicit point grid and a tiny image work.
        o = MaskGeneratorOptions(); o.pointsPerSide = nil; o.pointGrids = [[SIMD2(0.5, 0.5), SIMD2(0, 0)]]
        o.predIoUThresh = 0; o.stabilityScoreThresh = 0
        let r = try px.withUnsafeBufferPointer { try session.generate(pixels: $0.baseAddress!, width: 32, height: 32, options: o) }
        XCTAssertEqual(r.stats.decoderCalls, 2)
        XCTAssertThrowsError(try px.withUnsafeBufferPointer { try session.generate(pixels: $0.baseAddress!, width: 1, height: 1) })
    }
}

/// `pocketsam everything` as a user runs it: COCO JSON whose RLE decodes (with our decoder) to masks of
/// the stated area and box, the overlay, and exit codes.
final class EverythingCommandTests: XCTestCase {
    func testEverythingWritesCOCOJSONAndOverlay() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-all-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("vit.psam").path
        let ckpt = try Checkpoint(path: RandomModelParityTests.dir.appendingPathComponent("vit_tiny.pth").path)
        try Converter.convert(ckpt, options: .init(precision: .fp32)).writer.write(to: model)
        let image = try LiteMedSAMParityTests.asset("images/chelsea.png")
        let out = dir.appendingPathComponent("out").path
        let cmd = SegmentCommandTests.self
        let r = try cmd.run(["everything", "--model", model, "--image", image, "--out", out, "--points-per-side", "16",
                             "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--stability-score-offset", "0.05"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("points: 256/256"), r.err)
        let anns = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/masks.json"))) as? [[String: Any]])
        // The fixture's reference (same model, image and parameters) has 55 masks.
        XCTAssertEqual(anns.count, 55, r.out)
        for a in anns {
            let seg = try XCTUnwrap(a["segmentation"] as? [String: Any])
            let size = try XCTUnwrap(seg["size"] as? [Int])
            XCTAssertEqual(size, [300, 451])
            let rle = MaskRLE(height: size[0], width: size[1], counts: try XCTUnwrap(seg["counts"] as? [Int]).map(UInt32.init))
            XCTAssertTrue(rle.isValid)
            let m = rle.decoded()
            XCTAssertEqual(m.reduce(0) { $0 + Int($1) }, a["area"] as? Int)
            let b = rle.box, bbox = try XCTUnwrap(a["bbox"] as? [Int])
            XCTAssertEqual(bbox, [b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0])
            XCTAssertEqual(a["crop_box"] as? [Int], [0, 0, 451, 300])
            XCTAssertEqual((a["point_coords"] as? [[Double]])?.first?.count, 2)
        }
        let overlay = try ImageIO.read(out + "/overlay.png")
        XCTAssertEqual([overlay.width, overlay.height, overlay.channels], [451, 300, 3])
        for (args, code, needle) in [(["--points-per-side", "0"], Int32(1), "points per side"),
                                     (["--box-nms-thresh", "2"], 1, "box NMS threshold")] {
            let bad = try cmd.run(["everything", "--model", model, "--image", image, "--out", out] + args)
            XCTAssertEqual(bad.status, code, bad.err)
            XCTAssertTrue(bad.err.contains(needle), bad.err)
        }
        let missing = try cmd.run(["everything", "--model", model, "--image", dir.appendingPathComponent("none.png").path, "--out", out])
        XCTAssertEqual(missing.status, 3, missing.err)
    }
}

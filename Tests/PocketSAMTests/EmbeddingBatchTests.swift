import Foundation
import PocketSAM
import PocketSAMFormat
import PocketSAMIO
import PocketSAMQuantize
import XCTest

/// Embeddings saved and loaded (`.psemb`), many prompts per call, and cancelling segment everything.
final class EmbeddingBatchTests: XCTestCase {
    static func encoded(_ model: Model, image: String = "chelsea.png") throws -> Session {
        let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/" + image))
        let s = Session(model: model, threads: 2)
        try img.pixels.withUnsafeBufferPointer {
            try s.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
        }
        return s
    }

    /// Prompts of every kind on chelsea.png (451 × 300): boxes, points, box + point, multimask, a mask input.
    static func prompts(maskInput: [Float]?) -> [Prompt] {
        var out: [Prompt] = []
        for i in 0..<8 {
            let x = Float(20 + 45 * i), y = Float(15 + 20 * i)
            out.append(Prompt(box: BoxPrompt(x0: x, y0: y, x1: x + 80, y1: y + 90)))
        }
        out.append(Prompt(points: [PointPrompt(x: 240, y: 150)], multimask: true))
        out.append(Prompt(points: [PointPrompt(x: 240, y: 150), PointPrompt(x: 170, y: 80, positive: false)], multimask: true))
        out.append(Prompt(points: [PointPrompt(x: 262, y: 238)], box: BoxPrompt(x0: 150, y0: 60, x1: 330, y1: 270)))
        if let maskInput { out.append(Prompt(box: BoxPrompt(x0: 150, y0: 60, x1: 330, y1: 270), maskInput: maskInput)) }
        for i in 0..<6 {
            let x = Float(300 - 40 * i), y = Float(200 - 25 * i)
            out.append(Prompt(box: BoxPrompt(x0: x, y0: y, x1: x + 100, y1: y + 60), multimask: i % 2 == 1))
        }
        return out
    }

    static func assertSame(_ a: Prediction, _ b: Prediction, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        func differ<T: Equatable>(_ x: [T], _ y: [T]) -> Int { x.count != y.count ? max(x.count, y.count) : zip(x, y).filter { $0 != $1 }.count }
        let d = [("masks", differ(a.masks, b.masks)), ("low-res logits", differ(a.lowResLogits.map(\.bitPattern), b.lowResLogits.map(\.bitPattern))),
                 ("IoU", differ(a.iou.map(\.bitPattern), b.iou.map(\.bitPattern))),
                 ("stability", differ(a.stability.map(\.bitPattern), b.stability.map(\.bitPattern)))].filter { $0.1 > 0 }
        let worst = zip(a.lowResLogits, b.lowResLogits).map { abs($0 - $1) }.max() ?? 0
        XCTAssertTrue(d.isEmpty, "\(what): \(d.map { "\($0.1) \($0.0)" }.joined(separator: ", ")) differ (low-res max |Δ| \(worst))",
                      file: file, line: line)
    }

    /// Every model kind: a SAM ViT, HQ-SAM (the HQ features travel in the file), MobileSAM's TinyViT, int8.
    static func models() throws -> [(String, Model)] {
        [("vit fp32", try RandomModelParityTests.model("vit_tiny.pth")),
         ("mobilesam fp32", try RandomModelParityTests.model("mobilesam_tiny.pth")),
         ("hq vit fp32", try HQSAMParityTests.model("hq_vit_tiny.pth")),
         ("vit int8", try HQSAMParityTests.model("../vit_tiny.pth", precision: .int8))]
    }

    /// A session given the `.psemb` of another answers every prompt with the same bits as the one that encoded.
    func testEmbeddingRoundTripGivesTheSameAnswers() throws {
        for (tag, model) in try Self.models() {
            let a = try Self.encoded(model)
            let file = try a.embeddingFile()
            let b = Session(model: model, threads: 1)
            try file.withUnsafeBytes { try b.setEmbedding($0) }
            XCTAssertEqual(b.currentImageSize?.width, 451)
            XCTAssertEqual(try b.embeddingFile(), file, "\(tag): the embedding does not survive a round trip")
            let first = try a.predict(box: BoxPrompt(x0: 150, y0: 60, x1: 330, y1: 270))
            for (i, p) in Self.prompts(maskInput: first.lowResLogits).enumerated() {
                Self.assertSame(try a.predict(points: p.points, box: p.box, maskInput: p.maskInput, multimask: p.multimask),
                                try b.predict(points: p.points, box: p.box, maskInput: p.maskInput, multimask: p.multimask),
                                "\(tag) prompt \(i)")
            }
            print("embedding round trip \(tag): \(file.count) bytes")
        }
    }

    /// An embedding from another model file (same architecture, other weights or precision), truncated, or with any
    /// byte changed is refused with `invalidEmbedding`, never a crash; the session is then without an image.
    func testForeignCorruptAndTruncatedEmbeddingsAreRefused() throws {
        let fp32 = try RandomModelParityTests.model("vit_tiny.pth")
        let int8 = try HQSAMParityTests.model("../vit_tiny.pth", precision: .int8)
        let file = try Self.encoded(fp32).embeddingFile()
        let other = Session(model: int8, threads: 1)
        XCTAssertThrowsError(try file.withUnsafeBytes { try other.setEmbedding($0) }) { e in
            XCTAssertTrue("\(e)".contains("another model"), "\(e)")
        }
        XCTAssertThrowsError(try other.predict(box: BoxPrompt(x0: 0, y0: 0, x1: 10, y1: 10))) {
            XCTAssertEqual($0 as? PocketSAMError, .noImage)
        }
        let s = Session(model: fp32, threads: 1)
        var rng = SplitMix64(seed: 23)
        var refused = 0
        let lengths = Array(0..<200) + (0..<200).map { _ in Int(rng.next() % UInt64(file.count)) }
        for n in lengths {
            XCTAssertThrowsError(try Array(file.prefix(n)).withUnsafeBytes { try s.setEmbedding($0) }, "truncated to \(n)")
            refused += 1
        }
        for _ in 0..<600 {
            var m = file
            let at = rng.next() % 4 == 0 ? Int(rng.next() % 112) : Int(rng.next() % UInt64(m.count))
            m[at] ^= UInt8(1 + rng.next() % 255)
            XCTAssertThrowsError(try m.withUnsafeBytes { try s.setEmbedding($0) }, "byte \(at) changed") { e in
                guard case .invalidEmbedding = e as? PocketSAMError else { return XCTFail("\(e)") }
            }
            refused += 1
        }
        var longer = file
        longer.append(0)
        XCTAssertThrowsError(try longer.withUnsafeBytes { try s.setEmbedding($0) })
        // Well-formed files (checksum recomputed) whose content is wrong: each refused by its own check.
        func resealed(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
            var m = file
            edit(&m)
            var crc = CRC32()
            m.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[0..<(m.count - 4)])) }
            withUnsafeBytes(of: crc.value.littleEndian) { for i in 0..<4 { m[m.count - 4 + i] = $0[i] } }
            return m
        }
        func put(_ v: UInt32, at o: Int, _ m: inout [UInt8]) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { m[o + i] = $0[i] } } }
        for (what, edit, expected) in [
            ("NaN", { (m: inout [UInt8]) in put(Float.nan.bitPattern, at: 112 + 4 * 77, &m) }, "not finite"),
            ("resized", { (m: inout [UInt8]) in put(99, at: 88, &m) }, "does not follow"),
            ("huge grid", { (m: inout [UInt8]) in put(0xFFFF_FFFF, at: 96, &m) }, "the model's is"),
            ("huge image", { (m: inout [UInt8]) in put(1 << 30, at: 80, &m) }, "image size"),
            ("hq count", { (m: inout [UInt8]) in put(7, at: 104, &m) }, "HQ-feature"),
        ] as [(String, (inout [UInt8]) -> Void, String)] {
            let m = resealed(edit)
            XCTAssertThrowsError(try m.withUnsafeBytes { try s.setEmbedding($0) }, what) {
                XCTAssertTrue("\($0)".contains(expected), "\(what): \($0)")
            }
            refused += 1
        }
        print("embedding fuzz: \(refused) hostile files refused")
        // An embedding carries no pixels: the session's resized image is empty, not the previous image's.
        try file.withUnsafeBytes { try s.setEmbedding($0) }
        XCTAssertEqual(s.resizedImage(), [])
    }

    /// `predict(prompts:)` answers as one `predict` per prompt, bit for bit (folded batches, the plain decoder's mask
    /// input, HQ-SAM one by one), on 1 and 2 threads; a bad prompt anywhere fails the call naming it.
    func testBatchEqualsOnePredictPerPrompt() throws {
        for (tag, model) in try Self.models() {
            for threads in [1, 2] {
                let s = try Self.encoded(model)
                let single = Session(model: model, threads: threads)
                try s.embeddingFile().withUnsafeBytes { try single.setEmbedding($0) }
                let batchSession = Session(model: model, threads: threads)
                try s.embeddingFile().withUnsafeBytes { try batchSession.setEmbedding($0) }
                let mi = try single.predict(box: BoxPrompt(x0: 150, y0: 60, x1: 330, y1: 270)).lowResLogits
                let prompts = Self.prompts(maskInput: mi)
                let batch = try batchSession.predict(prompts: prompts)
                XCTAssertEqual(batch.count, prompts.count)
                for (i, p) in prompts.enumerated() {
                    let one = try single.predict(points: p.points, box: p.box, maskInput: p.maskInput, multimask: p.multimask)
                    Self.assertSame(batch[i], one, "\(tag), \(threads) threads, prompt \(i)")
                }
            }
        }
        let s = try Self.encoded(try RandomModelParityTests.model("vit_tiny.pth"))
        XCTAssertThrowsError(try s.predict(prompts: [Prompt(box: BoxPrompt(x0: 0, y0: 0, x1: 10, y1: 10)),
                                                     Prompt(box: BoxPrompt(x0: 10, y0: 0, x1: 0, y1: 10))])) {
            XCTAssertTrue("\($0)".contains("prompt 1") && "\($0)".contains("inverted"), "\($0)")
        }
    }

    /// A session over exactly the planned arena answers batches of the largest prompts the batched decoder takes
    /// (57 points and a box, three masks) and of boxes: the plan covers what `predict(prompts:)` groups.
    func testBatchFitsThePlannedArena() throws {
        let model = try RandomModelParityTests.model("mobilesam_tiny.pth")
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: try model.plannedArenaBytes(), alignment: 64)
        defer { raw.deallocate() }
        let s = try Session(model: model, threads: 2, buffer: raw)
        let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/chelsea.png"))
        try img.pixels.withUnsafeBufferPointer {
            try s.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
        }
        let many = (0..<57).map { (i: Int) -> PointPrompt in PointPrompt(x: Float(5 + 7 * i), y: Float(10 + 4 * i)) }
        let big = Prompt(points: many, box: BoxPrompt(x0: 0, y0: 0, x1: 451, y1: 300), multimask: true)
        let r = try s.predict(prompts: Array(repeating: big, count: 6) + Self.prompts(maskInput: nil))
        XCTAssertEqual(r.count, 6 + Self.prompts(maskInput: nil).count)
        Self.assertSame(r[0], try s.predict(points: big.points, box: big.box, multimask: true), "57 points and a box")
    }

    /// Segment everything stops when its progress closure says so.
    func testGenerateIsCancelledByItsProgressClosure() throws {
        let model = try RandomModelParityTests.model("vit_tiny.pth")
        let img = try ImageIO.read(try LiteMedSAMParityTests.asset("images/chelsea.png"))
        let session = Session(model: model, threads: 2)
        var o = MaskGeneratorOptions()
        o.pointsPerBatch = 16
        var calls = 0
        XCTAssertThrowsError(try img.pixels.withUnsafeBufferPointer {
            try session.generate(pixels: $0.baseAddress!, width: img.width, height: img.height, options: o,
                                 progress: { (_: GenerationProgress) -> Bool in calls += 1; return calls < 3 })
        }) { XCTAssertEqual($0 as? PocketSAMError, .cancelled) }
        XCTAssertEqual(calls, 3)
        // The README's form: a one-expression closure returning false stops at the first batch.
        let stop = true
        XCTAssertThrowsError(try img.pixels.withUnsafeBufferPointer {
            try session.generate(pixels: $0.baseAddress!, width: img.width, height: img.height, options: o) { _ in !stop }
        }) { XCTAssertEqual($0 as? PocketSAMError, .cancelled) }
        // Still usable afterwards.
        let r = try img.pixels.withUnsafeBufferPointer {
            try session.generate(pixels: $0.baseAddress!, width: img.width, height: img.height, options: o,
                                 progress: { (_: GenerationProgress) -> Bool in true })
        }
        XCTAssertGreaterThan(r.stats.decoderCalls, 0)
    }

    /// `pocketsam encode` then `segment --embedding` writes the same masks and logits as `segment --image`; several
    /// `--box` give one result per box, equal to one run per box.
    func testEncodeAndSegmentWithEmbeddingAndManyBoxes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("psam-emb-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("m.psam").path
        try Converter.convert(try Checkpoint(path: RandomModelParityTests.dir.appendingPathComponent("vit_tiny.pth").path)).writer.write(to: model)
        let image = try LiteMedSAMParityTests.asset("images/chelsea.png")
        let emb = dir.appendingPathComponent("chelsea.psemb").path
        let e = try SegmentCommandTests.run(["encode", "--model", model, "--image", image, "-o", emb])
        XCTAssertEqual(e.status, 0, e.err)
        let boxes = ["150,60,330,270", "20,15,100,105", "200,100,420,290"]
        func segment(_ source: [String], _ boxes: [String], _ out: String) throws {
            let r = try SegmentCommandTests.run(["segment", "--model", model] + source + boxes.flatMap { ["--box", $0] }
                                                + ["--out", dir.appendingPathComponent(out).path])
            XCTAssertEqual(r.status, 0, r.err)
        }
        func bytes(_ out: String, _ f: String) throws -> Data { try Data(contentsOf: dir.appendingPathComponent(out + "/" + f)) }
        try segment(["--image", image], [boxes[0]], "img")
        try segment(["--embedding", emb], [boxes[0]], "emb")
        try segment(["--embedding", emb, "--image", image], [boxes[0]], "emb-img")
        for f in ["mask_0.png", "lowres.npy"] {
            XCTAssertEqual(try bytes("img", f), try bytes("emb", f), f)
            XCTAssertEqual(try bytes("img", f), try bytes("emb-img", f), f)
        }
        XCTAssertEqual(try bytes("img", "overlay.png"), try bytes("emb-img", "overlay.png"))
        try segment(["--embedding", emb], boxes, "many")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try bytes("many", "result.json")) as? [String: Any])
        XCTAssertEqual((json["results"] as? [Any])?.count, 3)
        let low = try NPY.decode(Array(try bytes("many", "lowres.npy")))
        XCTAssertEqual(low.shape, [3, 64, 64])
        for (i, b) in boxes.enumerated() {
            try segment(["--embedding", emb], [b], "one\(i)")
            XCTAssertEqual(try bytes("many", "mask_\(i).png"), try bytes("one\(i)", "mask_0.png"), "box \(i)")
        }
        // Refusals: an embedding of another model file; --point with several boxes; neither --image nor --embedding.
        let other = dir.appendingPathComponent("o.psam").path
        try Converter.convert(try Checkpoint(path: RandomModelParityTests.dir.appendingPathComponent("vit_tiny.pth").path), options: .init(precision: .fp16)).writer.write(to: other)
        let r1 = try SegmentCommandTests.run(["segment", "--model", other, "--embedding", emb, "--box", boxes[0], "--out", dir.path + "/x"])
        XCTAssertEqual(r1.status, 3)
        XCTAssertTrue(r1.err.contains("another model"), r1.err)
        let r2 = try SegmentCommandTests.run(["segment", "--model", model, "--embedding", emb, "--box", boxes[0], "--box", boxes[1],
                                              "--point", "10,10", "--out", dir.path + "/x"])
        XCTAssertNotEqual(r2.status, 0)
        XCTAssertTrue(r2.err.contains("several --box"), r2.err)
        let r3 = try SegmentCommandTests.run(["segment", "--model", model, "--box", boxes[0], "--out", dir.path + "/x"])
        XCTAssertEqual(r3.status, 64, r3.err)
        XCTAssertTrue(r3.err.contains("--image or --embedding"), r3.err)
    }
}

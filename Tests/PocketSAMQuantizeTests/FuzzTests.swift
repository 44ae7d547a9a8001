import Foundation
import PocketSAMFormat
import PocketSAMQuantize
import XCTest

/// Seeded mutation fuzzing of the checkpoint reader (zip + pickle + tensor views + detection +
/// conversion) and of the `.psam` reader. Every mutated input must either load or throw one of our
/// errors; a crash kills the test process, which fails the run. Reproducible from the seed; set
/// PSAM_FUZZ_CASES to run more cases than CI's 12,000.
final class FuzzTests: XCTestCase {
    static var cases: Int { Int(ProcessInfo.processInfo.environment["PSAM_FUZZ_CASES"] ?? "") ?? 6000 }

    /// A small SAM-ViT state dict written like torch.save, so each case runs the whole pipeline fast.
    static func seedCheckpoint() -> [UInt8] { seedSave().bytes() }

    static func seedSave() -> TorchSave {
        let config = ModelConfig(
            variant: .sam,
            encoder: .vit(ViTConfig(imageSize: 32, patchSize: 16, embedDim: 8, depth: 2, numHeads: 2, mlpDim: 16,
                                    windowSize: 1, globalAttnIndexes: [1], qkvBias: true, outChans: 16)),
            prompt: PromptEncoderConfig(embedDim: 16, embeddingSize: 2, inputImageSize: 32, maskInChans: 4),
            decoder: MaskDecoderConfig(transformerDim: 16, depth: 1, numHeads: 8, mlpDim: 8, attentionDownsampleRate: 2,
                                       numMultimaskOutputs: 3, iouHeadDepth: 2, iouHeadHiddenDim: 8),
            normalization: .imageNet)
        var save = TorchSave()
        var k: Float = 0
        for spec in config.tensorSpecs() {
            let n = spec.shape.reduce(1, *)
            save.tensors.append(.init(name: spec.name, shape: spec.shape, values: (0..<n).map { _ in k += 0.37; return sin(k) }))
        }
        return save
    }

    /// One mutation of `seed`, chosen by `rng`.
    static func mutate(_ seed: [UInt8], _ rng: inout SplitMix64, hot: Range<Int>) -> [UInt8] {
        var b = seed
        func pos() -> Int {
            // Half the edits land in the structural bytes (headers, pickle, directory).
            if Bool.random(using: &rng), !hot.isEmpty { return Int.random(in: hot, using: &rng) }
            return Int.random(in: 0..<b.count, using: &rng)
        }
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            for _ in 0..<Int.random(in: 1...8, using: &rng) { b[pos()] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng)) }
        case 1:
            for _ in 0..<Int.random(in: 1...4, using: &rng) { b[pos()] = UInt8.random(in: 0...255, using: &rng) }
        case 2:
            b = Array(b[0..<Int.random(in: 0..<b.count, using: &rng)])
        case 3:
            let at = pos()
            let n = min(Int.random(in: 1...64, using: &rng), b.count - at)
            b.removeSubrange(at..<(at + n))
        case 4:
            let at = pos()
            b.insert(contentsOf: (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
        default:
            // An interesting 32-bit value over a field.
            let at = min(pos(), b.count - 4)
            let v = [UInt32(0), 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, UInt32(b.count), UInt32(b.count + 1),
                     0xFFFF].randomElement(using: &rng)!
            if at >= 0 { for i in 0..<4 { b[at + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) } }
        }
        return b
    }

    func testMutatedCheckpointsNeverCrash() throws {
        let seed = Self.seedCheckpoint()
        // The seed itself converts.
        XCTAssertNoThrow(try Converter.convert(try Checkpoint(storage: ByteStorage(copying: seed), path: "seed"),
                                               options: .init(precision: .fp16)))
        var rng = SplitMix64(seed: 0x5EED_0001)
        let pklEnd = min(seed.count, 20_000)
        var loaded = 0, converted = 0, rejected = 0
        // Half the cases mutate the file as it is (the zip's CRC-32s catch most data edits); the other
        // half mutate only data.pkl and re-zip it with valid CRCs, so the pickle reader meets every edit.
        let zip = Self.seedSave().zip()
        let pickle = zip.entries[0].data
        for i in 0..<Self.cases {
            var m: [UInt8]
            if i % 2 == 0 {
                m = Self.mutate(seed, &rng, hot: 0..<pklEnd)
            } else {
                var z = zip
                z.entries[0].data = Self.mutate(pickle, &rng, hot: 0..<pickle.count)
                m = z.bytes()
            }
            do {
                let c = try Checkpoint(storage: ByteStorage(copying: m), path: "fuzz")
                loaded += 1
                _ = try Converter.convert(c, options: .init(precision: .fp16))
                converted += 1
            } catch {
                // Typed throws: the error is a CheckpointError (the compiler checks it), never a crash.
                rejected += 1
            }
        }
        print("checkpoint fuzz: \(Self.cases) cases, \(loaded) loaded, \(converted) converted, \(rejected) rejected")
        XCTAssertGreaterThan(rejected, Self.cases / 4, "mutations should mostly be caught")
    }

    func testMutatedPSAMFilesNeverCrash() throws {
        let seedCkpt = try Checkpoint(storage: ByteStorage(copying: Self.seedCheckpoint()), path: "seed")
        let seed = try Converter.convert(seedCkpt, options: .init(precision: .int8)).writer.serialize()
        var rng = SplitMix64(seed: 0x5EED_0002)
        let dataStart = Self.field(seed, 56)
        var opened = 0
        for i in 0..<Self.cases {
            var m = Self.mutate(seed, &rng, hot: 0..<dataStart)
            // A third of the cases repair the directory CRC so the parser meets the change itself, and a
            // third skip checksum verification.
            let mode = i % 3
            if mode == 1, m.count >= 80 { fixDirectoryCRC(&m) }
            do {
                let f = try PSAMFile(storage: ByteStorage(copying: m), options: .init(verifyChecksums: mode == 0))
                for e in f.tensors { _ = f.floatValues(of: e) }  // every validated view must be readable
                opened += 1
            } catch {
                _ = error as PSAMError  // typed throws: only PSAMError can reach here (checked by the compiler)
            }
        }
        print("psam fuzz: \(Self.cases) cases, \(opened) opened")
    }

    /// Recomputes the directory CRC when the header's offsets still point inside the file.
    static func field(_ b: [UInt8], _ o: Int) -> Int {
        var v: UInt64 = 0
        for i in (0..<8).reversed() { v = v << 8 | UInt64(b[o + i]) }
        return v > UInt64(b.count) ? Int.max / 4 : Int(v)
    }

    func fixDirectoryCRC(_ b: inout [UInt8]) {
        let snapshot = b
        let mo = Self.field(snapshot, 24), ml = Self.field(snapshot, 32)
        let to = Self.field(snapshot, 40), tl = Self.field(snapshot, 48)
        guard mo <= snapshot.count, ml <= snapshot.count - mo, to <= snapshot.count, tl <= snapshot.count - to else { return }
        var c = CRC32()
        c.update(Array(snapshot[0..<72]))
        c.update(Array(snapshot[mo..<(mo + ml)]))
        c.update(Array(snapshot[to..<(to + tl)]))
        let crc = c.value
        for i in 0..<4 { b[72 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
    }
}

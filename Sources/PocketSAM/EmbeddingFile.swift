#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PocketSAMFormat

/// A `.psemb` file: what `predict` needs of an encoded image (the embedding, the original and resized sizes, and for
/// HQ-SAM the HQ features), tied to the model that made it by the model file's fingerprint. Layout in docs/FORMAT.md.
enum EmbeddingFile {
    static let magic: [UInt8] = [0x50, 0x53, 0x45, 0x4D, 0x42, 0x0D, 0x0A, 0x1A]  // "PSEMB\r\n\x1a"
    static let version: UInt32 = 1
    static let headerSize = 112

    /// The parts of a validated file: where the floats start, and the image sizes.
    struct Parsed {
        var original: (h: Int, w: Int)
        var resized: (h: Int, w: Int)
        var embeddingOffset: Int
        var embeddingCount: Int
        var hqOffset: Int
        var hqCount: Int
    }

    static func size(embedding: Int, hq: Int) -> Int { headerSize + 4 * (embedding + hq) + 4 }

    /// Floats of the HQ features `model` keeps per image (`[4G, 4G, C/8]`; 0 for a model without HQ parts).
    static func hqCount(_ model: Model) -> Int {
        let g = model.config.prompt.embeddingSize, c = model.config.prompt.embedDim
        return model.maskDecoder.hq == nil ? 0 : 16 * g * g * (c / 8)
    }

    /// Writes the file into `out` (exactly `size(...)` bytes).
    static func write(fingerprint: String, original: (h: Int, w: Int), resized: (h: Int, w: Int), grid: Int, channels: Int,
                      embedding: UnsafePointer<Float>, hq: UnsafePointer<Float>?, hqCount: Int, into out: UnsafeMutableRawBufferPointer) {
        let n = grid * grid * channels
        precondition(out.count == size(embedding: n, hq: hqCount), "the buffer is not embeddingFileSize() bytes")
        var at = 0
        func put(_ bytes: some Collection<UInt8>) { for b in bytes { out[at] = b; at += 1 } }
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { put($0) } }
        put(magic)
        u32(Int(version))
        u32(0)
        let fp = Array(fingerprint.utf8)
        put(fp.prefix(64) + [UInt8](repeating: 0x30, count: max(0, 64 - fp.count)))
        for v in [original.h, original.w, resized.h, resized.w, grid, channels, hqCount, 0] { u32(v) }
        (out.baseAddress! + at).copyMemory(from: embedding, byteCount: 4 * n)
        at += 4 * n
        if let hq, hqCount > 0 {
            (out.baseAddress! + at).copyMemory(from: hq, byteCount: 4 * hqCount)
            at += 4 * hqCount
        }
        var crc = CRC32()
        crc.update(UnsafeRawBufferPointer(rebasing: out[0..<at]))
        u32(Int(crc.value))
    }

    /// Validates a file against `model`: magic, version, the model's fingerprint, sizes, the checksum and finite values.
    static func parse(_ b: UnsafeRawBufferPointer, model: Model) throws(PocketSAMError) -> Parsed {
        func bad(_ why: String) -> PocketSAMError { .invalidEmbedding(why) }
        guard b.count >= headerSize + 4 else { throw bad("\(b.count) bytes is shorter than a .psemb header") }
        guard b[0..<8].elementsEqual(magic) else { throw bad("not a .psemb image embedding (bad magic)") }
        func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        guard u32(8) == Int(version) else { throw bad("format version \(u32(8)); this library reads version \(version)") }
        guard u32(12) == 0 else { throw bad("flags \(u32(12)) are not defined in version 1") }
        let fp = String(decoding: b[16..<80], as: UTF8.self)
        guard fp == model.file.fingerprint else {
            throw bad("made by another model or model file (fingerprint \(fp.prefix(16))…; this model's is \(model.file.fingerprint.prefix(16))…)")
        }
        let h = u32(80), w = u32(84), rh = u32(88), rw = u32(92), g = u32(96), c = u32(100), hq = u32(104)
        let cfg = model.config
        guard g == cfg.prompt.embeddingSize, c == cfg.prompt.embedDim else {
            throw bad("embedding \(g)×\(g)×\(c), the model's is \(cfg.prompt.embeddingSize)×\(cfg.prompt.embeddingSize)×\(cfg.prompt.embedDim)")
        }
        let wantHQ = hqCount(model)
        guard hq == wantHQ else { throw bad("\(hq) HQ-feature values, the model needs \(wantHQ)") }
        guard u32(108) == 0 else { throw bad("reserved field is not 0") }
        guard h >= 2, w >= 2, h <= Session.maxImageSide, w <= Session.maxImageSide else { throw bad("image size \(w)×\(h)") }
        let r = Preprocess.resizedShape(h: h, w: w, long: cfg.encoder.imageSize)
        guard r.0 == rh, r.1 == rw else { throw bad("resized size \(rw)×\(rh) does not follow from the image's \(w)×\(h)") }
        let n = g * g * c
        guard b.count == size(embedding: n, hq: hq) else {
            throw bad("\(b.count) bytes; a \(w)×\(h) embedding of this model is \(size(embedding: n, hq: hq)) bytes")
        }
        var crc = CRC32()
        crc.update(UnsafeRawBufferPointer(rebasing: b[0..<(b.count - 4)]))
        guard crc.value == UInt32(u32(b.count - 4)) else { throw bad("checksum mismatch (the file is corrupt)") }
        for i in 0..<(n + hq) {
            let v = Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: headerSize + 4 * i, as: UInt32.self)))
            guard v.isFinite else { throw bad("value \(i) is not finite") }
        }
        return Parsed(original: (h, w), resized: (rh, rw), embeddingOffset: headerSize, embeddingCount: n,
                      hqOffset: headerSize + 4 * n, hqCount: hq)
    }
}

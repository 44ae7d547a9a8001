import CPNG
import CTurboJPEG

#if canImport(Glibc)
import Glibc
#endif

/// An 8-bit image in memory: `channels` 1 (gray) or 3 (RGB), rows packed (`width × channels` bytes).
public struct Image: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

public enum ImageIOError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    case unknownFormat(path: String)
    case corrupt(path: String, reason: String)
    case tooLarge(path: String, width: Int, height: Int)

    public var description: String {
        switch self {
        case let .cannotRead(p, r): return "cannot read '\(p)': \(r)"
        case let .cannotWrite(p, r): return "cannot write '\(p)': \(r)"
        case let .unknownFormat(p): return "'\(p)' is neither a JPEG nor a PNG image"
        case let .corrupt(p, r): return "'\(p)' is not a valid image: \(r)"
        case let .tooLarge(p, w, h): return "'\(p)' is \(w)×\(h), over the \(ImageIO.maxSide)-pixel limit"
        }
    }
}

public enum ImageIO {
    /// Images larger than this on a side are refused before decoding.
    public static let maxSide = 16384

    public static func readFile(_ path: String) throws -> [UInt8] {
        guard let f = fopen(path, "rb") else { throw ImageIOError.cannotRead(path: path, reason: String(cString: strerror(errno))) }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        if ferror(f) != 0 { throw ImageIOError.cannotRead(path: path, reason: "read error") }
        return out
    }

    /// Decodes a JPEG or PNG file (by its magic bytes) to gray or RGB; alpha is dropped.
    public static func read(_ path: String) throws -> Image {
        let data = try readFile(path)
        if data.count >= 3, data[0] == 0xFF, data[1] == 0xD8, data[2] == 0xFF { return try decodeJPEG(data, path: path) }
        if data.count >= 8, data[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return try decodePNG(data, path: path)
        }
        throw ImageIOError.unknownFormat(path: path)
    }

    public static func decodeJPEG(_ data: [UInt8], path: String = "<memory>") throws -> Image {
        guard let tj = tjInitDecompress() else { throw ImageIOError.corrupt(path: path, reason: "libturbojpeg failed to start") }
        defer { tjDestroy(tj) }
        var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, cs: Int32 = 0
        let ok = data.withUnsafeBufferPointer { tjDecompressHeader3(tj, $0.baseAddress, UInt($0.count), &w, &h, &sub, &cs) }
        guard ok == 0 else { throw ImageIOError.corrupt(path: path, reason: String(cString: tjGetErrorStr2(tj))) }
        guard w > 0, h > 0 else { throw ImageIOError.corrupt(path: path, reason: "empty image") }
        guard w <= maxSide, h <= maxSide else { throw ImageIOError.tooLarge(path: path, width: Int(w), height: Int(h)) }
        let gray = cs == Int32(TJCS_GRAY.rawValue)
        let ch = gray ? 1 : 3
        var px = [UInt8](repeating: 0, count: Int(w) * Int(h) * ch)
        let r = data.withUnsafeBufferPointer { src in
            px.withUnsafeMutableBufferPointer { dst in
                tjDecompress2(tj, src.baseAddress, UInt(src.count), dst.baseAddress, w, w * Int32(ch), h,
                              gray ? Int32(TJPF_GRAY.rawValue) : Int32(TJPF_RGB.rawValue), 0)
            }
        }
        guard r == 0 else { throw ImageIOError.corrupt(path: path, reason: String(cString: tjGetErrorStr2(tj))) }
        return Image(width: Int(w), height: Int(h), channels: ch, pixels: px)
    }

    static func message(_ img: png_image) -> String {
        var m = img.message
        return withUnsafeBytes(of: &m) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    public static func decodePNG(_ data: [UInt8], path: String = "<memory>") throws -> Image {
        var img = png_image()
        img.version = UInt32(PNG_IMAGE_VERSION)
        let ok = data.withUnsafeBufferPointer { png_image_begin_read_from_memory(&img, $0.baseAddress, $0.count) }
        guard ok != 0 else { throw ImageIOError.corrupt(path: path, reason: message(img)) }
        guard img.width > 0, img.height > 0 else {
            png_image_free(&img)
            throw ImageIOError.corrupt(path: path, reason: "empty image")
        }
        guard img.width <= maxSide, img.height <= maxSide else {
            png_image_free(&img)
            throw ImageIOError.tooLarge(path: path, width: Int(img.width), height: Int(img.height))
        }
        let color = (img.format & UInt32(PNG_FORMAT_FLAG_COLOR)) != 0
        img.format = color ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
        let ch = color ? 3 : 1
        let w = Int(img.width), h = Int(img.height)
        var px = [UInt8](repeating: 0, count: w * h * ch)
        let r = px.withUnsafeMutableBytes { png_image_finish_read(&img, nil, $0.baseAddress, Int32(w * ch), nil) }
        guard r != 0 else {
            let m = message(img)
            png_image_free(&img)
            throw ImageIOError.corrupt(path: path, reason: m)
        }
        return Image(width: w, height: h, channels: ch, pixels: px)
    }

    /// Writes an 8-bit gray or RGB PNG.
    public static func writePNG(_ image: Image, to path: String) throws {
        var img = png_image()
        img.version = UInt32(PNG_IMAGE_VERSION)
        img.width = UInt32(image.width)
        img.height = UInt32(image.height)
        img.format = image.channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
        let r = image.pixels.withUnsafeBytes {
            png_image_write_to_file(&img, path, 0, $0.baseAddress, Int32(image.width * image.channels), nil)
        }
        guard r != 0 else { throw ImageIOError.cannotWrite(path: path, reason: message(img)) }
    }
}

import PocketSAMFormat
import PocketSAMIO

/// The images an int8 conversion calibrates on: the user's files (`--calibrate`), the built-in set
/// (`BuiltinCalibration`) when there are none or when one of them is `builtin`, and what the file records of them.
public struct CalibrationPlan {
    public private(set) var inputs: [(name: String, image: Image)] = []
    /// For `psam.calibration`: the method and the images (the built-in set by version, count, size and kinds).
    public private(set) var note = ""
    /// SHA-256 of every image's pixels in order (`psam.calibration_sha256`).
    public private(set) var fingerprint = ""
    /// One line for progress output.
    public private(set) var summary = ""

    /// The built-in images for a model: the full set for TinyViT encoders; for the SAM ViTs, whose fp32 pass over a
    /// 1024-px image takes tens of seconds (ViT-B) to minutes (ViT-H) on the portable kernels, the first two.
    public static func builtinKinds(for config: ModelConfig) -> [BuiltinCalibration.Kind] {
        switch config.encoder {
        case .tinyViT: return BuiltinCalibration.defaultKinds
        case .vit: return Array(BuiltinCalibration.defaultKinds.prefix(2))
        }
    }

    public static func imageSize(of config: ModelConfig) -> Int {
        switch config.encoder {
        case let .vit(v): return v.imageSize
        case let .tinyViT(t): return t.imageSize
        }
    }

    public init(files: [String], config: ModelConfig) throws {
        let paths = files.filter { $0 != "builtin" }
        let builtin = paths.isEmpty || paths.count < files.count
        var parts: [String] = []
        for path in paths { inputs.append((path, try ImageIO.read(path))) }
        if !paths.isEmpty { parts.append(paths.map { String($0.split(separator: "/").last ?? "") }.joined(separator: ", ")) }
        if builtin {
            let size = Self.imageSize(of: config), kinds = Self.builtinKinds(for: config)
            let images = BuiltinCalibration.images(size: size, kinds: kinds)
            inputs += images
            parts.append("the built-in set v\(BuiltinCalibration.version) (\(images.count) images of \(size) px: "
                         + kinds.map(\.rawValue).joined(separator: ", ") + ")")
        }
        fingerprint = BuiltinCalibration.fingerprint(inputs)
        note = "GPTQ on " + parts.joined(separator: " and ")
        summary = "\(inputs.count) image(s): " + parts.joined(separator: " and ")
    }

    /// Writes the images as PNG files named after them into `dir` (created if needed).
    public func save(into dir: String, say: (String) -> Void) throws {
        try makeDirectory(dir)
        for (name, image) in inputs {
            let base = String(name.split(separator: "/").last ?? Substring(name))
            let path = dir + "/" + (base.hasSuffix(".png") ? base : base + ".png")
            try ImageIO.writePNG(image, to: path)
            say("wrote \(path)")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Creates the folder unless it exists (as `pocketsam segment --out` does).
func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
        throw CheckpointError.cannotOpen(path: path, reason: "cannot create the folder: \(String(cString: strerror(errno)))")
    }
}

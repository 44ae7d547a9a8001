#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PocketSAMFormat

/// A model with seeded random weights for a given architecture, converted like a checkpoint: for
/// benchmarks of published architectures whose weights we do not ship (speed does not depend on the
/// weight values). Masks from such a model mean nothing.
///
/// Values follow `Tests/Reference/make_random_checkpoints.py`: layer-norm weights 1 + 0.2·N(0,1), other
/// vectors N(0,1)/4, matrices N(0,1)/√fan_in, so activations keep a sensible range through the depth.
public enum RandomCheckpoint {
    public static func convert(config: ModelConfig, seed: UInt64, options: ConversionOptions = ConversionOptions(),
                               progress: (String) -> Void = { _ in }) throws(CheckpointError) -> ConversionResult {
        let specs = config.tensorSpecs()
        let total = specs.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let storage = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(total, 1))
        defer { storage.deallocate() }
        var rng = SplitMix64(seed: seed)
        var tensors: [String: SourceTensor] = [:]
        var list: [SourceTensor] = []
        var at = 0
        for spec in specs {
            let n = spec.shape.reduce(1, *)
            let fanIn = spec.shape.count > 1 ? n / spec.shape[0] : 16
            let isNormWeight = spec.role == .norm && spec.name.hasSuffix("weight")
            for i in 0..<n {
                let g = Float(rng.gaussian())
                storage[at + i] = isNormWeight ? 1 + 0.2 * g : g / Float(fanIn).squareRoot()
            }
            var strides = [Int](repeating: 1, count: spec.shape.count)
            for d in stride(from: spec.shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * spec.shape[d + 1] }
            let t = SourceTensor(name: spec.name, dtype: .f32, shape: spec.shape, strides: strides, storageOffset: 0,
                                 storage: UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: storage[at..<(at + n)])))
            tensors[spec.name] = t
            list.append(t)
            at += n
        }
        progress("random weights for \(Converter.describe(config)), seed \(seed)")
        return try Converter.convert(tensors: tensors, config: config, source: list, stripModule: false, format: Checkpoint.Format.random.rawValue,
                                     sourceSHA256: "random seed \(seed)", options: options, progress: progress)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014) with Box–Muller normals: deterministic on every platform (also the
/// tests' seeded fuzzers).
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    public mutating func uniform() -> Double { Double((next() >> 11) + 1) / Double(1 << 53) }

    public mutating func gaussian() -> Double {
        let u = uniform(), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
}

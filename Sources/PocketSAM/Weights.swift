import PocketSAMKernels

/// An int8 weight matrix `[n, k]` in the kernels' panel layout, read in place from the mapped file,
/// with its scales and per-group weight sums laid out group-major for the kernels (small tables built
/// at load: `groups · n` values each).
struct QWeight {
    let data: UnsafePointer<Int8>
    /// `[groups][np]`, zero past `n`.
    let scales: UnsafePointer<Float>
    /// `[groups][np]`: Σ of the int8 weights over each group (the zero-point correction).
    let sums: UnsafePointer<Int32>
    let n: Int, k: Int, kp: Int, group: Int
}

/// Weight pointers resolved once at load, so inference never looks a tensor up by name (which would
/// build strings on the heap). Every name here is in the configuration's spec, validated at load.
/// A linear or conv weight is either fp32 (`w`) or packed int8 (`q`, then `w` is nil).
struct Lin {
    let w: UnsafePointer<Float>!
    let b: UnsafePointer<Float>?
    let q: QWeight?
    /// The weight tensor's name (for calibration hooks).
    let name: String
}

struct Norm {
    let w: UnsafePointer<Float>
    let b: UnsafePointer<Float>
}

extension Model {
    func lin(_ p: String, bias: Bool = true) -> Lin {
        Lin(w: qweights[p + ".weight"] == nil ? w(p + ".weight") : nil, b: bias ? w(p + ".bias") : nil, q: qweights[p + ".weight"],
            name: p + ".weight")
    }
    func norm(_ p: String) -> Norm { Norm(w: w(p + ".weight"), b: w(p + ".bias")) }
}

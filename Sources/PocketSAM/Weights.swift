/// Weight pointers resolved once at load, so inference never looks a tensor up by name (which would
/// build strings on the heap). Every name here is in the configuration's spec, validated at load.
struct Lin {
    let w: UnsafePointer<Float>
    let b: UnsafePointer<Float>?
}

struct Norm {
    let w: UnsafePointer<Float>
    let b: UnsafePointer<Float>
}

extension Model {
    func lin(_ p: String, bias: Bool = true) -> Lin { Lin(w: w(p + ".weight"), b: bias ? w(p + ".bias") : nil) }
    func norm(_ p: String) -> Norm { Norm(w: w(p + ".weight"), b: w(p + ".bias")) }
}

/// A growable buffer owned by a session: it reallocates only when asked for more than it holds, so
/// after the first image of a given size nothing is allocated.
final class Scratch<T> {
    private(set) var base: UnsafeMutablePointer<T>
    private(set) var capacity: Int

    init() {
        base = UnsafeMutablePointer<T>.allocate(capacity: 1)
        capacity = 1
    }

    deinit { base.deallocate() }

    /// At least `n` elements (contents undefined after growth).
    func reserve(_ n: Int) -> UnsafeMutablePointer<T> {
        if n > capacity {
            base.deallocate()
            capacity = max(n, capacity * 2)
            base = UnsafeMutablePointer<T>.allocate(capacity: capacity)
        }
        return base
    }
}

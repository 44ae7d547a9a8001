#if canImport(Glibc)
import Glibc
#endif

/// Activation memory of one session, used like a stack: layers take scratch with `alloc` and give it
/// back with `reset(to:)`. Two modes:
/// - fixed: one region of a planned size (`Model.plannedArenaBytes`), the session's own or a buffer
///   the caller brings; every pass of this model fits in it by construction;
/// - growing: 64-byte aligned chunks added the first time a pass needs them, reused after.
/// Either way a second pass of the same model allocates nothing.
final class Arena {
    private var chunks: [(base: UnsafeMutableRawPointer, size: Int)] = []
    private var chunk = 0
    private var offset = 0
    private let chunkSize: Int
    private let growing: Bool
    private let release: (UnsafeMutableRawPointer, Int) -> Void
    /// Highest number of bytes in use at once so far (in growing mode, whole earlier chunks count).
    private(set) var peakBytes = 0

    /// Test hook: called with named intermediate activations (channels-last, with their shape).
    var tap: ((String, UnsafePointer<Float>, [Int]) -> Void)?

    /// Calibration hook: called with each linear/conv layer's weight name and its input rows
    /// (`a`, rows, columns, row stride) before the layer runs (nil in normal use).
    var linearInputHook: ((String, UnsafePointer<Float>, Int, Int, Int) -> Void)?

    /// Multiply-accumulates issued by GEMMs, matmuls and convolutions so far (for benchmarks).
    var macs = 0

    /// The session's worker threads (nil: single-threaded).
    var pool: ThreadPool?
    var threads: Int { pool?.size ?? 1 }
    /// Per-thread scratch slots the block jobs allocate: one per thread up to `Ops.windowSlots` (more threads run such
    /// jobs on the calling thread), and `Ops.windowSlots` when planning, so that the plan holds for any session.
    var slots: Int { planning ? Ops.windowSlots : min(threads, Ops.windowSlots) }
    /// A measuring arena (`measuring()`), whose peak becomes the planned size.
    private(set) var planning = false

    struct Mark { let chunk: Int; let offset: Int }
    static let bottom = Mark(chunk: 0, offset: 0)

    /// A growing arena.
    init(chunkSize: Int = 32 << 20) {
        self.chunkSize = chunkSize
        growing = true
        release = { p, _ in p.deallocate() }
    }

    /// A fixed arena over `bytes` at `base` (64-byte aligned), released with `release` (or not at all).
    init(base: UnsafeMutableRawPointer, bytes: Int, release: @escaping (UnsafeMutableRawPointer, Int) -> Void) {
        chunkSize = bytes
        growing = false
        chunks = [(base, bytes)]
        self.release = release
    }

    /// A fixed arena for measuring: a large address range reserved without backing memory, so only the
    /// pages a pass touches cost anything. `peakBytes` afterwards is the exact size a fixed arena needs.
    static func measuring(reserve: Int = 1 << 36) -> Arena? {
        guard let p = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else { return nil }
        let a = Arena(base: p, bytes: reserve, release: { p, n in munmap(p, n) })
        a.planning = true
        return a
    }

    deinit {
        for c in chunks { release(c.base, c.size) }
    }

    func mark() -> Mark { Mark(chunk: chunk, offset: offset) }

    func reset(to m: Mark) {
        chunk = m.chunk
        offset = m.offset
    }

    /// `count` floats, uninitialised, 64-byte aligned.
    func alloc(_ count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = (max(count, 1) * 4 + 63) & ~63
        while chunk < chunks.count {
            if offset + bytes <= chunks[chunk].size { return take(bytes, count) }
            // A fixed arena is sized by a measured pass of the same code on the same model, and no
            // allocation depends on the image size or prompt beyond the planned maximum.
            precondition(growing, "arena overflow: \(offset + bytes) > \(chunks[chunk].size) bytes")
            chunk += 1
            offset = 0
        }
        let size = max(bytes, chunkSize)
        chunks.append((UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64), size))
        chunk = chunks.count - 1
        offset = 0
        return take(bytes, count)
    }

    private func take(_ bytes: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
        let p = chunks[chunk].base + offset
        offset += bytes
        var used = offset
        for i in 0..<chunk { used += chunks[i].size }
        peakBytes = max(peakBytes, used)
        return p.bindMemory(to: Float.self, capacity: count)
    }

    /// `count` bytes, uninitialised, 64-byte aligned.
    func allocBytes(_ count: Int) -> UnsafeMutablePointer<UInt8> {
        UnsafeMutableRawPointer(alloc((count + 3) / 4)).bindMemory(to: UInt8.self, capacity: count)
    }

    /// Runs `task`'s `blocks` blocks (`ColumnTask.run(block:)`) on the session's threads.
    func parallelBlocks(_ task: inout ColumnTask, blocks: Int) {
        withUnsafePointer(to: task) { t in
            if let pool, blocks > 1 {
                pool.run(blocks, t)
            } else {
                for i in 0..<blocks { t.pointee.run(block: i) }
            }
        }
    }

    /// Runs `task` over its `n` columns in contiguous blocks. The blocks depend only on the task's
    /// shape (`n` and `work`), never on the thread count; threads only decide who runs which block. So
    /// every kernel call, and every result bit, is the same for 1 or N threads.
    func parallelColumns(_ task: inout ColumnTask, work: Int) {
        let n = task.n
        let blocks = work < 1 << 18 ? 1 : max(1, min(16, n / 64))
        task.width = ((n + blocks - 1) / blocks + 15) & ~15
        withUnsafePointer(to: task) { t in
            if let pool, blocks > 1 {
                pool.run(blocks, t)
            } else {
                for i in 0..<blocks { t.pointee.run(block: i) }
            }
        }
    }
}

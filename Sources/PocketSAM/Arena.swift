/// Activation memory of one session: a stack of 64-byte aligned chunks with marks. Layers take
/// scratch with `alloc` and give it back with `reset(to:)`, like a stack. Chunks are allocated the
/// first time a pass needs them and reused after: a second pass of the same model allocates nothing.
final class Arena {
    /// Test hook: called with named intermediate activations (channels-last, with their shape).
    var tap: ((String, UnsafePointer<Float>, [Int]) -> Void)?

    /// The session's worker threads (nil: single-threaded).
    var pool: ThreadPool?
    var threads: Int { pool?.size ?? 1 }
    private var chunks: [(base: UnsafeMutableRawPointer, size: Int)] = []
    private var chunk = 0
    private var offset = 0
    private let chunkSize: Int
    /// Highest number of bytes in use at once so far.
    private(set) var peakBytes = 0

    struct Mark { let chunk: Int; let offset: Int }

    init(chunkSize: Int = 32 << 20) {
        self.chunkSize = chunkSize
    }

    deinit {
        for c in chunks { c.base.deallocate() }
    }

    var totalBytes: Int { chunks.reduce(0) { $0 + $1.size } }

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
            chunk += 1
            offset = 0
        }
        chunks.append((UnsafeMutableRawPointer.allocate(byteCount: max(bytes, chunkSize), alignment: 64), max(bytes, chunkSize)))
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

    func zeros(_ count: Int) -> UnsafeMutablePointer<Float> {
        let p = alloc(count)
        p.initialize(repeating: 0, count: count)
        return p
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

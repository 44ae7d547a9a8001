#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Read-only bytes of a whole file: a private read-only memory mapping of the file, or a 64-byte
/// aligned in-memory copy. Weights are used in place from here; nothing is copied after opening.
///
/// Immutable after creation, so it may be shared between threads.
public final class ByteStorage: @unchecked Sendable {
    public let base: UnsafeRawPointer?
    public let count: Int
    private let release: Release

    private enum Release {
        case unmap(UnsafeMutableRawPointer, Int)
        case deallocate(UnsafeMutableRawPointer)
        case none
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Maps the file at `path` read-only. An empty file maps to an empty buffer.
    public init(mapping path: String) throws(PSAMError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .cannotOpen(path: path, reason: "not a regular file") }
        let size = Int(st.st_size)
        if size == 0 {
            base = nil
            count = 0
            release = .none
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw .cannotOpen(path: path, reason: "mmap failed: " + String(cString: strerror(errno)))
        }
        base = UnsafeRawPointer(p)
        count = size
        release = .unmap(p, size)
    }

    /// Copies `bytes` into a new 64-byte aligned buffer.
    public init(copying bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 64)
        if n > 0, let src = bytes.baseAddress { p.copyMemory(from: src, byteCount: n) }
        base = UnsafeRawPointer(p)
        count = n
        release = .deallocate(p)
    }

    public init(copying bytes: [UInt8]) {
        let n = bytes.count
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 64)
        bytes.withUnsafeBytes { src in
            if let b = src.baseAddress, n > 0 { p.copyMemory(from: b, byteCount: n) }
        }
        base = UnsafeRawPointer(p)
        count = n
        release = .deallocate(p)
    }

    /// Wraps memory the caller owns and keeps alive for this object's lifetime (no copy).
    public init(borrowing bytes: UnsafeRawBufferPointer) {
        base = bytes.baseAddress
        count = bytes.count
        release = .none
    }

    deinit {
        switch release {
        case let .unmap(p, n): munmap(p, n)
        case let .deallocate(p): p.deallocate()
        case .none: break
        }
    }
}

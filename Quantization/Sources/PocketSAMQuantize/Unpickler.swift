/// A value produced by the restricted unpickler. Lists and dicts are reference types because pickle
/// mutates them in place after memoizing them.
public indirect enum PickleValue: Sendable {
    case none
    case bool(Bool)
    case int(Int64)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    /// An allow-listed global (a callable or a storage type), never executed as code.
    case global(AllowedGlobal)
    case storage(StorageRef)
    case tensor(TensorRef)
}

extension PickleValue {
    /// Nesting depth (1 for a scalar); containers keep theirs, so reading it costs O(1).
    var depth: Int {
        switch self {
        case let .tuple(t): return t.depth
        case let .list(l): return l.depth
        case let .dict(d): return d.depth
        default: return 1
        }
    }

    func freeze() {
        switch self {
        case let .list(l): l.frozen = true
        case let .dict(d): d.frozen = true
        default: break
        }
    }
}

public final class PickleTuple: @unchecked Sendable {
    public let items: [PickleValue]
    let depth: Int
    init(_ items: [PickleValue]) {
        self.items = items
        depth = 1 + (items.map(\.depth).max() ?? 0)
        for i in items { i.freeze() }
    }
}

public final class PickleList: @unchecked Sendable {
    public var items: [PickleValue] = []
    var depth = 1
    /// Set once the list is inside another container: it may not change after that, so the depths
    /// recorded above it stay true.
    var frozen = false
}

public final class PickleDict: @unchecked Sendable {
    public var pairs: [(key: PickleValue, value: PickleValue)] = []
    var depth = 1
    var frozen = false
    public func string(_ key: String) -> PickleValue? {
        for (k, v) in pairs { if case let .string(s) = k, s == key { return v } }
        return nil
    }
}

/// The only globals a state-dict pickle may name. Anything else is refused by name.
public enum AllowedGlobal: Sendable, Equatable {
    case orderedDict
    case rebuildTensorV2
    case rebuildParameter
    case storageType(TensorDType)

    static func lookup(module: String, name: String) -> AllowedGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch", _):
            switch name {
            case "FloatStorage": return .storageType(.f32)
            case "HalfStorage": return .storageType(.f16)
            case "BFloat16Storage": return .storageType(.bf16)
            case "DoubleStorage": return .storageType(.f64)
            case "LongStorage": return .storageType(.i64)
            case "IntStorage": return .storageType(.i32)
            case "ShortStorage": return .storageType(.i16)
            case "CharStorage": return .storageType(.i8)
            case "ByteStorage": return .storageType(.u8)
            case "BoolStorage": return .storageType(.bool)
            default: return nil
            }
        default: return nil
        }
    }
}

/// A storage named by a persistent id: `('storage', <type>, key, location, numel)`.
public struct StorageRef: Sendable, Equatable {
    public var dtype: TensorDType
    public var key: String
    public var elementCount: Int
}

/// What `_rebuild_tensor_v2` would build: a view of a storage.
public struct TensorRef: Sendable, Equatable {
    public var storage: StorageRef
    public var storageOffset: Int
    public var shape: [Int]
    public var strides: [Int]
}

/// A restricted pickle reader: the opcode subset that `torch.save(state_dict)` produces (protocols
/// 2 to 5). It runs no code: globals are looked up in `AllowedGlobal`, calls are interpreted only for
/// the few allowed callables. Every length is checked against the remaining input, so it cannot read
/// out of bounds, and it consumes at least one byte per opcode, so it always ends.
public struct Unpickler {
    let bytes: UnsafeRawBufferPointer
    var pos = 0
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    public static let maxMemo = 10_000_000
    public static let maxStack = 10_000_000
    /// A state dict nests a few levels. A hostile pickle nesting thousands deep would overflow the
    /// stack when its values are freed (release is recursive), so nesting is capped.
    public static let maxDepth = 64

    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    public static func load(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) -> PickleValue {
        var u = Unpickler(bytes)
        return try u.run()
    }

    mutating func fail(_ why: String) -> CheckpointError { .pickle(offset: pos, reason: why) }

    mutating func take(_ n: Int) throws(CheckpointError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - pos else { throw fail("needs \(n) bytes, \(bytes.count - pos) left (truncated)") }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: bytes[pos..<(pos + n)])
    }

    mutating func u8() throws(CheckpointError) -> UInt8 { try take(1)[0] }
    mutating func le(_ n: Int) throws(CheckpointError) -> UInt64 {
        let b = try take(n)
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(b[i]) }
        return v
    }

    mutating func line() throws(CheckpointError) -> String {
        var end = pos
        while end < bytes.count && bytes[end] != 0x0A { end += 1 }
        guard end < bytes.count else { throw fail("unterminated text line (truncated)") }
        let r = UnsafeRawBufferPointer(rebasing: bytes[pos..<end])
        pos = end + 1
        guard let s = String(validating: r, as: UTF8.self) else { throw fail("text line is not UTF-8") }
        return s
    }

    mutating func utf8(_ n: Int) throws(CheckpointError) -> String {
        let r = try take(n)
        guard let s = String(validating: r, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    mutating func pop() throws(CheckpointError) -> PickleValue {
        guard let v = stack.popLast() else { throw fail("stack underflow") }
        if let m = marks.last, stack.count < m { throw fail("stack underflow past a mark") }
        return v
    }

    mutating func push(_ v: PickleValue) throws(CheckpointError) {
        guard stack.count < Unpickler.maxStack else { throw fail("stack too deep") }
        guard v.depth <= Unpickler.maxDepth else { throw fail("values nested deeper than \(Unpickler.maxDepth) levels") }
        stack.append(v)
    }

    mutating func popMark() throws(CheckpointError) -> [PickleValue] {
        guard let m = marks.popLast() else { throw fail("no mark on the stack") }
        guard m <= stack.count else { throw fail("mark past the stack top") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func memoPut(_ idx: Int) throws(CheckpointError) {
        guard let top = stack.last else { throw fail("memo put on an empty stack") }
        guard memo.count < Unpickler.maxMemo else { throw fail("memo too large") }
        memo[idx] = top
    }

    mutating func memoGet(_ idx: Int) throws(CheckpointError) {
        guard let v = memo[idx] else { throw fail("memo index \(idx) was never set") }
        try push(v)
    }

    mutating func run() throws(CheckpointError) -> PickleValue {
        while true {
            let opPos = pos
            let op = try u8()
            switch op {
            case 0x80:  // PROTO
                let v = try u8()
                guard v >= 2 && v <= 5 else { throw fail("pickle protocol \(v) is not supported (2 to 5 are)") }
            case 0x95:  // FRAME: a length hint only
                _ = try le(8)
            case 0x2E:  // STOP
                guard stack.count == 1, marks.isEmpty else { throw fail("STOP with \(stack.count) values on the stack") }
                return stack[0]
            case 0x28: marks.append(stack.count)  // MARK
            case 0x7D: try push(.dict(PickleDict()))  // EMPTY_DICT
            case 0x5D: try push(.list(PickleList()))  // EMPTY_LIST
            case 0x29: try push(.tuple(PickleTuple([])))  // EMPTY_TUPLE
            case 0x74: try push(.tuple(PickleTuple(try popMark())))  // TUPLE
            case 0x85: let a = try pop(); try push(.tuple(PickleTuple([a])))  // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); try push(.tuple(PickleTuple([a, b])))  // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(.tuple(PickleTuple([a, b, c])))  // TUPLE3
            case 0x6C:  // LIST
                let l = PickleList()
                for v in try popMark() { try append(v, to: l) }
                try push(.list(l))
            case 0x64:  // DICT
                let items = try popMark()
                try push(.dict(try makeDict(items)))
            case 0x73:  // SETITEM
                let v = try pop(), k = try pop()
                guard case let .dict(d)? = stack.last else { throw fail("SETITEM on a non-dict") }
                try set(k, v, in: d)
            case 0x75:  // SETITEMS
                let items = try popMark()
                guard case let .dict(d)? = stack.last else { throw fail("SETITEMS on a non-dict") }
                guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of values") }
                for i in stride(from: 0, to: items.count, by: 2) { try set(items[i], items[i + 1], in: d) }
            case 0x61:  // APPEND
                let v = try pop()
                guard case let .list(l)? = stack.last else { throw fail("APPEND on a non-list") }
                try append(v, to: l)
            case 0x65:  // APPENDS
                let items = try popMark()
                guard case let .list(l)? = stack.last else { throw fail("APPENDS on a non-list") }
                for v in items { try append(v, to: l) }
            case 0x4E: try push(.none)  // NONE
            case 0x88: try push(.bool(true))  // NEWTRUE
            case 0x89: try push(.bool(false))  // NEWFALSE
            case 0x4B: try push(.int(Int64(try u8())))  // BININT1
            case 0x4D: try push(.int(Int64(try le(2))))  // BININT2
            case 0x4A: try push(.int(Int64(Int32(truncatingIfNeeded: try le(4)))))  // BININT
            case 0x8A:  // LONG1
                let n = Int(try u8())
                guard n <= 8 else { throw fail("integer of \(n) bytes is too large") }
                if n == 0 { try push(.int(0)); break }
                let raw = try le(n)
                let shift = UInt64(64 - 8 * n)
                try push(.int(Int64(bitPattern: raw << shift) >> Int64(shift)))
            case 0x47: try push(.float(Double(bitPattern: try le(8).byteSwapped)))  // BINFLOAT (big-endian)
            case 0x58: let n = Int(try le(4)); try push(.string(try utf8(n)))  // BINUNICODE
            case 0x8C: let n = Int(try u8()); try push(.string(try utf8(n)))  // SHORT_BINUNICODE
            case 0x8D:  // BINUNICODE8
                let n = try le(8)
                guard n <= UInt64(bytes.count) else { throw fail("string length \(n) past the end") }
                try push(.string(try utf8(Int(n))))
            case 0x55: let n = Int(try u8()); try push(.string(try utf8(n)))  // SHORT_BINSTRING (py2 str)
            case 0x54:  // BINSTRING
                let n = Int(Int32(truncatingIfNeeded: try le(4)))
                try push(.string(try utf8(n)))
            case 0x43: let n = Int(try u8()); try push(.bytes(Array(try take(n))))  // SHORT_BINBYTES
            case 0x42: let n = Int(try le(4)); try push(.bytes(Array(try take(n))))  // BINBYTES
            case 0x63:  // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                try push(.global(try global(module, name)))
            case 0x93:  // STACK_GLOBAL
                guard case let .string(name) = try pop(), case let .string(module) = try pop() else {
                    throw fail("STACK_GLOBAL needs two strings")
                }
                try push(.global(try global(module, name)))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                try push(try call(callable, args))
            case 0x62:  // BUILD
                let state = try pop()
                guard let obj = stack.last else { throw fail("BUILD on an empty stack") }
                switch (obj, state) {
                case (.dict, _), (.tensor, .none), (.tensor, .dict), (.tensor, .tuple):
                    break  // state-dict `_metadata`, or empty tensor state: nothing to keep
                default:
                    throw fail("BUILD of an object this reader does not construct")
                }
            case 0x51:  // BINPERSID
                let pid = try pop()
                try push(try persistent(pid))
            case 0x71: try memoPut(Int(try u8()))  // BINPUT
            case 0x72: try memoPut(Int(try le(4)))  // LONG_BINPUT
            case 0x94: try memoPut(memo.count)  // MEMOIZE
            case 0x68: try memoGet(Int(try u8()))  // BINGET
            case 0x6A: try memoGet(Int(try le(4)))  // LONG_BINGET
            case 0x30: _ = try pop()  // POP
            case 0x31: _ = try popMark()  // POP_MARK
            case 0x32:  // DUP
                guard let top = stack.last else { throw fail("DUP on an empty stack") }
                try push(top)
            default:
                pos = opPos
                throw CheckpointError.unsupportedOpcode(opcode: op, name: Unpickler.opcodeName(op), offset: opPos)
            }
        }
    }

    /// Containers are mutated after they are memoized, so a value may be put into itself; the depth
    /// check refuses such cycles too (a cycle would also leak).
    mutating func append(_ v: PickleValue, to l: PickleList) throws(CheckpointError) {
        guard !l.frozen else { throw fail("a list is changed after being put into another container") }
        if case let .list(inner) = v, inner === l { throw fail("a list contains itself") }
        v.freeze()
        let d = max(l.depth, v.depth + 1)
        guard d <= Unpickler.maxDepth else { throw fail("values nested deeper than \(Unpickler.maxDepth) levels") }
        l.depth = d
        l.items.append(v)
    }

    mutating func set(_ k: PickleValue, _ v: PickleValue, in dict: PickleDict) throws(CheckpointError) {
        guard !dict.frozen else { throw fail("a dict is changed after being put into another container") }
        if case let .dict(inner) = v, inner === dict { throw fail("a dict contains itself") }
        v.freeze()
        k.freeze()
        let d = max(dict.depth, v.depth + 1, k.depth + 1)
        guard d <= Unpickler.maxDepth else { throw fail("values nested deeper than \(Unpickler.maxDepth) levels") }
        dict.depth = d
        dict.pairs.append((k, v))
    }

    mutating func global(_ module: String, _ name: String) throws(CheckpointError) -> AllowedGlobal {
        guard let g = AllowedGlobal.lookup(module: module, name: name) else {
            throw CheckpointError.disallowedGlobal(module: module, name: name)
        }
        return g
    }

    mutating func makeDict(_ items: [PickleValue]) throws(CheckpointError) -> PickleDict {
        guard items.count % 2 == 0 else { throw fail("DICT with an odd number of values") }
        let d = PickleDict()
        for i in stride(from: 0, to: items.count, by: 2) { try set(items[i], items[i + 1], in: d) }
        return d
    }

    mutating func persistent(_ pid: PickleValue) throws(CheckpointError) -> PickleValue {
        guard case let .tuple(tuple) = pid, case let t = tuple.items, t.count == 5, case .string("storage") = t[0],
              case let .global(.storageType(dtype)) = t[1], case let .string(key) = t[2],
              case .string = t[3], case let .int(numel) = t[4], numel >= 0, numel < (1 << 48)
        else { throw fail("persistent id is not ('storage', <storage type>, key, location, numel)") }
        return .storage(StorageRef(dtype: dtype, key: key, elementCount: Int(numel)))
    }

    func intTuple(_ v: PickleValue) -> [Int]? {
        guard case let .tuple(t) = v else { return nil }
        let items = t.items
        var out: [Int] = []
        for i in items {
            guard case let .int(x) = i, x >= 0, x < (1 << 48) else { return nil }
            out.append(Int(x))
        }
        return out
    }

    mutating func call(_ callable: PickleValue, _ args: PickleValue) throws(CheckpointError) -> PickleValue {
        guard case let .global(g) = callable, case let .tuple(tuple) = args else { throw fail("REDUCE of a non-callable") }
        let a = tuple.items
        switch g {
        case .orderedDict:
            guard a.isEmpty else { throw fail("OrderedDict called with arguments") }
            return .dict(PickleDict())
        case .rebuildTensorV2:
            guard a.count >= 4, case let .storage(s) = a[0], case let .int(off) = a[1], off >= 0, off < (1 << 48),
                  let shape = intTuple(a[2]), let strides = intTuple(a[3]), shape.count == strides.count, shape.count <= 8
            else { throw fail("_rebuild_tensor_v2 with unexpected arguments") }
            return .tensor(TensorRef(storage: s, storageOffset: Int(off), shape: shape, strides: strides))
        case .rebuildParameter:
            guard a.count >= 1, case .tensor = a[0] else { throw fail("_rebuild_parameter with unexpected arguments") }
            return a[0]
        case .storageType:
            throw fail("a storage type is not callable")
        }
    }

    static func opcodeName(_ op: UInt8) -> String {
        let names: [UInt8: String] = [
            0x69: "INST", 0x6F: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x50: "PERSID", 0x82: "EXT1",
            0x83: "EXT2", 0x84: "EXT4", 0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING", 0x56: "UNICODE",
            0x67: "GET", 0x70: "PUT", 0x8B: "LONG4", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
            0x91: "FROZENSET", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
        ]
        return names[op] ?? "unknown"
    }
}

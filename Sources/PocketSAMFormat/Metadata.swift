/// A typed metadata value of a `.psam` file.
public enum MetadataValue: Equatable, Sendable, CustomStringConvertible {
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case string(String)
    case ints([Int64])
    case doubles([Double])

    /// The type code written to the file.
    var code: UInt8 {
        switch self {
        case .int: return 1
        case .double: return 2
        case .bool: return 3
        case .string: return 4
        case .ints: return 5
        case .doubles: return 6
        }
    }

    public var description: String {
        switch self {
        case let .int(v): return String(v)
        case let .double(v): return String(v)
        case let .bool(v): return String(v)
        case let .string(v): return "\"\(v)\""
        case let .ints(v): return "[" + v.map(String.init).joined(separator: ", ") + "]"
        case let .doubles(v): return "[" + v.map { String($0) }.joined(separator: ", ") + "]"
        }
    }
}

/// Ordered key-value metadata. Keys are unique; the order is the order of insertion, so a writer that
/// inserts in a fixed order produces the same bytes every time.
public struct Metadata: Equatable, Sendable {
    public private(set) var entries: [(key: String, value: MetadataValue)] = []
    private var index: [String: Int] = [:]

    public init() {}

    public static func == (a: Metadata, b: Metadata) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public subscript(key: String) -> MetadataValue? {
        get { index[key].map { entries[$0].value } }
        set {
            if let i = index[key] {
                if let v = newValue {
                    entries[i].value = v
                } else {
                    entries.remove(at: i)
                    index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.key, $0) })
                }
            } else if let v = newValue {
                index[key] = entries.count
                entries.append((key, v))
            }
        }
    }

    public var keys: [String] { entries.map(\.key) }

    // Typed accessors that throw a clear error naming the key.

    public func int(_ key: String) throws(PSAMError) -> Int {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        guard case let .int(i) = v, let r = Int(exactly: i) else { throw .metadataType(key: key, expected: "an integer") }
        return r
    }

    public func double(_ key: String) throws(PSAMError) -> Double {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        switch v {
        case let .double(d) where d.isFinite: return d
        case let .int(i): return Double(i)
        default: throw .metadataType(key: key, expected: "a finite number")
        }
    }

    public func bool(_ key: String) throws(PSAMError) -> Bool {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        guard case let .bool(b) = v else { throw .metadataType(key: key, expected: "a boolean") }
        return b
    }

    public func string(_ key: String) throws(PSAMError) -> String {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        guard case let .string(s) = v else { throw .metadataType(key: key, expected: "a string") }
        return s
    }

    public func ints(_ key: String) throws(PSAMError) -> [Int] {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        guard case let .ints(a) = v else { throw .metadataType(key: key, expected: "an integer array") }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for x in a {
            guard let i = Int(exactly: x) else { throw .metadataType(key: key, expected: "an integer array") }
            out.append(i)
        }
        return out
    }

    public func doubles(_ key: String) throws(PSAMError) -> [Double] {
        guard let v = self[key] else { throw .metadataMissing(key: key) }
        guard case let .doubles(a) = v, a.allSatisfy(\.isFinite) else {
            throw .metadataType(key: key, expected: "an array of finite numbers")
        }
        return a
    }
}

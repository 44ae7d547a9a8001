import ArgumentParser
import PocketSAM
import PocketSAMFormat
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

@main
struct PocketSAMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketsam",
        abstract: "Segment Anything on the CPU.",
        discussion: """
        Example:
          pocketsam segment --model lite_medsam.psam --image cell.png --box 355,300,500,448 --out out/
          pocketsam encode --model sam_b.psam --image photo.jpg -o photo.psemb    # on a large machine
          pocketsam segment --model sam_b.psam --embedding photo.psemb --box 10,20,200,240 --out out/
        """,
        subcommands: [Segment.self, Encode.self, Everything.self, Info.self, Bench.self]
    )
}

func stderrWrite(_ s: String) {
    var b = Array(s.utf8)
    _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func loadModel(_ path: String) throws -> Model {
    do { return try Model(path: path) } catch {
        stderrWrite("pocketsam: error: \(error)\n")
        throw ExitCode(2)
    }
}

func loadImage(_ path: String) throws -> PocketSAMIO.Image {
    do { return try ImageIO.read(path) } catch {
        stderrWrite("pocketsam: error: \(error)\n")
        throw ExitCode(3)
    }
}

func parseFloats(_ s: String, count: ClosedRange<Int>, what: String) throws -> [Float] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { Float(String($0.filter { $0 != " " })) }
    guard count.contains(parts.count), parts.allSatisfy({ $0 != nil }) else {
        throw ValidationError("\(what) '\(s)' should be \(count.lowerBound == count.upperBound ? "\(count.lowerBound)" : "\(count.lowerBound) or \(count.upperBound)") comma-separated numbers")
    }
    return parts.map { $0! }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a .psam model.")
    @Argument(help: "The .psam model.") var model: String
    @Flag(help: "Also plan the arena: the activation memory a session needs for any image and prompt (measured by one encoder pass on reserved address space, so it takes an encode's time).")
    var arena = false

    func run() throws {
        let m = try loadModel(model)
        for (k, v) in m.file.metadata.entries { print("\(k) = \(v)") }
        var bytes: [DType: Int] = [:], counts: [DType: Int] = [:], params = 0
        for t in m.file.tensors {
            bytes[t.dtype, default: 0] += Int(t.dataLength)
            counts[t.dtype, default: 0] += 1
            params += t.elementCount
        }
        print("tensors: \(m.file.tensors.count), parameters: \(params)")
        for d in DType.allCases where counts[d] != nil { print("  \(d): \(counts[d]!) tensors, \(bytes[d]!) bytes") }
        guard arena else { return }
        let planned = try m.plannedArenaBytes()
        print("planned arena: \(planned) bytes; a session needs that plus the mapped file (\(m.file.storage.count) bytes, "
              + "read in place) plus the runtime's own few tens of MB")
    }
}

func format3(_ x: Double) -> String { String((x * 1000).rounded() / 1000) }

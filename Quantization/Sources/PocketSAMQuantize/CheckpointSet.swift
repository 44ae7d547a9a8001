import Foundation
import PocketSAMFormat

/// The weights a user points the tool at: one checkpoint file, or a Hugging Face `save_pretrained` directory
/// (`model.safetensors`, `pytorch_model.bin`, or either sharded with its `*.index.json`), or such an index file
/// itself; with the directory's `config.json` where there is one.
public struct CheckpointSet: @unchecked Sendable {
    public let path: String
    /// The files read (their mappings back `tensors`).
    public let files: [Checkpoint]
    /// Every tensor of every file, in file order.
    public let tensors: [SourceTensor]
    /// `pytorch-zip` or `safetensors`, with the shard count when sharded.
    public let format: String
    /// SHA-256 of the one file; for shards, of the lines `<sha256>  <file name>\n` in file-name order (as sha256sum prints).
    public let sha256: String
    /// The `config.json` beside the weights, parsed; nil when there is none.
    public let configJSON: [String: Any]?
    public let configPath: String?

    public var byteCount: Int { files.reduce(0) { $0 + $1.file.count } }

    /// File names looked for in a directory, in the order transformers prefers them.
    public static let directoryEntries = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                          "pytorch_model.bin.index.json"]

    /// A file, or a directory holding one of `entries` (the first found): the file (nil for a directory without any
    /// of them) and the directory its sidecar files are looked for in; nil when nothing is at `path`.
    static func locate(_ path: String, entries: [String]) -> (file: String?, directory: String)? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return nil }
        if isDir.boolValue {
            return (entries.first { FileManager.default.fileExists(atPath: path + "/" + $0) }.map { path + "/" + $0 }, path)
        }
        let d = (path as NSString).deletingLastPathComponent
        return (path, d.isEmpty ? "." : d)
    }

    public static func open(_ path: String) throws(CheckpointError) -> CheckpointSet {
        guard let (file, dir) = locate(path, entries: directoryEntries) else {
            throw .cannotOpen(path: path, reason: "no such file or directory")
        }
        guard let weights = file else {
            if FileManager.default.fileExists(atPath: dir + "/adapter_config.json") {
                throw .cannotOpen(path: path, reason: "this is a LoRA adapter (adapter_config.json); give it with --lora and the base model as the checkpoint")
            }
            throw .cannotOpen(path: path, reason: "a directory without \(directoryEntries.joined(separator: ", "))")
        }
        let configPath = dir + "/config.json"
        var config: [String: Any]?
        if FileManager.default.fileExists(atPath: configPath) {
            guard let data = FileManager.default.contents(atPath: configPath),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw .config(path: configPath, reason: "not a JSON object")
            }
            config = obj
        }
        if weights.hasSuffix(".index.json") {
            return try openSharded(index: weights, path: path, config: config, configPath: configPath)
        }
        let ckpt = try Checkpoint(path: weights)
        var sha = SHA256()
        sha.update(ckpt.file.bytes)
        return CheckpointSet(path: path, files: [ckpt], tensors: ckpt.tensors, format: ckpt.format.rawValue,
                             sha256: sha.finalize(), configJSON: config, configPath: config == nil ? nil : configPath)
    }

    /// A transformers shard index: `{"metadata": {...}, "weight_map": {tensor: shard file}}`. Shards must sit beside
    /// the index (plain file names), hold exactly the tensors the map gives them, and no tensor twice.
    static func openSharded(index: String, path: String, config: [String: Any]?, configPath: String)
        throws(CheckpointError) -> CheckpointSet {
        let dir = (index as NSString).deletingLastPathComponent.isEmpty ? "." : (index as NSString).deletingLastPathComponent
        guard let data = FileManager.default.contents(atPath: index),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .index(path: index, reason: "not a JSON object")
        }
        guard let map = obj["weight_map"] as? [String: Any], !map.isEmpty else {
            throw .index(path: index, reason: "no \"weight_map\" object naming each tensor's shard")
        }
        var want: [String: String] = [:]
        var order: [String] = []
        for (tensor, v) in map {
            guard let file = v as? String else { throw .index(path: index, reason: "the shard of '\(tensor)' is not a file name") }
            guard !file.isEmpty, !file.contains("/"), !file.contains("\\"), file != ".", file != ".." else {
                throw .index(path: index, reason: "shard '\(file)' of '\(tensor)' is not a plain file name beside the index")
            }
            want[tensor] = file
        }
        order = Array(Set(want.values)).sorted()
        guard order.count <= 10_000 else { throw .index(path: index, reason: "\(order.count) shards") }
        var files: [Checkpoint] = []
        var tensors: [SourceTensor] = []
        var seen: Set<String> = []
        var digestLines = ""
        for file in order {
            let ckpt = try Checkpoint(path: dir + "/" + file)
            for t in ckpt.tensors {
                guard let owner = want[t.name] else {
                    throw .index(path: index, reason: "shard '\(file)' holds '\(t.name)', which the weight map does not list")
                }
                guard owner == file else {
                    throw .index(path: index, reason: "'\(t.name)' is in shard '\(file)' but the weight map puts it in '\(owner)'")
                }
                guard seen.insert(t.name).inserted else { throw .index(path: index, reason: "'\(t.name)' appears twice") }
                tensors.append(t)
            }
            var sha = SHA256()
            sha.update(ckpt.file.bytes)
            digestLines += sha.finalize() + "  " + file + "\n"
            files.append(ckpt)
        }
        if let missing = want.keys.sorted().first(where: { !seen.contains($0) }) {
            throw .index(path: index, reason: "'\(missing)' is not in its shard '\(want[missing]!)'")
        }
        var sha = SHA256()
        Array(digestLines.utf8).withUnsafeBytes { sha.update($0) }
        let formats = Set(files.map(\.format.rawValue)).sorted().joined(separator: "+")
        return CheckpointSet(path: path, files: files, tensors: tensors, format: "\(formats), \(files.count) shards",
                             sha256: sha.finalize(), configJSON: config, configPath: config == nil ? nil : configPath)
    }
}

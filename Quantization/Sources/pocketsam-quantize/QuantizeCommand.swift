import ArgumentParser
import PocketSAMFormat
import PocketSAMQuantize

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Precision: ExpressibleByArgument {}

@main
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketsam-quantize",
        abstract: "Convert a PyTorch SAM / MobileSAM / LiteMedSAM checkpoint into a .psam weights file.",
        discussion: """
        Reads a checkpoint as torch.save writes it (a zip with data.pkl; a {"model": ...} or \
        {"state_dict": ...} wrapper is fine) or a .safetensors file, without Python; in the official \
        segment_anything layout or Hugging Face transformers' SamModel layout (a save_pretrained \
        directory, single or sharded, whose config.json is checked against the tensors). The architecture \
        and its hyper-parameters are detected from tensor names and shapes, BatchNorm is folded into \
        the preceding convolutions, and weight matrices are quantized per output channel.

        LoRA fine-tunes are merged first (W + scale·α/r·B·A, before any quantization): PEFT adapters \
        given with --lora, and LoRA layers a checkpoint holds inline (PEFT's base_layer/lora_A/lora_B, \
        which need --lora-alpha; SAMed's linear_a_q/linear_b_q/linear_a_v/linear_b_v, unscaled).

        int8 conversions are calibrated: the model runs in fp32 on calibration images first and every \
        image-encoder weight matrix is rounded by GPTQ (minimising the layer's output error on the images' \
        activations) instead of to nearest. Without --calibrate the images are built in (generated in code: \
        dead-leaves pictures in colour and grey, scan-like slices, 1/f noise; 8 for TinyViT models, 2 for the \
        SAM ViTs, whose fp32 pass is long); --calibrate IMAGE replaces them with yours (use images like the ones \
        the model will see, not the ones you test on; add --calibrate builtin to keep the built-in ones too), \
        --no-calibration rounds to nearest. The result is the same bytes on every x86-64 machine, whatever \
        OPENBLAS_CORETYPE and --threads.

        Example:
          pocketsam-quantize lite_medsam.pth -o lite_medsam.psam --calibrate a.png --calibrate b.jpg --report
          pocketsam-quantize ./sam-vit-base -o sam_b.psam --lora ./my-lora-adapter

        Exit codes: 0 written, 1 the checkpoint was rejected, 3 the output could not be written or \
        did not read back.
        """,
        version: pocketSAMQuantizeVersion
    )

    @Argument(help: "The checkpoint: .pth/.pt (torch.save zip), .safetensors, a transformers save_pretrained directory, or a shard index (*.index.json).")
    var input: String?

    @Option(help: ArgumentHelp("Instead of a checkpoint, seeded random weights for a published architecture (for benchmarks; the masks mean nothing): \(ModelConfig.presetNames.joined(separator: ", ")).", valueName: "ARCH"))
    var random: String?

    @Option(help: "Seed of --random.")
    var seed: UInt64 = 1

    @Option(name: .shortAndLong, help: "The .psam file to write.")
    var output: String

    @Option(help: "int8 (weight matrices int8 per output channel, the rest fp32), fp16 or fp32.")
    var precision: Precision = .int8

    @Flag(help: "Print the detected configuration and every tensor's precision and error.")
    var report = false

    @Option(name: .customLong("keep-fp32"), help: "Keep tensors whose name matches this glob in fp32 (repeatable).")
    var keepFP32: [String] = []

    @Option(name: .customLong("keep-fp16"),
            help: "In an int8 conversion, store weight matrices whose name matches this glob as fp16 (repeatable; 'none' for none; default: the measured sensitive layers of TinyViT models).")
    var keepFP16: [String] = []

    @Option(name: .customLong("calibrate"),
            help: "A calibration image (JPEG/PNG) for GPTQ rounding (repeatable): these replace the built-in images; 'builtin' adds those back.")
    var calibrate: [String] = []

    @Flag(name: .customLong("no-calibration"),
          help: "Round every int8 weight to nearest, without calibration images (the built-in images are used otherwise).")
    var noCalibration = false

    @Option(name: .customLong("max-slowdown"),
            help: "For calibrated TinyViT conversions: instead of the fixed fp16 list, keep fp16 the int8 layers whose measured accuracy gain per cost is best, while the estimated encoder GEMM time stays within this factor of the all-int8 one (e.g. 1.15).")
    var maxSlowdown: Double?

    @Option(name: .customLong("save-calibration-images"), help: ArgumentHelp("Also write the calibration images used, as PNG, into this folder.", valueName: "DIR"))
    var saveCalibrationImages: String?

    @Option(name: .customLong("fp32-activations"),
            help: "Run int8 layers whose weight name matches this glob with fp32 activations (repeatable; 'none' for none; default: the measured sensitive layers of TinyViT models).")
    var fp32Activations: [String] = []

    @Option(help: "SmoothQuant strength for TinyViT's MLP input layers when calibrating (0: none).")
    var smoothingAlpha: Double = 0.25

    @Option(help: "Store a weight matrix as fp16 instead when its int8 relative RMS error exceeds this.")
    var maxInt8Error: Double = 0.01

    @Option(name: .customLong("lora"), help: "A LoRA adapter to merge before quantizing: a PEFT directory (adapter_config.json + adapter_model.safetensors/.bin) or its weights file (repeatable, merged in order).")
    var lora: [String] = []

    @Option(name: .customLong("lora-scale"), help: "Multiplies every merged LoRA update (α/r·B·A).")
    var loraScale: Double = 1

    @Option(name: .customLong("lora-alpha"), help: "lora_alpha of LoRA layers that have no adapter_config.json: PEFT layers inline in the checkpoint, a bare adapter weights file.")
    var loraAlpha: Double?

    @Flag(name: .customLong("rslora"), help: "Those layers were trained with rsLoRA (scale α/√r instead of α/r).")
    var rsLoRA = false

    @Option(help: "Threads for the calibration run and the rounding (the file does not depend on it).")
    var threads: Int = 2

    @Flag(name: .shortAndLong, help: "No progress output.")
    var quiet = false

    func validate() throws {
        guard (input == nil) != (random == nil) else { throw ValidationError("give a checkpoint or --random ARCH (not both)") }
        if let r = random, ModelConfig.preset(r) == nil {
            throw ValidationError("unknown architecture '\(r)' for --random (one of \(ModelConfig.presetNames.joined(separator: ", ")))")
        }
        if random != nil, !calibrate.isEmpty { throw ValidationError("--calibrate needs a real checkpoint") }
        if noCalibration, !calibrate.isEmpty { throw ValidationError("--no-calibration and --calibrate contradict each other") }
        if saveCalibrationImages != nil, noCalibration || precision != .int8 || random != nil {
            throw ValidationError("--save-calibration-images: this conversion uses no calibration images")
        }
        if precision != .int8, !calibrate.isEmpty {
            throw ValidationError("--calibrate applies to int8 conversions (--precision \(precision.rawValue) rounds nothing to int8)")
        }
        guard smoothingAlpha.isFinite, smoothingAlpha >= 0, smoothingAlpha <= 1 else {
            throw ValidationError("--smoothing-alpha must be between 0 and 1")
        }
        if !keepFP16.isEmpty, precision != .int8 {
            throw ValidationError("--keep-fp16 applies to int8 conversions (--precision \(precision.rawValue) stores every tensor so)")
        }
        guard maxInt8Error.isFinite, maxInt8Error > 0 else {
            throw ValidationError("--max-int8-error must be a positive number")
        }
        if let m = maxSlowdown {
            guard m.isFinite, m > 1, m <= 4 else { throw ValidationError("--max-slowdown must be above 1 and at most 4") }
            guard precision == .int8, !noCalibration, random == nil else {
                throw ValidationError("--max-slowdown measures a calibrated int8 conversion of a checkpoint")
            }
            guard keepFP16.isEmpty, fp32Activations.isEmpty else {
                throw ValidationError("--max-slowdown chooses the fp16 layers itself: drop --keep-fp16 and --fp32-activations")
            }
        }
        guard threads >= 1, threads <= 64 else { throw ValidationError("--threads must be between 1 and 64") }
        if random != nil, !lora.isEmpty { throw ValidationError("--lora needs a real checkpoint") }
        guard loraScale.isFinite else { throw ValidationError("--lora-scale must be a finite number") }
        if let a = loraAlpha, !a.isFinite { throw ValidationError("--lora-alpha must be a finite number") }
    }

    func run() throws {
        func say(_ s: String) {
            if !quiet { FileHandleStderr.write("pocketsam-quantize: " + s + "\n") }
        }
        let result: ConversionResult
        var inSize: Int?
        var merges: [LoRAMergeReport] = []
        var search: PrecisionSearch.Result?
        var options = ConversionOptions(precision: precision)
        options.keepFP32 = keepFP32
        options.maxInt8RelativeError = maxInt8Error
        options.smoothingAlpha = smoothingAlpha
        options.threads = threads
        if !keepFP16.isEmpty { options.keepFP16 = keepFP16.filter { $0 != "none" } }
        if !fp32Activations.isEmpty { options.fp32Activations = fp32Activations.filter { $0 != "none" } }
        do {
            if let input {
                say("reading \(input)")
                let checkpoint = try PreparedCheckpoint.open(
                    input, lora: LoRAOptions(adapters: lora, scale: loraScale, alpha: loraAlpha, rsLoRA: rsLoRA))
                inSize = checkpoint.set.byteCount
                say("\(checkpoint.set.tensors.count) tensors (\(checkpoint.set.format), \(checkpoint.layout) layout)")
                for n in checkpoint.notes { say(n) }
                merges = checkpoint.merges
                for a in checkpoint.adapters {
                    let mine = merges.filter { $0.adapter == a.source }
                    let worst = mine.max { $0.relativeChange < $1.relativeChange }
                    say("merged \(a.source): \(mine.filter { $0.rank > 0 }.count) LoRA layers"
                        + (mine.contains { $0.rank == 0 } ? ", \(mine.filter { $0.rank == 0 }.count) tensors replaced" : "")
                        + (worst.map { ", largest relative change \(percent($0.relativeChange)) (\($0.tensor))" } ?? ""))
                }
                var settings = CalibratedConversion.Settings()
                settings.files = calibrate
                settings.calibrate = !noCalibration
                settings.maxSlowdown = maxSlowdown
                settings.threads = threads
                settings.saveImages = saveCalibrationImages
                (result, search) = try CalibratedConversion.convert(checkpoint, options: options, settings: settings, progress: say)
            } else {
                result = try RandomCheckpoint.convert(config: ModelConfig.preset(random ?? "")!, seed: seed, options: options,
                                                      progress: say)
            }
        } catch {
            FileHandleStderr.write("pocketsam-quantize: error: \(error)\n")
            throw ExitCode(1)
        }
        do {
            try result.writer.write(to: output)
            // Read the file back with every check the runtime makes.
            let file = try PSAMFile.open(path: output)
            guard file.config == result.config else { throw PSAMError.invalidConfig("configuration did not read back") }
        } catch {
            FileHandleStderr.write("pocketsam-quantize: error: \(error)\n")
            throw ExitCode(3)
        }
        let outSize = fileSize(output)
        if report { printReport(result, merges: merges, search: search) }
        let worst = result.reports.filter { $0.dtype == .i8 }.max { $0.relativeRMSError < $1.relativeRMSError }
        let counts = Dictionary(grouping: result.reports, by: \.dtype).mapValues(\.count)
        var summary = "wrote \(output): \(outSize) bytes"
        if let inSize { summary += " (\(format1(Double(inSize) / Double(max(outSize, 1))))x smaller than the \(inSize)-byte checkpoint)" }
        summary += "; "
        summary += DType.allCases.compactMap { d in counts[d].map { "\($0) \(d)" } }.joined(separator: ", ") + " tensors"
        if let w = worst { summary += "; worst int8 error \(percent(w.relativeRMSError)) (\(w.name))" }
        say(summary)
    }

    func printReport(_ r: ConversionResult, merges: [LoRAMergeReport], search: PrecisionSearch.Result?) {
        print("architecture: \(Converter.describe(r.config))")
        var meta = Metadata()
        r.config.write(to: &meta)
        for (k, v) in meta.entries { print("  \(k) = \(v)") }
        print("batchnorms folded: \(r.foldedBatchNorms)")
        if !r.ignored.isEmpty { print("ignored checkpoint tensors (unused by the runtime): \(r.ignored.count)") }
        print("source sha256: \(r.sourceSHA256)")
        if !merges.isEmpty {
            print("")
            print(pad("LoRA-merged tensor", 72) + pad("rank", 6) + pad("scale", 12) + pad("‖ΔW‖/‖W‖", 12) + "adapter")
            for m in merges {
                print(pad(m.tensor, 72) + pad(m.rank > 0 ? "\(m.rank)" : "-", 6) + pad(m.kind == "replaced" ? "replaced" : "\(m.scale)", 12)
                      + pad(percent(m.relativeChange), 12) + m.adapter + (m.kind.hasPrefix("lora ") ? " (\(m.kind.dropFirst(5)) rows)" : ""))
            }
        }
        print("")
        print(pad("tensor", 72) + pad("shape", 20) + pad("role", 15) + pad("dtype", 6) + "rel. RMS error")
        for t in r.reports {
            let shape = t.shape.map(String.init).joined(separator: "x")
            print(pad(t.name, 72) + pad(shape, 20) + pad(t.role.rawValue, 15) + pad(t.dtype.description, 6)
                  + percent(t.relativeRMSError) + (t.note.isEmpty ? "" : "  " + t.note))
        }
        if let search {
            print("")
            print("layer precisions by measurement (--max-slowdown \(maxSlowdown ?? 0)): Σ(1 − embedding cosine) on the measuring images "
                  + "\(search.baseError) all int8 → \(search.chosenError); estimated encoder GEMM time ×\(search.estimatedSlowdown)")
            print(pad("int8 weight matrix", 72) + pad("MMAC/image", 12) + pad("cost", 12) + pad("gain", 14) + "choice")
            for c in search.candidates.sorted(by: { $0.gain / $0.cost > $1.gain / $1.cost }) {
                print(pad(c.name, 72) + pad("\((Double(c.macs) / 1e4).rounded() / 100)", 12)
                      + pad("\((c.cost / 1e4).rounded() / 100)", 12) + pad("\((c.gain * 1e7).rounded() / 1e7)", 14)
                      + (c.chosen ? "fp16" : "int8"))
            }
        }
        let params = r.reports.reduce(0) { $0 + $1.shape.reduce(1, *) }
        print("\n\(r.reports.count) tensors, \(params) parameters")
    }
}

func pad(_ s: String, _ n: Int) -> String {
    s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
}

func percent(_ x: Double) -> String {
    let v = (x * 100_000).rounded() / 1000
    return "\(v)%"
}

func format1(_ x: Double) -> String {
    "\((x * 10).rounded() / 10)"
}

func fileSize(_ path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

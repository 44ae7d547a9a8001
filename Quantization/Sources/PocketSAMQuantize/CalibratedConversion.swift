/// An int8 conversion as `pocketsam-quantize` makes it: calibration images (the user's or the built-in ones), their
/// statistics from the fp32 model, GPTQ rounding, and with `--max-slowdown` for TinyViT encoders the layers kept fp16
/// chosen by measurement (`PrecisionSearch`). The tool and the accuracy tests run this one function.
public enum CalibratedConversion {
    public struct Settings: Sendable {
        /// `--calibrate` paths (`builtin` adds the built-in set); empty: the built-in set.
        public var files: [String] = []
        /// false: round to nearest (`--no-calibration`).
        public var calibrate = true
        /// `--max-slowdown`: run the precision search with this budget; nil (the default): the fixed fp16 list.
        public var maxSlowdown: Double?
        public var threads = 2
        /// Where to write the images used, as PNG (`--save-calibration-images`).
        public var saveImages: String?
        public init() {}
    }

    /// `options` as the user set them; the precision search runs with `settings.maxSlowdown` when they name no fp16 or
    /// fp32-activation layers.
    public static func convert(_ checkpoint: PreparedCheckpoint, options: ConversionOptions, settings: Settings,
                               progress say: (String) -> Void = { _ in }) throws -> (ConversionResult, PrecisionSearch.Result?) {
        var options = options
        options.threads = settings.threads
        guard options.precision == .int8, settings.calibrate else {
            if options.precision == .int8 { options.calibrationNote = "none: weights rounded to nearest (--no-calibration)" }
            return (try Converter.convert(checkpoint, options: options, progress: say), nil)
        }
        let fp32 = try Converter.convert(checkpoint, options: .init(precision: .fp32))
        let fp32Bytes = try fp32.writer.serialize()
        let plan = try CalibrationPlan(files: settings.files, config: fp32.config)
        say("calibrating on \(plan.summary)")
        if let dir = settings.saveImages { try plan.save(into: dir, say: say) }
        let stats = try Calibrator.run(fp32: fp32Bytes, inputs: plan.inputs, threads: settings.threads, progress: say)
        options.hessians = stats.hessians
        options.calibrationNote = plan.note
        options.calibrationFingerprint = plan.fingerprint
        if settings.maxSlowdown != nil, case .vit = fp32.config.encoder {
            say("--max-slowdown: the layer-precision search is for TinyViT encoders; this SAM ViT keeps every matrix int8")
        }
        guard case .tinyViT = fp32.config.encoder, options.keepFP16 == nil, options.fp32Activations == nil,
              let maxSlowdown = settings.maxSlowdown else {
            return (try Converter.convert(checkpoint, options: options, progress: say), nil)
        }
        options.keepFP16 = []
        options.fp32Activations = []
        options.keepOriginals = true
        let base = try Converter.convert(checkpoint, options: options, progress: say)
        let measuring = Array(plan.inputs.prefix(PrecisionSearch.measuringImages))
        let (choice, writer) = try PrecisionSearch.choose(base: base, fp32: fp32Bytes, macs: stats.macs, images: measuring,
                                                          maxSlowdown: maxSlowdown, threads: settings.threads,
                                                          progress: say)
        return (PrecisionSearch.apply(choice, writer: writer, to: base, maxSlowdown: maxSlowdown), choice)
    }
}

import CPocketSAMABI
import PocketSAM
import PocketSAMFormat
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

// The C ABI of include/pocketsam.h, one @_cdecl function per declaration. Each validates every
// pointer, size and enum, converts, calls the Swift API and maps errors to statuses: no Swift error
// or trap crosses the boundary.

final class ModelBox {
    let model: Model
    /// Bytes copied for psam_model_load_from_memory when the caller's were misaligned.
    init(_ m: Model) { model = m }
}

final class SessionBox {
    let modelBox: ModelBox
    let session: Session
    var lastError: [CChar] = [0]
    var scratch = Prediction()
    init(_ m: ModelBox, _ s: Session) {
        modelBox = m
        session = s
        lastError.reserveCapacity(256)
    }

    func fail(_ status: psam_status, _ message: String) -> psam_status {
        lastError = Array(message.utf8CString)
        return status
    }

    func ok() -> psam_status {
        if lastError.count != 1 { lastError = [0] }
        return PSAM_OK
    }
}

let abiVersionString: StaticString = "0.1.0"

func status(of error: Error) -> psam_status {
    switch error {
    case let e as PocketSAMError:
        switch e {
        case .model(let pe):
            if case .cannotOpen = pe { return PSAM_ERR_IO }
            return PSAM_ERR_MODEL
        case .unsupportedModel: return PSAM_ERR_MODEL
        case .invalidImage: return PSAM_ERR_IMAGE
        case .invalidPrompt: return PSAM_ERR_PROMPT
        case .noImage: return PSAM_ERR_NO_IMAGE
        case .bufferTooSmall: return PSAM_ERR_BUFFER_TOO_SMALL
        case .bufferMisaligned, .invalidOptions: return PSAM_ERR_INVALID_ARGUMENT
        case .invalidEmbedding: return PSAM_ERR_EMBEDDING
        case .cancelled: return PSAM_ERR_CANCELLED
        }
    case let e as PSAMError:
        if case .cannotOpen = e { return PSAM_ERR_IO }
        return PSAM_ERR_MODEL
    case let e as ImageIOError:
        switch e {
        case .cannotRead, .cannotWrite: return PSAM_ERR_IO
        default: return PSAM_ERR_IMAGE
        }
    default: return PSAM_ERR_INTERNAL
    }
}

func writeError(_ message: String, _ buf: UnsafeMutablePointer<CChar>?, _ size: Int) {
    guard let buf, size > 0 else { return }
    let bytes = Array(message.utf8.prefix(size - 1))
    for (i, b) in bytes.enumerated() { buf[i] = CChar(bitPattern: b) }
    buf[bytes.count] = 0
}

func sessionBox(_ p: OpaquePointer?) -> SessionBox? {
    p.map { Unmanaged<SessionBox>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

func modelBox(_ p: OpaquePointer?) -> ModelBox? {
    p.map { Unmanaged<ModelBox>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

@_cdecl("psam_status_string")
public func psam_status_string(_ s: psam_status) -> UnsafePointer<CChar> {
    let text: StaticString
    switch s {
    case PSAM_OK: text = "ok"
    case PSAM_ERR_INVALID_ARGUMENT: text = "invalid argument"
    case PSAM_ERR_IO: text = "i/o error"
    case PSAM_ERR_MODEL: text = "invalid model"
    case PSAM_ERR_IMAGE: text = "invalid image"
    case PSAM_ERR_PROMPT: text = "invalid prompt"
    case PSAM_ERR_NO_IMAGE: text = "no image set"
    case PSAM_ERR_BUFFER_TOO_SMALL: text = "buffer too small"
    case PSAM_ERR_INTERNAL: text = "internal error"
    case PSAM_ERR_CANCELLED: text = "cancelled"
    case PSAM_ERR_EMBEDDING: text = "invalid image embedding"
    default: text = "unknown status"
    }
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("psam_version")
public func psam_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(abiVersionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("psam_abi_version")
public func psam_abi_version() -> Int32 { Int32(PSAM_ABI_VERSION) }

// MARK: models

@_cdecl("psam_model_load")
public func psam_model_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                            _ errorBuffer: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> psam_status {
    guard let out else {
        writeError("out_model is NULL", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    out.pointee = nil
    guard let path else {
        writeError("path is NULL", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    do {
        let m = try Model(path: String(cString: path))
        out.pointee = OpaquePointer(Unmanaged.passRetained(ModelBox(m)).toOpaque())
        writeError("", errorBuffer, errorSize)
        return PSAM_OK
    } catch {
        writeError("\(error)", errorBuffer, errorSize)
        return status(of: error)
    }
}

@_cdecl("psam_model_load_from_memory")
public func psam_model_load_from_memory(_ data: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                        _ errorBuffer: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> psam_status {
    guard let out else {
        writeError("out_model is NULL", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    out.pointee = nil
    guard let data, size > 0 else {
        writeError("data is NULL or size is 0", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let storage = Int(bitPattern: data) % 64 == 0 ? ByteStorage(borrowing: bytes) : ByteStorage(copying: bytes)
    do {
        let m = try Model(file: try PSAMFile(storage: storage))
        out.pointee = OpaquePointer(Unmanaged.passRetained(ModelBox(m)).toOpaque())
        writeError("", errorBuffer, errorSize)
        return PSAM_OK
    } catch {
        writeError("\(error)", errorBuffer, errorSize)
        return status(of: error)
    }
}

@_cdecl("psam_model_free")
public func psam_model_free(_ model: OpaquePointer?) {
    guard let model else { return }
    Unmanaged<ModelBox>.fromOpaque(UnsafeRawPointer(model)).release()
}

@_cdecl("psam_model_get_info")
public func psam_model_get_info(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<psam_model_info>?) -> psam_status {
    guard let m = modelBox(model)?.model, let out else { return PSAM_ERR_INVALID_ARGUMENT }
    var info = psam_model_info()
    info.input_size = Int32(m.config.encoder.imageSize)
    info.low_res_size = Int32(4 * m.config.prompt.embeddingSize)
    info.num_multimask = Int32(m.config.decoder.numMultimaskOutputs)
    info.hq = m.config.decoder.hq == nil ? 0 : 1
    let v = Array(m.config.variant.rawValue.utf8.prefix(15))
    withUnsafeMutableBytes(of: &info.variant) { b in
        for (i, c) in v.enumerated() { b[i] = c }
        b[v.count] = 0
    }
    out.pointee = info
    return PSAM_OK
}

// MARK: sessions

@_cdecl("psam_session_default_params")
public func psam_session_default_params() -> psam_session_params {
    psam_session_params(threads: 1, arena: nil, arena_size: 0)
}

@_cdecl("psam_session_arena_size")
public func psam_session_arena_size(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<Int>?) -> psam_status {
    guard let m = modelBox(model)?.model, let out else { return PSAM_ERR_INVALID_ARGUMENT }
    do {
        out.pointee = try m.plannedArenaBytes()
        return PSAM_OK
    } catch {
        return status(of: error)
    }
}

@_cdecl("psam_session_create")
public func psam_session_create(_ model: OpaquePointer?, _ params: UnsafePointer<psam_session_params>?,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?, _ errorBuffer: UnsafeMutablePointer<CChar>?,
                                _ errorSize: Int) -> psam_status {
    guard let out else {
        writeError("out_session is NULL", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    out.pointee = nil
    guard let mb = modelBox(model) else {
        writeError("model is NULL", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    let p = params?.pointee ?? psam_session_default_params()
    guard p.threads >= 1, p.threads <= 256 else {
        writeError("threads must be 1 to 256, not \(p.threads)", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    guard (p.arena == nil) == (p.arena_size == 0) else {
        writeError("arena and arena_size must be given together", errorBuffer, errorSize)
        return PSAM_ERR_INVALID_ARGUMENT
    }
    do {
        let s: Session
        if let a = p.arena {
            s = try Session(model: mb.model, threads: Int(p.threads), buffer: UnsafeMutableRawBufferPointer(start: a, count: p.arena_size))
        } else {
            s = Session(model: mb.model, threads: Int(p.threads))
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(SessionBox(mb, s)).toOpaque())
        writeError("", errorBuffer, errorSize)
        return PSAM_OK
    } catch {
        writeError("\(error)", errorBuffer, errorSize)
        return status(of: error)
    }
}

@_cdecl("psam_session_free")
public func psam_session_free(_ session: OpaquePointer?) {
    guard let session else { return }
    Unmanaged<SessionBox>.fromOpaque(UnsafeRawPointer(session)).release()
}

let nullSessionMessage: StaticString = "session is NULL"

@_cdecl("psam_last_error")
public func psam_last_error(_ session: OpaquePointer?) -> UnsafePointer<CChar> {
    guard let s = sessionBox(session) else {
        return UnsafeRawPointer(nullSessionMessage.utf8Start).assumingMemoryBound(to: CChar.self)
    }
    return s.lastError.withUnsafeBufferPointer { $0.baseAddress! }
}

// MARK: images

struct StatusError: Error { let status: psam_status }

/// Checks the image arguments of psam_set_image / psam_generate; the channel count, or the failure status
/// (with the session's message set).
func imageChannels(_ s: SessionBox, _ pixels: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: Int,
                   _ format: psam_pixel_format) -> Result<Int, StatusError> {
    guard pixels != nil else { return .failure(StatusError(status: s.fail(PSAM_ERR_INVALID_ARGUMENT, "pixels is NULL"))) }
    let channels: Int
    switch format {
    case PSAM_PIXEL_RGB8: channels = 3
    case PSAM_PIXEL_GRAY8: channels = 1
    default: return .failure(StatusError(status: s.fail(PSAM_ERR_INVALID_ARGUMENT, "unknown pixel format \(format.rawValue)")))
    }
    guard width > 0, height > 0 else {
        return .failure(StatusError(status: s.fail(PSAM_ERR_INVALID_ARGUMENT, "image size \(width)x\(height)")))
    }
    guard stride == 0 || stride >= Int(width) * channels else {
        return .failure(StatusError(status: s.fail(PSAM_ERR_INVALID_ARGUMENT,
                                                   "stride \(stride) is less than a row (\(Int(width) * channels) bytes)")))
    }
    return .success(channels)
}

@_cdecl("psam_set_image")
public func psam_set_image(_ session: OpaquePointer?, _ pixels: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32,
                           _ stride: Int, _ format: psam_pixel_format) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    let channels: Int
    switch imageChannels(s, pixels, width, height, stride, format) {
    case let .success(c): channels = c
    case let .failure(e): return e.status
    }
    guard let pixels else { return PSAM_ERR_INVALID_ARGUMENT }
    do {
        try s.session.setImage(pixels: pixels, width: Int(width), height: Int(height), channels: channels,
                               stride: stride == 0 ? nil : stride)
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_set_image_file")
public func psam_set_image_file(_ session: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let path else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "path is NULL") }
    do {
        let img = try ImageIO.read(String(cString: path))
        try img.pixels.withUnsafeBufferPointer {
            try s.session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
        }
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_get_image_size")
public func psam_get_image_size(_ session: OpaquePointer?, _ w: UnsafeMutablePointer<Int32>?, _ h: UnsafeMutablePointer<Int32>?) -> psam_status {
    guard let s = sessionBox(session), let w, let h else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let size = s.session.currentImageSize else { return s.fail(PSAM_ERR_NO_IMAGE, "no image has been set") }
    w.pointee = Int32(size.width)
    h.pointee = Int32(size.height)
    return s.ok()
}

// MARK: prediction

@_cdecl("psam_prompt_default")
public func psam_prompt_default() -> psam_prompt {
    psam_prompt(points: nil, num_points: 0, box: nil, mask_input: nil, mask_input_size: 0, multimask: 0, hq_token_only: 0)
}

/// Runs a prompt into the session's reusable result.
func run(_ s: SessionBox, _ prompt: UnsafePointer<psam_prompt>?) -> psam_status {
    guard let pr = prompt?.pointee else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "prompt is NULL") }
    let p: Prompt
    switch convert(s, pr) {
    case let .success(v): p = v
    case let .failure(e): return e.status
    }
    do {
        try s.session.predict(points: p.points, box: p.box, maskInput: p.maskInput, multimask: p.multimask,
                              hqTokenOnly: p.hqTokenOnly, into: &s.scratch)
        return PSAM_OK
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

/// A C prompt as the Swift API's, or the failed status (its message set).
func convert(_ s: SessionBox, _ pr: psam_prompt, index: Int? = nil) -> Result<Prompt, StatusError> {
    let at = index.map { "prompt \($0): " } ?? ""
    func fail(_ st: psam_status, _ m: String) -> Result<Prompt, StatusError> { .failure(StatusError(status: s.fail(st, at + m))) }
    guard pr.num_points <= Session.maxPoints else {
        return fail(PSAM_ERR_PROMPT, "\(pr.num_points) points (at most \(Session.maxPoints))")
    }
    guard pr.num_points == 0 || pr.points != nil else { return fail(PSAM_ERR_INVALID_ARGUMENT, "points is NULL") }
    guard pr.mask_input_size == 0 || pr.mask_input != nil else { return fail(PSAM_ERR_INVALID_ARGUMENT, "mask_input is NULL") }
    guard pr.multimask == 0 || pr.multimask == 1 else { return fail(PSAM_ERR_INVALID_ARGUMENT, "multimask must be 0 or 1") }
    guard pr.hq_token_only == 0 || pr.hq_token_only == 1 else {
        return fail(PSAM_ERR_INVALID_ARGUMENT, "hq_token_only must be 0 or 1")
    }
    var points: [PointPrompt] = []
    points.reserveCapacity(pr.num_points)
    for i in 0..<pr.num_points {
        let p = pr.points![i]
        guard p.label == 0 || p.label == 1 else { return fail(PSAM_ERR_PROMPT, "point \(i) has label \(p.label) (0 or 1)") }
        points.append(PointPrompt(x: p.x, y: p.y, positive: p.label == 1))
    }
    let box = pr.box.map { BoxPrompt(x0: $0.pointee.x0, y0: $0.pointee.y0, x1: $0.pointee.x1, y1: $0.pointee.y1) }
    let mask = pr.mask_input.map { Array(UnsafeBufferPointer(start: $0, count: pr.mask_input_size)) }
    return .success(Prompt(points: points, box: box, maskInput: mask, multimask: pr.multimask == 1, hqTokenOnly: pr.hq_token_only == 1))
}

/// Copies a prediction into library-owned memory (`psam_result_free`).
func allocResult(_ r: Prediction) -> UnsafeMutablePointer<psam_result> {
    func copy<T>(_ a: [T]) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(a.count, 1))
        a.withUnsafeBufferPointer { p.initialize(from: $0.baseAddress!, count: a.count) }
        return p
    }
    let res = UnsafeMutablePointer<psam_result>.allocate(capacity: 1)
    res.initialize(to: psam_result(num_masks: Int32(r.count), width: Int32(r.width), height: Int32(r.height),
                                   low_res_size: Int32(r.lowResSize), masks: copy(r.masks), iou: copy(r.iou),
                                   stability: copy(r.stability), low_res_logits: copy(r.lowResLogits)))
    return res
}

@_cdecl("psam_predict_batch")
public func psam_predict_batch(_ session: OpaquePointer?, _ prompts: UnsafePointer<psam_prompt>?, _ count: Int,
                               _ out: UnsafeMutablePointer<UnsafeMutablePointer<psam_result>?>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let out else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "out_results is NULL") }
    guard count >= 1, count <= 1 << 20 else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "count \(count) (1 to 1048576)") }
    for i in 0..<count { out[i] = nil }
    guard let prompts else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "prompts is NULL") }
    var list: [Prompt] = []
    list.reserveCapacity(count)
    for i in 0..<count {
        switch convert(s, prompts[i], index: i) {
        case let .success(p): list.append(p)
        case let .failure(e): return e.status
        }
    }
    do {
        let results = try s.session.predict(prompts: list)
        for (i, r) in results.enumerated() { out[i] = allocResult(r) }
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_get_embedding")
public func psam_get_embedding(_ session: OpaquePointer?, _ buffer: UnsafeMutableRawPointer?, _ capacity: Int,
                               _ outSize: UnsafeMutablePointer<Int>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let outSize else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "out_size is NULL") }
    guard buffer != nil || capacity == 0 else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "buffer is NULL with a capacity") }
    do {
        let size = try s.session.embeddingFileSize()
        outSize.pointee = size
        guard let buffer else { return s.ok() }
        guard capacity >= size else {
            return s.fail(PSAM_ERR_BUFFER_TOO_SMALL, "the embedding needs \(size) bytes, the buffer has \(capacity)")
        }
        try s.session.writeEmbeddingFile(into: UnsafeMutableRawBufferPointer(start: buffer, count: size))
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_set_embedding")
public func psam_set_embedding(_ session: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: Int) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let data, size > 0 else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "data is NULL or size is 0") }
    do {
        try s.session.setEmbedding(UnsafeRawBufferPointer(start: data, count: size))
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_predict")
public func psam_predict(_ session: OpaquePointer?, _ prompt: UnsafePointer<psam_prompt>?, _ masks: UnsafeMutablePointer<UInt8>?,
                         _ masksCapacity: Int, _ iou: UnsafeMutablePointer<Float>?, _ stability: UnsafeMutablePointer<Float>?,
                         _ scoresCapacity: Int, _ lowRes: UnsafeMutablePointer<Float>?, _ lowResCapacity: Int,
                         _ outCount: UnsafeMutablePointer<Int32>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let masks, let outCount else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "masks or out_num_masks is NULL") }
    // Check capacities before the (costly) decoder run, from the image size and prompt.
    guard let size = s.session.currentImageSize else { return s.fail(PSAM_ERR_NO_IMAGE, "predict was called before setImage") }
    let cfg = s.modelBox.model.config.decoder
    let count = prompt?.pointee.multimask == 1 && cfg.hq == nil ? Int(cfg.numMultimaskOutputs) : 1
    let low = 4 * s.modelBox.model.config.prompt.embeddingSize
    guard masksCapacity >= count * size.width * size.height else {
        return s.fail(PSAM_ERR_BUFFER_TOO_SMALL, "masks needs \(count * size.width * size.height) bytes, has \(masksCapacity)")
    }
    guard (iou == nil && stability == nil) || scoresCapacity >= count else {
        return s.fail(PSAM_ERR_BUFFER_TOO_SMALL, "scores need \(count) floats, have \(scoresCapacity)")
    }
    guard lowRes == nil || lowResCapacity >= count * low * low else {
        return s.fail(PSAM_ERR_BUFFER_TOO_SMALL, "low_res_logits needs \(count * low * low) floats, has \(lowResCapacity)")
    }
    let st = run(s, prompt)
    guard st == PSAM_OK else { return st }
    let r = s.scratch
    r.masks.withUnsafeBufferPointer { masks.update(from: $0.baseAddress!, count: r.masks.count) }
    if let iou { for i in 0..<r.count { iou[i] = r.iou[i] } }
    if let stability { for i in 0..<r.count { stability[i] = r.stability[i] } }
    if let lowRes { r.lowResLogits.withUnsafeBufferPointer { lowRes.update(from: $0.baseAddress!, count: r.lowResLogits.count) } }
    outCount.pointee = Int32(r.count)
    return s.ok()
}

@_cdecl("psam_predict_alloc")
public func psam_predict_alloc(_ session: OpaquePointer?, _ prompt: UnsafePointer<psam_prompt>?,
                               _ out: UnsafeMutablePointer<UnsafeMutablePointer<psam_result>?>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let out else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "out_result is NULL") }
    out.pointee = nil
    let st = run(s, prompt)
    guard st == PSAM_OK else { return st }
    let res = allocResult(s.scratch)
    out.pointee = res
    return s.ok()
}

@_cdecl("psam_result_free")
public func psam_result_free(_ r: UnsafeMutablePointer<psam_result>?) {
    guard let r else { return }
    r.pointee.masks?.deallocate()
    r.pointee.iou?.deallocate()
    r.pointee.stability?.deallocate()
    r.pointee.low_res_logits?.deallocate()
    r.deallocate()
}

// MARK: Segment everything

@_cdecl("psam_generate_default_params")
public func psam_generate_default_params() -> psam_generate_params {
    let o = MaskGeneratorOptions()
    return psam_generate_params(points_per_side: Int32(o.pointsPerSide ?? 32), points_per_batch: Int32(o.pointsPerBatch),
                                pred_iou_thresh: o.predIoUThresh, stability_score_thresh: o.stabilityScoreThresh,
                                stability_score_offset: o.stabilityScoreOffset, box_nms_thresh: o.boxNMSThresh,
                                crop_n_layers: Int32(o.cropNLayers), crop_nms_thresh: o.cropNMSThresh,
                                crop_overlap_ratio: Float(o.cropOverlapRatio),
                                crop_n_points_downscale_factor: Int32(o.cropNPointsDownscaleFactor),
                                min_mask_region_area: Int32(o.minMaskRegionArea), hierarchical: o.hierarchical ? 1 : 0,
                                hierarchical_cover_offset: o.hierarchicalCoverOffset, progress: nil, progress_user: nil,
                                hq_token_only: o.hqTokenOnly ? 1 : 0)
}

@_cdecl("psam_generate")
public func psam_generate(_ session: OpaquePointer?, _ pixels: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32,
                          _ stride: Int, _ format: psam_pixel_format, _ params: UnsafePointer<psam_generate_params>?,
                          _ out: UnsafeMutablePointer<UnsafeMutablePointer<psam_generate_result>?>?) -> psam_status {
    guard let s = sessionBox(session) else { return PSAM_ERR_INVALID_ARGUMENT }
    guard let out else { return s.fail(PSAM_ERR_INVALID_ARGUMENT, "out_result is NULL") }
    out.pointee = nil
    let channels: Int
    switch imageChannels(s, pixels, width, height, stride, format) {
    case let .success(c): channels = c
    case let .failure(e): return e.status
    }
    guard let pixels else { return PSAM_ERR_INVALID_ARGUMENT }
    let p = params?.pointee ?? psam_generate_default_params()
    var o = MaskGeneratorOptions()
    o.pointsPerSide = Int(p.points_per_side)
    o.pointsPerBatch = Int(p.points_per_batch)
    o.predIoUThresh = p.pred_iou_thresh
    o.stabilityScoreThresh = p.stability_score_thresh
    o.stabilityScoreOffset = p.stability_score_offset
    o.boxNMSThresh = p.box_nms_thresh
    o.cropNLayers = Int(p.crop_n_layers)
    o.cropNMSThresh = p.crop_nms_thresh
    o.cropOverlapRatio = Double(p.crop_overlap_ratio)
    o.cropNPointsDownscaleFactor = Int(p.crop_n_points_downscale_factor)
    o.minMaskRegionArea = Int(p.min_mask_region_area)
    o.hierarchical = p.hierarchical != 0
    o.hierarchicalCoverOffset = p.hierarchical_cover_offset
    guard p.hq_token_only == 0 || p.hq_token_only == 1 else {
        return s.fail(PSAM_ERR_INVALID_ARGUMENT, "hq_token_only must be 0 or 1")
    }
    o.hqTokenOnly = p.hq_token_only == 1
    let progress: ((GenerationProgress) -> Bool)? = p.progress.map { f in
        { g in f(p.progress_user, Int32(g.crop), Int32(g.crops), Int32(g.pointsDone), Int32(g.pointsTotal)) == 0 }
    }
    do {
        let r = try s.session.generate(pixels: pixels, width: Int(width), height: Int(height), channels: channels,
                                       stride: stride == 0 ? nil : stride, options: o, progress: progress)
        let masks = UnsafeMutablePointer<psam_generated_mask>.allocate(capacity: max(r.masks.count, 1))
        for (i, m) in r.masks.enumerated() {
            let counts = UnsafeMutablePointer<UInt32>.allocate(capacity: max(m.segmentation.counts.count, 1))
            m.segmentation.counts.withUnsafeBufferPointer { counts.initialize(from: $0.baseAddress!, count: $0.count) }
            (masks + i).initialize(to: psam_generated_mask(
                rle_counts: counts, rle_length: m.segmentation.counts.count, area: Int64(m.area),
                bbox: (Int32(m.bbox.x), Int32(m.bbox.y), Int32(m.bbox.width), Int32(m.bbox.height)),
                predicted_iou: m.predictedIoU, stability_score: m.stabilityScore, point: (m.point.x, m.point.y),
                crop_box: (Int32(m.cropBox.x), Int32(m.cropBox.y), Int32(m.cropBox.width), Int32(m.cropBox.height))))
        }
        let res = UnsafeMutablePointer<psam_generate_result>.allocate(capacity: 1)
        res.initialize(to: psam_generate_result(width: width, height: height, num_masks: r.masks.count, masks: masks,
                                                decoder_calls: Int64(r.stats.decoderCalls), seconds: r.stats.totalSeconds))
        out.pointee = res
        return s.ok()
    } catch {
        return s.fail(status(of: error), "\(error)")
    }
}

@_cdecl("psam_generate_result_free")
public func psam_generate_result_free(_ r: UnsafeMutablePointer<psam_generate_result>?) {
    guard let r else { return }
    if let m = r.pointee.masks {
        for i in 0..<r.pointee.num_masks { m[i].rle_counts?.deallocate() }
        m.deallocate()
    }
    r.deallocate()
}

@_cdecl("psam_rle_decode")
public func psam_rle_decode(_ counts: UnsafePointer<UInt32>?, _ length: Int, _ width: Int32, _ height: Int32,
                            _ out: UnsafeMutablePointer<UInt8>?, _ capacity: Int) -> psam_status {
    guard let counts, let out, width > 0, height > 0, capacity >= Int(width) * Int(height) else { return PSAM_ERR_INVALID_ARGUMENT }
    let rle = MaskRLE(height: Int(height), width: Int(width), counts: Array(UnsafeBufferPointer(start: counts, count: length)))
    guard rle.isValid else { return PSAM_ERR_INVALID_ARGUMENT }
    rle.decode(into: out)
    return PSAM_OK
}

import ArgumentParser
import PocketSAM
import PocketSAMIO

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode an image once and save its embedding (.psemb) for `segment --embedding`.",
        discussion: """
        The file holds what prompts need of the image (the embedding, the image's size, an HQ-SAM model's HQ \
        features) and the model file's fingerprint: only sessions of the same .psam file accept it. About 4 MB \
        for SAM's 64x64x256 embedding (docs/FORMAT.md, ".psemb").

        Example:
          pocketsam encode --model sam_b.psam --image photo.jpg -o photo.psemb

        Exit codes: 0 written, 2 bad model file, 3 bad image, 4 output not written.
        """)

    @Option(help: "The .psam model.") var model: String
    @Option(help: "JPEG or PNG image.") var image: String
    @Option(name: .shortAndLong, help: "The .psemb file to write.") var output: String
    @Option(help: "Threads.") var threads = 2

    func run() throws {
        let m = try loadModel(model)
        let img = try loadImage(image)
        let session = Session(model: m, threads: threads)
        let t0 = now()
        let bytes: [UInt8]
        do {
            try img.pixels.withUnsafeBufferPointer {
                try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
            }
            bytes = try session.embeddingFile()
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(3)
        }
        let t1 = now()
        do {
            try NPY.write(bytes, to: output)
        } catch {
            stderrWrite("pocketsam: error: \(error)\n")
            throw ExitCode(4)
        }
        print("wrote \(output): \(bytes.count) bytes (\(img.width)×\(img.height) image, encode \(Int((t1 - t0) * 1000)) ms)")
    }
}

// Segments an image with a box through the Swift API and writes the mask as a PNG.
// usage: swift-host MODEL.psam IMAGE x0 y0 x1 y1 OUT.png
import PocketSAM
import PocketSAMIO

#if canImport(Glibc)
import Glibc
#endif

func complain(_ s: String) {
    var b = Array(s.utf8)
    _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

let args = CommandLine.arguments
guard args.count == 8, let b = Array(args[3...6]).map(Float.init) as [Float?]?, b.allSatisfy({ $0 != nil }) else {
    complain("usage: swift-host MODEL.psam IMAGE x0 y0 x1 y1 OUT.png\n")
    exit(64)
}
do {
    let model = try Model(path: args[1])
    let session = Session(model: model, threads: 2)
    let img = try ImageIO.read(args[2])
    try img.pixels.withUnsafeBufferPointer {
        try session.setImage(pixels: $0.baseAddress!, width: img.width, height: img.height, channels: img.channels)
    }
    let p = try session.predict(box: BoxPrompt(x0: b[0]!, y0: b[1]!, x1: b[2]!, y1: b[3]!))
    try ImageIO.writePNG(Image(width: p.width, height: p.height, channels: 1, pixels: p.masks.map { $0 * 255 }), to: args[7])
    print("mask: \(p.masks.reduce(0) { $0 + Int($1) }) pixels, predicted IoU \(p.iou[0])")
} catch {
    complain("swift-host: \(error)\n")
    exit(1)
}

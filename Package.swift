// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "PocketSAM",
    products: [
        .library(name: "PocketSAM", targets: ["PocketSAM"]),
        // The C ABI (include/pocketsam.h) as one static library for C hosts.
        .library(name: "PocketSAMC", type: .static, targets: ["PocketSAMC"]),
        .library(name: "PocketSAMFormat", targets: ["PocketSAMFormat"]),
        .library(name: "PocketSAMIO", targets: ["PocketSAMIO"]),
        .executable(name: "pocketsam", targets: ["pocketsam"]),
        .executable(name: "pocketsam-quantize", targets: ["pocketsam-quantize"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The .psam layout: one reader and one writer shared by the runtime and the tool.
        .target(name: "PocketSAMFormat", path: "Sources/PocketSAMFormat"),

        // OpenBLAS (system library) for the fp32 path.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),

        // C11 kernels: int8 GEMM (AVX-512 VNNI, AVX2, NEON dot-product, scalar) with runtime dispatch,
        // activation quantization, fp32 row operations.
        .target(name: "PocketSAMKernels", path: "Sources/PocketSAMKernels"),

        // The runtime: model, session, encoders, prompt encoder, mask decoder, pre/post-processing.
        .target(name: "PocketSAM", dependencies: ["PocketSAMFormat", "PocketSAMKernels", "COpenBLAS"], path: "Sources/PocketSAM"),

        // Image and mask I/O: JPEG (libturbojpeg), PNG (libpng), NPY.
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
        .target(name: "PocketSAMIO", dependencies: ["CPNG", "CTurboJPEG"], path: "Sources/PocketSAMIO"),

        // The C ABI: the header's types (C) and their Swift implementation.
        .target(name: "CPocketSAMABI", path: "Sources/CPocketSAMABI"),
        .target(name: "PocketSAMC", dependencies: ["CPocketSAMABI", "PocketSAM", "PocketSAMIO", "PocketSAMFormat"],
                path: "Sources/PocketSAMC"),
        // A Swift host using the Swift API, as Examples/c-host does through the C ABI.
        .executableTarget(name: "swift-host", dependencies: ["PocketSAM", "PocketSAMIO"], path: "Examples/swift-host"),

        // The command-line tool: segment, info, bench.
        .executableTarget(
            name: "pocketsam",
            dependencies: ["PocketSAM", "PocketSAMIO", "PocketSAMFormat",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/pocketsam"
        ),

        // The quantization tool: checkpoint readers, architecture detection, BN folding, quantization.
        .target(
            name: "PocketSAMQuantize",
            dependencies: ["PocketSAMFormat", "PocketSAM", "PocketSAMIO", "PocketSAMKernels"],
            path: "Quantization/Sources/PocketSAMQuantize"
        ),
        .executableTarget(
            name: "pocketsam-quantize",
            dependencies: [
                "PocketSAMQuantize",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Quantization/Sources/pocketsam-quantize"
        ),

        .testTarget(
            name: "PocketSAMFormatTests",
            dependencies: ["PocketSAMFormat"],
            path: "Tests/PocketSAMFormatTests"
        ),
        // Test support: counts heap allocations (interposes malloc in the test executable).
        .target(name: "MallocCounter", path: "Tests/MallocCounter"),
        .testTarget(
            name: "PocketSAMTests",
            dependencies: ["PocketSAM", "PocketSAMFormat", "PocketSAMIO", "PocketSAMQuantize", "MallocCounter", "pocketsam"],
            path: "Tests/PocketSAMTests"
        ),
        .testTarget(
            name: "PocketSAMQuantizeTests",
            dependencies: ["PocketSAMQuantize", "PocketSAMFormat", "pocketsam-quantize"],
            path: "Tests/PocketSAMQuantizeTests"
        ),
    ],
    swiftLanguageModes: [.v6],
    cLanguageStandard: .c11
)

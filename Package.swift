// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "PocketSAM",
    products: [
        .library(name: "PocketSAMFormat", targets: ["PocketSAMFormat"]),
        .executable(name: "pocketsam-quantize", targets: ["pocketsam-quantize"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The .psam layout: one reader and one writer shared by the runtime and the tool.
        .target(name: "PocketSAMFormat", path: "Sources/PocketSAMFormat"),

        // The quantization tool: checkpoint readers, architecture detection, BN folding, quantization.
        .target(
            name: "PocketSAMQuantize",
            dependencies: ["PocketSAMFormat"],
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
        .testTarget(
            name: "PocketSAMQuantizeTests",
            dependencies: ["PocketSAMQuantize", "PocketSAMFormat", "pocketsam-quantize"],
            path: "Tests/PocketSAMQuantizeTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)

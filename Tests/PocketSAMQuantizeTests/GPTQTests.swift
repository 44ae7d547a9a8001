import PocketSAMQuantize
import XCTest

/// GPTQ against plain rounding on a layer with correlated, uneven inputs, judged by what GPTQ minimises:
/// the calibration output error Σ_x ‖(W − Ŵ) x‖² = Σ_o (w_o − ŵ_o)ᵀ H (w_o − ŵ_o).
final class GPTQTests: XCTestCase {
    func testGPTQAndScaleRefitLowerTheOutputError() throws {
        let n = 16, k = 48, rows = 400
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func uniform() -> Double {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(seed >> 11) / Double(1 << 53)
        }
        func normal() -> Double { (-2 * log(max(uniform(), 1e-300))).squareRoot() * cos(2 * .pi * uniform()) }
        // Inputs: neighbouring channels correlated, every 7th channel 5× larger (outliers set int8 scales).
        var x = [Double](repeating: 0, count: rows * k)
        for r in 0..<rows {
            var prev = 0.0
            for j in 0..<k {
                let z = normal()
                x[r * k + j] = (z + 0.8 * prev) * (j % 7 == 0 ? 5 : 1)
                prev = z
            }
        }
        var h = [Float](repeating: 0, count: k * k)
        var hd = [Double](repeating: 0, count: k * k)
        for i in 0..<k { for j in 0..<k {
            var s = 0.0
            for r in 0..<rows { s += x[r * k + i] * x[r * k + j] }
            hd[i * k + j] = s
            h[i * k + j] = Float(s)
        } }
        let w = (0..<(n * k)).map { _ in Float(normal() * 0.1) }
        func outputError(_ approx: [Float]) -> Double {
            var total = 0.0
            for o in 0..<n {
                let e = (0..<k).map { Double(w[o * k + $0]) - Double(approx[o * k + $0]) }
                for i in 0..<k { for j in 0..<k { total += e[i] * hd[i * k + j] * e[j] } }
            }
            return total
        }
        let (qn, sn) = Quantizer.int8PerChannel(w, shape: [n, k], axis: 0, groupSize: 0)
        let nearest = outputError(Quantizer.dequantize(qn, scales: sn, shape: [n, k], axis: 0))
        let plain = try XCTUnwrap(GPTQ.quantize(w, n: n, k: k, hessian: h, groupSize: 0, refitScales: false))
        let refit = try XCTUnwrap(GPTQ.quantize(w, n: n, k: k, hessian: h, groupSize: 0))
        XCTAssertEqual(plain.values, refit.values, "the refit changes scales only")
        XCTAssertNotEqual(plain.scales, refit.scales)
        let ePlain = outputError(Quantizer.dequantize(plain.values, scales: plain.scales, shape: [n, k], axis: 0))
        let eRefit = outputError(Quantizer.dequantize(refit.values, scales: refit.scales, shape: [n, k], axis: 0))
        print("output error: nearest \(nearest), GPTQ \(ePlain), GPTQ + scale refit \(eRefit)")
        XCTAssertLessThan(ePlain, 0.8 * nearest, "GPTQ must beat rounding to nearest on its own objective")
        // Per channel the refitted scale is the exact minimiser over s (float rounding of H and s aside).
        XCTAssertLessThanOrEqual(eRefit, ePlain * (1 + 1e-6))
    }
}

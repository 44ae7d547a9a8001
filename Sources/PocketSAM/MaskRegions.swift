/// Small-region clean-up of binary masks, as SAM's `remove_small_regions` (OpenCV's
/// `connectedComponentsWithStats` with 8-connectivity).
enum MaskRegions {
    /// Labels the 8-connected components of the pixels where `mask[i] == value`, into `labels`
    /// (0 for the other pixels, components numbered from 1 in raster order of their first pixel).
    /// Returns the size of each component (index 0 unused).
    static func label(_ mask: UnsafePointer<UInt8>, value: UInt8, h: Int, w: Int,
                      labels: UnsafeMutablePointer<Int32>, stack: inout [Int32]) -> [Int] {
        labels.update(repeating: 0, count: h * w)
        var sizes = [0]
        for start in 0..<(h * w) where mask[start] == value && labels[start] == 0 {
            let id = Int32(sizes.count)
            var size = 0
            labels[start] = id
            stack.removeAll(keepingCapacity: true)
            stack.append(Int32(start))
            while let p = stack.popLast() {
                size += 1
                let y = Int(p) / w, x = Int(p) % w
                for dy in -1...1 {
                    let yy = y + dy
                    guard yy >= 0, yy < h else { continue }
                    for dx in -1...1 {
                        let xx = x + dx
                        guard xx >= 0, xx < w else { continue }
                        let q = yy * w + xx
                        if mask[q] == value, labels[q] == 0 {
                            labels[q] = id
                            stack.append(Int32(q))
                        }
                    }
                }
            }
            sizes.append(size)
        }
        return sizes
    }

    /// Fills holes (`holes`: background components smaller than `minArea`, including ones touching the
    /// border, as SAM does) or removes islands (foreground components smaller than `minArea`; when every
    /// island is small the largest is kept). Returns whether the mask changed.
    static func removeSmall(_ mask: UnsafeMutablePointer<UInt8>, h: Int, w: Int, minArea: Int, holes: Bool,
                            labels: UnsafeMutablePointer<Int32>, stack: inout [Int32]) -> Bool {
        let sizes = label(mask, value: holes ? 0 : 1, h: h, w: w, labels: labels, stack: &stack)
        let small = sizes.indices.dropFirst().filter { sizes[$0] < minArea }
        guard !small.isEmpty else { return false }
        var flip = [Bool](repeating: false, count: sizes.count)
        if holes {
            for i in small { flip[i] = true }
            for p in 0..<(h * w) where labels[p] != 0 && flip[Int(labels[p])] { mask[p] = 1 }
        } else {
            for i in small { flip[i] = true }
            if small.count == sizes.count - 1 {
                // Every island is small: keep the largest (the first of equals, as numpy's argmax).
                var best = 1
                for i in 1..<sizes.count where sizes[i] > sizes[best] { best = i }
                flip[best] = false
            }
            for p in 0..<(h * w) where labels[p] != 0 && flip[Int(labels[p])] { mask[p] = 0 }
        }
        return true
    }
}

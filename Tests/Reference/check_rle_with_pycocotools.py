#!/usr/bin/env python3
"""Checks `pocketsam everything` output with pycocotools (run by hand; CI checks our own RLE decoder).

    pip install pycocotools numpy segment-anything==1.0
    pocketsam everything --model M.psam --image I.png --out out/
    python Tests/Reference/check_rle_with_pycocotools.py out/masks.json

For every annotation: pycocotools' frPyObjects + decode (the COCO tools' reading of uncompressed RLE)
and segment_anything's own rle_to_mask give the same mask; its pixel count is "area"; pycocotools' area
and toBbox agree ("bbox" follows SAM: width = last column - first column, one less than COCO's extent).
Exits non-zero on the first disagreement.
"""
import json
import sys

import numpy as np
from pycocotools import mask as mask_utils
from segment_anything.utils.amg import rle_to_mask


def main(path: str) -> None:
    anns = json.load(open(path))
    for i, a in enumerate(anns):
        seg = a["segmentation"]
        h, w = seg["size"]
        coco_rle = mask_utils.frPyObjects(seg, h, w)
        coco = mask_utils.decode(coco_rle)
        sam = rle_to_mask(seg).astype(np.uint8)
        assert coco.shape == (h, w) and np.array_equal(coco, sam), f"annotation {i}: decoders disagree"
        assert int(coco.sum()) == a["area"] == int(mask_utils.area(coco_rle)), f"annotation {i}: area"
        if a["area"]:
            x, y, bw, bh = mask_utils.toBbox(coco_rle)
            assert [int(x), int(y), int(bw) - 1, int(bh) - 1] == a["bbox"], f"annotation {i}: bbox {a['bbox']} vs {(x, y, bw, bh)}"
    print(f"{path}: {len(anns)} masks decode identically with pycocotools and segment_anything; areas and boxes agree")


if __name__ == "__main__":
    main(sys.argv[1])

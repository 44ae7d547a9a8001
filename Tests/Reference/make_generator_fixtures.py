#!/usr/bin/env python3
"""Automatic mask generation fixtures: the official SamAutomaticMaskGenerator on the small random models.

Run by hand (never in CI), from the repository root, with .cache/images fetched (scripts/fetch-assets.sh)
and the venv of make_random_fixtures.py plus pycocotools and opencv-python-headless (the official
generator's min_mask_region_area clean-up calls cv2):

    pip install pycocotools opencv-python-headless
    python Tests/Reference/make_generator_fixtures.py

Rebuilds the two random checkpoints' models exactly as make_random_fixtures.py does (its builders are
imported), and runs segment_anything.SamAutomaticMaskGenerator (fp32, CPU, 2 threads) on chelsea.png and
coffee.png (scikit-image's data, as fetch-assets.sh downloads them), each with crop_n_layers 0 and 1.

Random weights give random masks, so the parameters are chosen for each model such that the reference
keeps at least 20 masks and every stage (IoU filter, stability filter, crop-edge filter, box NMS, crop
NMS) has something to do; they are written into each case:
  * vit (256 px input, 16x16 grid): its predicted IoUs are negative and its logits stay within about +-1,
    so the IoU filter is off (0, which the official code skips), the stability offset is 0.05 with a
    threshold at the 30th percentile of the scores; default NMS thresholds.
  * mobilesam (1024 px input, 8x8 grid): every point gives nearly the same image-wide mask (same box), so
    box_nms_thresh 0.7 keeps one mask; box_nms_thresh is 1.0 (no suppression, every mask survives) and
    the IoU filter is at the 40th percentile of its predicted IoUs, stability offset 0.05 at the 30th.
One more case runs vit / chelsea with min_mask_region_area 16 (holes and islands removed).

Writes Tests/Fixtures/random/generator/<model>_<image>_crop<L>[_minarea].json: the parameters and, per
mask in the official output order, area, bbox, predicted_iou, stability_score, point_coords, crop_box;
and <same>_masks.png: the masks tiled 16 per row (1 bit; mask i at tile row i // 16, column i % 16). The generator runs with output
mode "uncompressed_rle"; every RLE is checked to decode identically with pycocotools and with the
official rle_to_mask. manifest.json records versions and checksums (its "hq" section, written by
make_hq_generator_fixtures.py with this script's run_case / write_case / merge_manifest, is kept).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_random_fixtures as F  # noqa: E402  (the parity script's model builders)

from pycocotools import mask as mask_utils  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything.utils.amg import rle_to_mask  # noqa: E402

REPO = HERE.parents[1]
OUT = REPO / "Tests" / "Fixtures" / "random" / "generator"
IMAGES = ["chelsea.png", "coffee.png"]
TILE = 16


def params_for(tag: str, sam, image: np.ndarray) -> dict:
    """Thresholds from the distribution of the reference's own scores (see the module docstring)."""
    base = dict(points_per_side=16 if tag == "vit" else 8, points_per_batch=64, stability_score_offset=0.05,
                box_nms_thresh=0.7 if tag == "vit" else 1.0, crop_nms_thresh=0.7 if tag == "vit" else 1.0, crop_overlap_ratio=512 / 1500,
                crop_n_points_downscale_factor=1, min_mask_region_area=0)
    probe = SamAutomaticMaskGenerator(sam, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=0,
                                      **{k: v for k, v in base.items() if k != "box_nms_thresh"}, box_nms_thresh=1.0)
    data = probe._generate_masks(image)
    ious = np.asarray(data["iou_preds"], dtype=np.float64)
    stab = np.asarray(data["stability_score"], dtype=np.float64)
    base["pred_iou_thresh"] = 0.0 if tag == "vit" else float(np.float32(np.percentile(ious, 40)))
    base["stability_score_thresh"] = float(np.float32(np.percentile(stab, 30)))
    return base


def run_case(tag: str, sam, image: np.ndarray, params: dict, crop_layers: int,
             generator=SamAutomaticMaskGenerator, decode=rle_to_mask) -> tuple[dict, np.ndarray]:
    """One official run; ``generator``/``decode`` are the generator class and its package's rle_to_mask
    (make_hq_generator_fixtures.py passes segment_anything_hq's)."""
    gen = generator(sam, crop_n_layers=crop_layers, output_mode="uncompressed_rle", **params)
    anns = gen.generate(image)
    h, w = image.shape[:2]
    masks, stack = [], []
    for a in anns:
        seg = a["segmentation"]
        ours = decode(seg)
        coco = mask_utils.decode(mask_utils.frPyObjects(seg, h, w))
        assert np.array_equal(ours.astype(np.uint8), coco), "pycocotools decodes the RLE differently"
        stack.append(ours)
        masks.append({"area": int(a["area"]), "bbox": [int(v) for v in a["bbox"]],
                      "predicted_iou": float(a["predicted_iou"]), "stability_score": float(a["stability_score"]),
                      "point_coords": [float(v) for v in a["point_coords"][0]], "crop_box": [int(v) for v in a["crop_box"]]})
    # Tiled TILE masks per row (mask i at tile row i // TILE, column i % TILE), zero tiles after the last.
    rows = (len(stack) + TILE - 1) // TILE
    grid = np.zeros((rows * h, TILE * w), dtype=bool)
    for i, m in enumerate(stack):
        grid[(i // TILE) * h:(i // TILE + 1) * h, (i % TILE) * w:(i % TILE + 1) * w] = m
    return {"size": [h, w], "crop_n_layers": crop_layers, "tile_columns": TILE, "params": params, "masks": masks}, grid


def write_case(name: str, case: dict, stack: np.ndarray, image_path: Path) -> dict:
    """Writes <name>.json and <name>_masks.png (adding the image's name and SHA-256 to the case); returns the
    manifest entry."""
    case["image"] = image_path.name
    case["image_sha256"] = hashlib.sha256(image_path.read_bytes()).hexdigest()
    n = len(case["masks"])
    text = json.dumps(case, separators=(",", ":"))
    (OUT / f"{name}.json").write_text(text)
    Image.fromarray(stack.astype(bool)).convert("1").save(OUT / f"{name}_masks.png", optimize=True)
    png = (OUT / f"{name}_masks.png").read_bytes()
    print(name, n, "masks", len(text), "+", len(png), "bytes", flush=True)
    return {"masks": n, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "masks_png_sha256": hashlib.sha256(png).hexdigest(), "params": case["params"]}


def merge_manifest(sections: dict) -> None:
    """Writes manifest.json with these top-level sections replaced; the others (make_hq_generator_fixtures.py's
    "hq" section, or this script's) are kept as they are."""
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest.update(sections)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def main() -> None:
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = json.loads((REPO / "Tests/Fixtures/random/checkpoints.json").read_text())
    manifest = {"generator": "Tests/Reference/make_generator_fixtures.py",
                "versions": {d: md.version(d) for d in ["torch", "segment-anything", "mobilesam-lite", "numpy", "pycocotools",
                                                        "opencv-python-headless", "pillow"]},
                "cases": {}}
    for tag, build, key in [("vit", F.build_vit, "vit_tiny.pth"), ("mobilesam", F.build_mobilesam, "mobilesam_tiny.pth")]:
        sam = build(meta[key]["sha256"])
        for img_name in IMAGES:
            path = REPO / ".cache" / "images" / img_name
            image = np.array(Image.open(path).convert("RGB"))
            params = params_for(tag, sam, image)
            runs = [(0, dict(params)), (1, dict(params))]
            if tag == "vit" and img_name == "chelsea.png":
                runs.append((0, dict(params, min_mask_region_area=16)))
            for layers, p in runs:
                case, stack = run_case(tag, sam, image, p, layers)
                n = len(case["masks"])
                assert n >= 20, f"{tag} {img_name} crop {layers}: only {n} masks"
                name = f"{tag}_{Path(img_name).stem}_crop{layers}" + ("_minarea" if p["min_mask_region_area"] else "")
                manifest["cases"][name] = write_case(name, case, stack, path)
    merge_manifest(manifest)


if __name__ == "__main__":
    main()

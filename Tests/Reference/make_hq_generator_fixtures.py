#!/usr/bin/env python3
"""Automatic mask generation fixtures for HQ-SAM: the OFFICIAL segment_anything_hq.SamAutomaticMaskGenerator on the
two small random HQ-SAM models of make_hq_fixtures.py.

Run by hand (never in CI), from the repository root, after make_hq_fixtures.py (it reads the two checkpoints that
script wrote), with .cache/images fetched (scripts/fetch-assets.sh), in the venv of make_hq_fixtures.py plus
pycocotools and opencv-python-headless (as for make_generator_fixtures.py):

    pip install pycocotools opencv-python-headless
    python Tests/Reference/make_hq_generator_fixtures.py

Models: Tests/Fixtures/random/hq/hq_vit_tiny.pth (SAM ViT, 256 px input, 16x16 embedding grid) and
hq_tinyvit_tiny.pth (shrunk TinyViT, 1024 px, 64x64 grid, fp16 weights), rebuilt with make_hq_fixtures.py's own
builders and loaded by its load(): strict load_state_dict into the fp32 model (the TinyViT one from the fp16 weights,
an exact cast), eval() after loading; their SHA-256 is checked against Tests/Fixtures/random/hq/manifest.json.
The generator runs in fp32 on CPU with 2 threads (as make_generator_fixtures.py), on chelsea.png and coffee.png,
crop_n_layers 0 only.

What the official HQ generator does differently from segment_anything's (automatic_mask_generator.py of
segment_anything_hq 0.3 against segment_anything 1.0): generate(image, multimask_output=True) takes the
multimask flag and passes it to predict_torch; predict_torch is called without hq_token_only, so with its
default False. MaskDecoderHQ then returns ONE mask per point (not three): the logits of SAM's best mask token
among 1..3 (by predicted IoU) PLUS the HQ token's logits, and the predicted IoU of that SAM token (the HQ token has
none). So the grid gives points_per_side^2 candidate masks, each with SAM's IoU, and the stability score is that
of the summed logits. Everything else (the amg utilities, filters, NMS, RLE) is the same code; the NMS category
tensors are built with zeros_like(boxes[:, 0]) instead of zeros(n), which changes nothing (one category).

Random weights give odd masks, so the parameters are chosen per model from the reference's own scores (a probe
run with every filter off) and written into each case:
  * Both models predict negative IoUs for every point (checked), so the IoU filter is off: pred_iou_thresh 0,
    which the official code skips (any positive value would drop every mask).
  * Every mask of both models spans the whole image (one and the same bbox for all points, checked), so any
    box_nms_thresh < 1 keeps exactly one mask; box_nms_thresh is 1.0 (no suppression), crop_nms_thresh 1.0
    (one crop, unused) - as for mobilesam in make_generator_fixtures.py.
  * The stability filter does the work: stability_score_offset 0.05, stability_score_thresh (float32) at the
    midpoint of the widest gap between consecutive sorted stability scores whose lower neighbour lies in the
    KEEP window of percentiles below, so that no score sits within a hair of the threshold.
        vit      (16x16 grid, 256 candidates): threshold between the 60th and 80th percentile (keeps 20-40 %)
        tinyvit  ( 8x8 grid,   64 candidates): threshold between the 20th and 40th percentile (keeps 60-80 %)
    (the vit window is higher to keep the masks PNG small: its summed logits give large, smooth masks.)
The probe also checks, per point, that the generator's predicted IoU equals max(iou_prediction_head[1:4]) of that
point (hooked), i.e. SAM's selected token's IoU.

Writes, with make_generator_fixtures.py's run_case / write_case / merge_manifest (same formats),
Tests/Fixtures/random/generator/hq_<vit|tinyvit>_<chelsea|coffee>_crop0.json and _masks.png, and the "hq" section
of that folder's manifest.json (versions, checkpoints, cases; the other sections are kept as they are). Every
RLE is checked to decode identically with pycocotools and segment_anything_hq's rle_to_mask, and every case is run
twice and must come out identical.
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
import make_generator_fixtures as G  # noqa: E402  (run_case / write_case / merge_manifest, the fixture formats)
import make_hq_fixtures as H  # noqa: E402  (the two HQ models' builders and loader)

from segment_anything_hq import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything_hq.utils.amg import batched_mask_to_box, rle_to_mask  # noqa: E402

REPO = HERE.parents[1]
IMAGES = ["chelsea.png", "coffee.png"]
# Percentile window for the stability threshold, per model (see the module docstring).
KEEP = {"vit": (60, 80), "tinyvit": (20, 40)}
POINTS_PER_SIDE = {"vit": 16, "tinyvit": 8}


def base_params(tag: str) -> dict:
    # Same keys, in the same order, as make_generator_fixtures.py's params.
    return dict(points_per_side=POINTS_PER_SIDE[tag], points_per_batch=64, stability_score_offset=0.05,
                box_nms_thresh=1.0, crop_nms_thresh=1.0, crop_overlap_ratio=512 / 1500,
                crop_n_points_downscale_factor=1, min_mask_region_area=0, pred_iou_thresh=0.0)


def params_for(tag: str, sam, image: np.ndarray) -> tuple[dict, dict]:
    """Thresholds from the reference's own scores; also checks the HQ generator's one-mask-per-point IoUs."""
    base = base_params(tag)
    probe = SamAutomaticMaskGenerator(sam, stability_score_thresh=0.0, crop_n_layers=0, **base)
    heads = []
    handle = sam.mask_decoder.iou_prediction_head.register_forward_hook(lambda m, i, o: heads.append(o.detach()))
    data = probe._generate_masks(image)
    handle.remove()
    h, w = image.shape[:2]
    n = base["points_per_side"] ** 2
    ious = np.asarray(data["iou_preds"], dtype=np.float32)
    stab = np.asarray(data["stability_score"], dtype=np.float32)
    assert len(ious) == n, (tag, len(ious), "one mask per point expected")
    # predicted IoU = SAM's selected token's: max over tokens 1..3 of the IoU head, per point
    iou_all = torch.cat(heads).numpy()
    assert iou_all.shape == (n, 4), iou_all.shape
    grid_pts = probe.point_grids[0] * np.array([w, h])[None]
    best = {tuple(p): v for p, v in zip(grid_pts.tolist(), iou_all[:, 1:].max(axis=1))}
    for p, v in zip(np.asarray(data["points"]).tolist(), ious):
        assert best[tuple(p)] == v, (tag, p)
    assert (ious < 0).all(), "a positive predicted IoU: the IoU filter could do something"
    boxes = batched_mask_to_box(torch.stack([torch.as_tensor(rle_to_mask(r)) for r in data["rles"]]))
    assert (boxes == boxes[0]).all(), "masks with different boxes: box NMS could do something"
    # stability threshold: midpoint of the widest gap between consecutive sorted scores in the KEEP window
    s = np.sort(stab)
    lo, hi = (int(np.floor(q / 100 * (n - 1))) for q in KEEP[tag])
    gaps = s[lo + 1:hi + 2] - s[lo:hi + 1]
    i = lo + int(np.argmax(gaps))
    thresh = np.float32((np.float64(s[i]) + np.float64(s[i + 1])) / 2)
    assert s[i] < thresh < s[i + 1], (s[i], thresh, s[i + 1])
    base["stability_score_thresh"] = float(thresh)
    probe_stats = {"candidates": n, "iou_range": [float(ious.min()), float(ious.max())],
                   "stability_range": [float(s[0]), float(s[-1])], "stability_gap": [float(s[i]), float(s[i + 1])],
                   "kept_by_stability": int((stab >= thresh).sum()), "mask_bbox_xyxy": boxes[0].tolist()}
    return base, probe_stats


def main() -> None:
    torch.set_num_threads(2)
    G.OUT.mkdir(parents=True, exist_ok=True)
    hq_manifest = json.loads((H.OUT_DIR / "manifest.json").read_text())
    section = {"generator": "Tests/Reference/make_hq_generator_fixtures.py",
               "versions": {d: md.version(d) for d in ["torch", "segment-anything-hq", "timm", "numpy", "pycocotools",
                                                       "opencv-python-headless", "pillow"]},
               "checkpoints": {}, "cases": {}}
    for tag in ("vit", "tinyvit"):
        path = H.OUT_DIR / H.CKPT_FILE[tag]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == hq_manifest["checkpoints"][tag]["sha256"], f"{path.name} is not make_hq_fixtures.py's"
        section["checkpoints"][f"hq_{tag}"] = {"file": f"Tests/Fixtures/random/hq/{path.name}", "sha256": digest,
                                               "loaded_as": "float32" + (" (from float16)" if tag == "tinyvit" else "")}
        sam = H.load(tag, path)
        for img_name in IMAGES:
            img_path = REPO / ".cache" / "images" / img_name
            image = np.array(Image.open(img_path).convert("RGB"))
            params, probe = params_for(tag, sam, image)
            official = dict(generator=SamAutomaticMaskGenerator, decode=rle_to_mask)
            case, stack = G.run_case(tag, sam, image, params, 0, **official)
            again, stack2 = G.run_case(tag, sam, image, dict(params), 0, **official)
            assert json.dumps(case) == json.dumps(again) and np.array_equal(stack, stack2), f"{tag} {img_name}: differs"
            n = len(case["masks"])
            assert n >= 20, f"{tag} {img_name}: only {n} masks"
            assert n == probe["kept_by_stability"], (n, probe)
            name = f"hq_{tag}_{Path(img_name).stem}_crop0"
            entry = G.write_case(name, case, stack, img_path)
            section["cases"][name] = dict(entry, probe=probe)
            print(f"  {name}: {probe}", flush=True)
    G.merge_manifest({"hq": section})


if __name__ == "__main__":
    main()

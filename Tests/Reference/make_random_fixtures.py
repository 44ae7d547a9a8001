#!/usr/bin/env python3
"""Per-layer parity fixtures for the small random-weight SAM-ViT and MobileSAM-TinyViT checkpoints.

Run by hand (never in CI), from the repository root, after make_random_checkpoints.py:

    python3 -m venv /tmp/psam-venv && . /tmp/psam-venv/bin/activate
    pip install torch torchvision numpy pillow scikit-image==0.26.0 timm safetensors
    pip install --no-deps segment-anything==1.0 mobilesam-lite==0.1.2
    python Tests/Reference/make_random_fixtures.py

(torchvision is needed by ``segment_anything.utils.transforms``; pick the release matching the
installed torch.)  The fixtures were made with the versions recorded in ``manifest.json``.

Reads (never writes) Tests/Fixtures/random/vit_tiny.pth and mobilesam_tiny.pth (SHA-256 checked
against checkpoints.json), rebuilds both models exactly as make_random_checkpoints.py does (its
``heads()`` builder is imported, the encoder constructor values are repeated), loads the state
dicts strictly (MobileSAM: the fp16 tensors are cast to fp32, so the fp32 weights equal the fp16
values exactly), eval() AFTER loading (TinyViT's Attention caches its bias table ``ab`` in eval()),
fp32, CPU.

Writes Tests/Fixtures/random/parity/:
  one real image (scikit-image chelsea.png, 300x451 RGB) run through the OFFICIAL
  segment_anything.SamPredictor of each model (ResizeLongestSide(img_size), ImageNet pixel
  mean/std, zero padding, prompt transforms, postprocess_masks) and
  * per-layer image-encoder activations captured with forward hooks during set_image
    (vit_*.npy in full; mobilesam_* as top-left and bottom-right spatial crops per map - 24x24, 16x16 for
    the 320-channel maps to keep the set near 5 MB - and the neck output whole),
  * four prompt cases per model (box / point / box_points / mask_refine): low-res logits, final
    masks (packbits), predicted IoUs, mask areas, stability scores,
  * decoder internals of the `box` case (transformer tokens in/out, transformer src, upscaled
    mask embedding, IoU head output for all 4 mask tokens),
  * manifest.json describing every file (shape, dtype, layout, crop, sha256) and all scalars.

The run is deterministic (no randomness; CPU, one thread, deterministic algorithms); float outputs
may differ in the last bits on another CPU/torch build. JSON floats are written with full precision.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
import sys
from functools import partial
from pathlib import Path

import numpy as np
import PIL
import skimage
import torch
import torchvision
from PIL import Image
from torch import nn

from mobilesam_lite.mobile_sam.modeling import tiny_vit_sam
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, Sam
from segment_anything.utils.amg import calculate_stability_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_random_checkpoints import heads  # noqa: E402  (the checkpoint script's own builder)

REPO = HERE.parents[1]
CKPT_DIR = REPO / "Tests" / "Fixtures" / "random"
OUT_DIR = CKPT_DIR / "parity"
SKIMAGE_DATA = Path(skimage.__file__).resolve().parent / "data"
IMAGE_FILE = "chelsea.png"
STABILITY_OFFSET = 1.0
CROP = 24          # encoder intermediate maps of MobileSAM: top-left and bottom-right CROP x CROP
CROP_WIDE = 16     # ... except the two 320-channel maps (24x24x320 fp32 = 737 KB per crop; 16x16 keeps the total ~5 MB)
WIDE_CHANNELS = 320
STABILITY_OFFSET_SMALL = 0.1  # extra: random-weight logits stay within about +-1, so offset 1.0 gives ~0
UPSCALE_CROP = 48  # MobileSAM output_upscaling map [1,4,256,256]: top-left and bottom-right crops

# Same constructor values as make_random_checkpoints.py
VIT_CFG = dict(img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, out_chans=32,
               qkv_bias=True, use_rel_pos=True, window_size=6, global_attn_indexes=(1, 3))
TV_CFG = dict(img_size=1024, in_chans=3, num_classes=10, embed_dims=[16, 32, 48, 320], depths=[1, 1, 2, 1],
              num_heads=[1, 2, 3, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
              drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3)

# Prompts in ORIGINAL image pixels, (x, y), as SamPredictor.predict takes them.
BOX = [150, 60, 330, 270]
POS = [240, 150]
NEG = [170, 80]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


def f32list(a) -> list:
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def stats(a: np.ndarray) -> dict:
    a64 = np.asarray(a, dtype=np.float64)
    return {"mean": float(a64.mean()), "std": float(a64.std()), "min": float(a64.min()), "max": float(a64.max()),
            "abs_mean": float(np.abs(a64).mean()), "positive_fraction": float((a64 > 0).mean())}


# ---------------------------------------------------------------------------------------------- models

def check_pixel_stats(sam: Sam) -> None:
    assert torch.equal(sam.pixel_mean.view(-1), torch.tensor([123.675, 116.28, 103.53], dtype=torch.float32))
    assert torch.equal(sam.pixel_std.view(-1), torch.tensor([58.395, 57.12, 57.375], dtype=torch.float32))


def build_vit(expected_sha: str) -> Sam:
    path = CKPT_DIR / "vit_tiny.pth"
    digest = sha256_file(path)
    assert digest == expected_sha, f"vit_tiny.pth SHA-256 {digest} != checkpoints.json {expected_sha}"
    enc = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **VIT_CFG)
    prompt, decoder = heads(32, 256, 16)
    sam = Sam(image_encoder=enc, prompt_encoder=prompt, mask_decoder=decoder)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in sd.values() if v.dtype.is_floating_point)
    sam.load_state_dict(sd, strict=True)
    sam = sam.float().eval()
    for k, v in sam.state_dict().items():
        assert torch.equal(v, sd[k]), k
    check_pixel_stats(sam)
    return sam


def build_mobilesam(expected_sha: str) -> Sam:
    path = CKPT_DIR / "mobilesam_tiny.pth"
    digest = sha256_file(path)
    assert digest == expected_sha, f"mobilesam_tiny.pth SHA-256 {digest} != checkpoints.json {expected_sha}"
    tv = tiny_vit_sam.TinyViT(**TV_CFG)
    tv.neck = nn.Sequential(nn.Conv2d(320, 32, 1, bias=False), tiny_vit_sam.LayerNorm2d(32),
                            nn.Conv2d(32, 32, 3, padding=1, bias=False), tiny_vit_sam.LayerNorm2d(32))
    prompt, decoder = heads(32, 1024, 64)
    sam = Sam(image_encoder=tv, prompt_encoder=prompt, mask_decoder=decoder)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.dtype.is_floating_point)
    # fp32 model, fp16 tensors: load_state_dict copies with an (exact) fp16 -> fp32 cast. Not sam.half()/.float():
    # that would also round the non-persistent pixel_mean/pixel_std buffers to fp16.
    sam.load_state_dict(sd, strict=True)
    sam = sam.float()
    sam.eval()  # AFTER loading: TinyViT Attention.train(False) caches ab from the loaded biases
    for k, v in sam.state_dict().items():
        ref = sd[k].float() if sd[k].dtype.is_floating_point else sd[k]
        assert v.dtype == ref.dtype and torch.equal(v, ref), k
    n_attn = 0
    for m in sam.modules():
        if isinstance(m, tiny_vit_sam.Attention):
            assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]), "stale TinyViT attention bias cache"
            n_attn += 1
    assert n_attn == sum(TV_CFG["depths"][1:])
    assert all(p.dtype == torch.float32 for p in sam.parameters())
    check_pixel_stats(sam)
    return sam


# ---------------------------------------------------------------------------------------------- output

class Writer:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: dict[str, dict] = {}

    def npy(self, name: str, array: np.ndarray, description: str, **extra) -> str:
        array = np.ascontiguousarray(array)
        assert array.dtype in (np.float32, np.uint8), (name, array.dtype)
        if array.dtype == np.float32:
            assert np.isfinite(array).all(), name
        path = self.out_dir / name
        np.save(path, array, allow_pickle=False)
        self.files[name] = {"shape": list(array.shape), "dtype": str(array.dtype), "bytes": path.stat().st_size,
                            "sha256": sha256_file(path), "description": description, **extra}
        return name


def crops_nchw(t: np.ndarray, n: int):
    h, w = t.shape[2:]
    return (t[:, :, :n, :n], [0, n, 0, n]), (t[:, :, h - n:, w - n:], [h - n, h, w - n, w])


def crops_nhwc(t: np.ndarray, n: int):
    h, w = t.shape[1:3]
    return (t[:, :n, :n, :], [0, n, 0, n]), (t[:, h - n:, w - n:, :], [h - n, h, w - n, w])


class Capture:
    """Forward (or forward-pre) hooks storing detached fp32 copies of outputs under a key."""

    def __init__(self):
        self.data: dict[str, object] = {}
        self.handles = []

    def out(self, module: nn.Module, key: str):
        def hook(mod, inp, out):
            assert key not in self.data, f"{key} captured twice"
            self.data[key] = tuple(o.detach().clone() for o in out) if isinstance(out, tuple) else out.detach().clone()
        self.handles.append(module.register_forward_hook(hook))

    def pre(self, module: nn.Module, key: str, index: int = 0):
        def hook(mod, inp):
            assert key not in self.data, f"{key} captured twice"
            self.data[key] = inp[index].detach().clone()
        self.handles.append(module.register_forward_pre_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


# ---------------------------------------------------------------------------------------------- per model

def run_model(tag: str, sam: Sam, image: np.ndarray, writer: Writer, notes: list) -> dict:
    predictor = SamPredictor(sam)
    img_size = sam.image_encoder.img_size
    grid = sam.prompt_encoder.image_embedding_size[0]
    low = 4 * grid
    orig_h, orig_w = image.shape[:2]
    new_h, new_w = predictor.transform.get_preprocess_shape(orig_h, orig_w, img_size)
    resized = predictor.transform.apply_image(image)
    assert resized.shape == (new_h, new_w, 3) and resized.dtype == np.uint8
    pil_resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    resize_is_pil_bilinear = bool(np.array_equal(resized, pil_resized))
    assert resize_is_pil_bilinear, "apply_image != PIL Image.resize(BILINEAR)"

    # ---------------- encoder hooks (active during set_image only)
    cap = Capture()
    cap.pre(sam.image_encoder, "encoder_input")
    enc = sam.image_encoder
    layers = []  # (key, module name, kind) ; kind: nchw | nhwc | tokens(H,W)
    if tag == "vit":
        cap.pre(enc.blocks[0], "blocks0_in")
        layers.append(("blocks0_in", "image_encoder.blocks[0] input (forward_pre) = patch_embed(x) + pos_embed", "nhwc"))
        for i in (0, 1, 3):
            cap.out(enc.blocks[i], f"blocks{i}")
            attn = "global" if i in VIT_CFG["global_attn_indexes"] else \
                f"windowed {VIT_CFG['window_size']}x{VIT_CFG['window_size']}, 16x16 zero-padded to 18x18"
            layers.append((f"blocks{i}", f"image_encoder.blocks[{i}] output ({attn} attention, rel-pos)", "nhwc"))
        cap.out(enc.neck, "neck")
        layers.append(("neck", "image_encoder.neck output = image embedding", "nchw"))
    else:
        cap.out(enc.patch_embed, "patch_embed")
        layers.append(("patch_embed", "image_encoder.patch_embed output (Conv2d_BN s2, GELU, Conv2d_BN s2)", "nchw"))
        cap.out(enc.layers[0].blocks[0], "layers0_blocks0")
        layers.append(("layers0_blocks0", "image_encoder.layers[0].blocks[0] output (MBConv)", "nchw"))
        cap.out(enc.layers[0].downsample, "layers0_downsample")
        layers.append(("layers0_downsample", "image_encoder.layers[0].downsample output (PatchMerging, stride 2, "
                       "16->32 channels)", ("tokens", 128, 128)))
        cap.out(enc.layers[1].blocks[0], "layers1_blocks0")
        layers.append(("layers1_blocks0", "image_encoder.layers[1].blocks[0] output (TinyViTBlock, 128x128, window 7: "
                       "zero-padded to 133x133, padded tokens NOT masked in attention)", ("tokens", 128, 128)))
        cap.out(enc.layers[2].blocks[1], "layers2_blocks1")
        layers.append(("layers2_blocks1", "image_encoder.layers[2].blocks[1] output (TinyViTBlock, 64x64, window 14: "
                       "zero-padded to 70x70)", ("tokens", 64, 64)))
        cap.out(enc.layers[2].downsample, "layers2_downsample")
        layers.append(("layers2_downsample", "image_encoder.layers[2].downsample output (PatchMerging, STRIDE 1 "
                       "because out_dim is 320, 48->320 channels)", ("tokens", 64, 64)))
        cap.out(enc.layers[3].blocks[0], "layers3_blocks0")
        layers.append(("layers3_blocks0", "image_encoder.layers[3].blocks[0] output (TinyViTBlock, 64x64, window 7: "
                       "zero-padded to 70x70) = the input of the neck (before view/permute)", ("tokens", 64, 64)))
        cap.out(enc.neck, "neck")
        layers.append(("neck", "image_encoder.neck output = image embedding", "nchw"))

    predictor.set_image(image, image_format="RGB")
    cap.remove()
    assert predictor.input_size == (new_h, new_w) and predictor.original_size == (orig_h, orig_w)

    x = cap.data.pop("encoder_input")
    assert x.shape == (1, 3, img_size, img_size)
    mean = np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]
    std = np.array([58.395, 57.12, 57.375], np.float32)[:, None, None]
    explicit = np.zeros((3, img_size, img_size), np.float32)
    explicit[:, :new_h, :new_w] = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    preprocess_maxabs = float(np.abs(x[0].numpy() - explicit).max())
    preprocess_exact = bool(np.array_equal(x[0].numpy(), explicit))
    assert preprocess_maxabs <= 1e-6, preprocess_maxabs

    emb = predictor.get_image_embedding()
    assert emb.shape == (1, 32, grid, grid) and emb.dtype == torch.float32
    assert torch.equal(emb, cap.data["neck"])

    encoder_entries = []
    for key, what, kind in layers:
        t = cap.data[key].numpy()
        assert t.dtype == np.float32
        entry = {"key": key, "module": what, "module_output_shape": list(t.shape)}
        if isinstance(kind, tuple):
            _, h, w = kind
            b, l, c = t.shape
            assert (b, l) == (1, h * w), (key, t.shape)
            t = t.reshape(1, h, w, c)
            layout = "NHWC"
            entry["module_output_layout"] = "tokens [1, L=H*W, C], row-major over (H, W)"
            entry["saved_as"] = f"reshaped [1,L,C] -> [1,{h},{w},{c}] (NHWC, token index = y*{w} + x)"
        else:
            layout = "NCHW" if kind == "nchw" else "NHWC"
            entry["module_output_layout"] = layout
            entry["saved_as"] = f"module output layout ({layout}), unchanged"
        entry["layout"] = layout
        entry["full_shape"] = list(t.shape)
        entry["full_tensor_stats"] = stats(t)
        if tag == "vit" or key == "neck":
            name = writer.npy(f"{tag}_{key}.npy", t, f"{what}; full tensor, {layout}", layout=layout)
            entry["files"] = [{"file": name, "crop": None}]
        else:
            n = CROP_WIDE if (t.shape[1] if layout == "NCHW" else t.shape[3]) >= WIDE_CHANNELS else CROP
            cr = crops_nchw(t, n) if layout == "NCHW" else crops_nhwc(t, n)
            entry["files"] = []
            for (arr, (y0, y1, x0, x1)), where in zip(cr, ("tl", "br")):
                crop_desc = {"rows": [y0, y1], "cols": [x0, x1], "note": "half-open [start, end) in the map's own "
                             "spatial grid; all channels"}
                name = writer.npy(f"{tag}_{key}_{where}{n}.npy", arr,
                                  f"{what}; {layout} crop rows {y0}:{y1}, cols {x0}:{x1} of {list(t.shape)}",
                                  layout=layout, crop=crop_desc, full_shape=list(t.shape))
                entry["files"].append({"file": name, "crop": crop_desc})
        encoder_entries.append(entry)

    # ---------------- prompt cases
    box = np.array(BOX, dtype=np.float64)
    pos = np.array(POS, dtype=np.float64)
    neg = np.array(NEG, dtype=np.float64)
    cases = [
        ("box", dict(box=box, multimask_output=False), "one box"),
        ("point", dict(point_coords=pos[None], point_labels=np.array([1]), multimask_output=True),
         "one positive point, multimask output (3 masks, mask tokens 1..3)"),
        ("box_points", dict(box=box, point_coords=np.stack([pos, neg]), point_labels=np.array([1, 0]),
                            multimask_output=False), "the box plus a positive and a negative point"),
        ("mask_refine", None, f"the box plus mask_input = {tag}_box_lowres.npy [1,{low},{low}]"),
    ]
    total = orig_h * orig_w
    case_records = []
    box_lowres = None
    decoder_record = None
    for case, kwargs, note in cases:
        if case == "mask_refine":
            kwargs = dict(box=box, mask_input=box_lowres, multimask_output=False)
        dcap = Capture()
        if case == "box":
            dec = sam.mask_decoder
            dcap.pre(dec.transformer, "src_in", 0)
            dcap.pre(dec.transformer, "tokens_in", 2)
            dcap.out(dec.transformer, "transformer")
            dcap.out(dec.output_upscaling, "upscaled")
            dcap.out(dec.iou_prediction_head, "iou_all")
        logits, iou, lowres = predictor.predict(**kwargs, return_logits=True)
        dcap.remove()
        masks_bin, iou_b, lowres_b = predictor.predict(**kwargs, return_logits=False)
        masks = logits > sam.mask_threshold
        assert np.array_equal(masks, masks_bin) and np.array_equal(iou, iou_b) and np.array_equal(lowres, lowres_b)
        n_out = 3 if kwargs["multimask_output"] else 1
        assert logits.shape == (n_out, orig_h, orig_w) and logits.dtype == np.float32
        assert lowres.shape == (n_out, low, low) and lowres.dtype == np.float32
        assert iou.shape == (n_out,) and iou.dtype == np.float32
        if case == "box":
            box_lowres = lowres.copy()

        stab = calculate_stability_score(torch.from_numpy(logits), sam.mask_threshold, STABILITY_OFFSET)
        stab_small = calculate_stability_score(torch.from_numpy(logits), sam.mask_threshold, STABILITY_OFFSET_SMALL)
        areas = [int(a) for a in masks.reshape(n_out, -1).sum(axis=1)]
        lowres_stats = [stats(m) for m in lowres]
        for i, s in enumerate(lowres_stats):
            assert 0.0 < s["positive_fraction"] < 1.0, f"{tag}/{case}[{i}]: low-res logits all of one sign"
        for i, a in enumerate(areas):
            if a == 0 or a == total:
                notes.append(f"{tag}/{case} mask {i}: final mask is {'EMPTY' if a == 0 else 'FULL'}")
            elif a < 0.001 * total or a > 0.999 * total:
                notes.append(f"{tag}/{case} mask {i}: final mask is nearly {'empty' if a < total / 2 else 'full'} "
                             f"({a} of {total} pixels)")
        if all(v == 0.0 for v in stab.tolist()):
            notes.append(f"{tag}/{case}: all stability scores (offset 1.0) are 0 - no upscaled logit exceeds 1.0")

        lowres_name = writer.npy(f"{tag}_{case}_lowres.npy", lowres,
                                 f"low-res mask logits [C,{low},{low}] float32 (third output of SamPredictor.predict)")
        masks_name = writer.npy(f"{tag}_{case}_masks.npy", np.packbits(masks.reshape(-1)),
                                "final boolean masks [C,H,W] at original size (Sam.postprocess_masks logits > 0.0), "
                                "np.packbits(masks.reshape(-1)), bitorder 'big', C-order flattening",
                                unpacked_shape=[n_out, orig_h, orig_w], unpacked_dtype="bool", packbits_bitorder="big")
        t = predictor.transform
        model_box = None if kwargs.get("box") is None else t.apply_boxes(kwargs["box"], (orig_h, orig_w)).reshape(-1)
        model_pts = None if kwargs.get("point_coords") is None else t.apply_coords(kwargs["point_coords"], (orig_h, orig_w))
        record = {
            "name": case,
            "description": note,
            "multimask_output": bool(kwargs["multimask_output"]),
            "prompts_original_xy": {
                "box_xyxy": None if kwargs.get("box") is None else [float(v) for v in kwargs["box"]],
                "point_coords": None if kwargs.get("point_coords") is None
                else [[float(v) for v in p] for p in kwargs["point_coords"]],
                "point_labels": None if kwargs.get("point_labels") is None else [int(v) for v in kwargs["point_labels"]],
                "mask_input": f"{tag}_box_lowres.npy" if case == "mask_refine" else None,
            },
            "prompts_model_frame_xy": {
                "note": "after ResizeLongestSide.apply_coords/apply_boxes (x*new_w/orig_w, y*new_h/orig_h, float64), "
                        "before predict's cast to float32 and the prompt encoder's +0.5 pixel-centre shift",
                "box_xyxy": None if model_box is None else [float(v) for v in model_box],
                "point_coords": None if model_pts is None else [[float(v) for v in p] for p in model_pts],
            },
            "lowres_file": lowres_name,
            "masks_file": masks_name,
            "num_masks": n_out,
            "iou_predictions": [float(v) for v in iou],
            "mask_areas": areas,
            "mask_area_fractions": [a / total for a in areas],
            "stability_scores": [float(v) if np.isfinite(float(v)) else None for v in stab],
            "stability_scores_offset_0.1": [float(v) if np.isfinite(float(v)) else None for v in stab_small],
            "logits_original_size_stats": [stats(m) for m in logits],
            "near_threshold_pixels": {
                "note": "per mask, pixels whose upscaled logit is within +-eps of the 0.0 threshold (a port whose "
                        "logits differ by about eps may flip these)",
                "abs_lt_1e-5": [int(v) for v in (np.abs(logits) < 1e-5).reshape(n_out, -1).sum(axis=1)],
                "abs_lt_1e-4": [int(v) for v in (np.abs(logits) < 1e-4).reshape(n_out, -1).sum(axis=1)],
                "abs_lt_1e-3": [int(v) for v in (np.abs(logits) < 1e-3).reshape(n_out, -1).sum(axis=1)],
            },
            "lowres_stats": lowres_stats,
        }
        case_records.append(record)
        print(f"{tag:9s} {case:12s} iou={['%.6f' % v for v in iou]} area={areas} "
              f"({['%.2f%%' % (100 * a / total) for a in areas]}) stab={['%.4f' % float(v) for v in stab]} "
              f"stab0.1={['%.4f' % float(v) for v in stab_small]} "
              f"lowres+={['%.3f' % s['positive_fraction'] for s in lowres_stats]}")

        if case == "box":
            d = dcap.data
            hs, src = d["transformer"]
            tokens_in = d["tokens_in"]
            up = d["upscaled"]
            iou_all = d["iou_all"]
            n_tok = 1 + 4 + 2  # iou token, 4 mask tokens, 2 box corners
            assert tokens_in.shape == (1, n_tok, 32) and hs.shape == (1, n_tok, 32)
            assert src.shape == (1, grid * grid, 32) and d["src_in"].shape == (1, 32, grid, grid)
            assert up.shape == (1, 4, low, low)
            assert iou_all.shape == (1, 4) and torch.equal(iou_all[0, :1], torch.from_numpy(iou))
            files = {}
            files["tokens_in"] = writer.npy(
                f"{tag}_box_dec_tokens_in.npy", tokens_in.numpy(),
                "mask_decoder.transformer input point_embedding (forward_pre, arg 2) [1,T,32]: rows = iou token, "
                "4 mask tokens, then the sparse prompt embeddings (2 box corners)", layout="[1,T,C]")
            files["hs"] = writer.npy(
                f"{tag}_box_dec_hs.npy", hs.numpy(),
                "mask_decoder.transformer output[0] (queries, after final token-to-image attention + norm_final_attn) "
                "[1,T,32]; row 0 = iou token, rows 1..4 = mask tokens", layout="[1,T,C]")
            files["src"] = writer.npy(
                f"{tag}_box_dec_src.npy", src.numpy(),
                f"mask_decoder.transformer output[1] (keys = image tokens) [1,HW,32], token index = y*{grid} + x",
                layout="[1,HW,C]")
            up_np = up.numpy()
            if tag == "vit":
                files["upscaled"] = [{"file": writer.npy(
                    f"{tag}_box_dec_upscaled.npy", up_np,
                    f"mask_decoder.output_upscaling output [1,4,{low},{low}] NCHW, full", layout="NCHW"), "crop": None}]
            else:
                files["upscaled"] = []
                for (arr, (y0, y1, x0, x1)), where in zip(crops_nchw(up_np, UPSCALE_CROP), ("tl", "br")):
                    crop_desc = {"rows": [y0, y1], "cols": [x0, x1], "note": "half-open [start, end); all channels"}
                    name = writer.npy(f"{tag}_box_dec_upscaled_{where}{UPSCALE_CROP}.npy", arr,
                                      f"mask_decoder.output_upscaling output, NCHW crop rows {y0}:{y1}, cols {x0}:{x1} "
                                      f"of [1,4,{low},{low}]", layout="NCHW", crop=crop_desc,
                                      full_shape=list(up_np.shape))
                    files["upscaled"].append({"file": name, "crop": crop_desc})
            decoder_record = {
                "case": "box",
                "hooks": {
                    "tokens_in": "forward_pre on mask_decoder.transformer, args[2] (point_embedding)",
                    "hs": "forward on mask_decoder.transformer, output[0]",
                    "src": "forward on mask_decoder.transformer, output[1]",
                    "upscaled": "forward on mask_decoder.output_upscaling (ConvT, LayerNorm2d, GELU, ConvT, GELU)",
                    "iou_all": "forward on mask_decoder.iou_prediction_head, before the multimask slice",
                },
                "num_tokens": n_tok,
                "files": files,
                "iou_predictions_all_mask_tokens": f32list(iou_all[0].numpy()),
                "iou_note": "index 0 = single-mask token (returned when multimask_output=False), 1..3 = multimask",
                "hs_stats": stats(hs.numpy()),
                "src_stats": stats(src.numpy()),
                "upscaled_full_stats": stats(up_np),
            }

    return {
        "tag": tag,
        "image_encoder_img_size": img_size,
        "embedding_grid": grid,
        "lowres_size": low,
        "original_hw": [orig_h, orig_w],
        "resized_hw": [new_h, new_w],
        "padding_hw": [img_size - new_h, img_size - new_w],
        "resized_rgb_uint8_sha256": sha256_bytes(np.ascontiguousarray(resized).tobytes()),
        "resize_equals_pil_bilinear": resize_is_pil_bilinear,
        "preprocessed_input": {
            "shape": [1, 3, img_size, img_size],
            "formula": "(resized - pixel_mean) / pixel_std per channel (ImageNet, RGB), then zero-padded bottom/right",
            "explicit_float32_bit_exact": preprocess_exact,
            "explicit_float32_max_abs_diff": preprocess_maxabs,
            "stats": stats(x.numpy()),
        },
        "encoder_layers": encoder_entries,
        "image_embedding_shape": [1, 32, grid, grid],
        "cases": case_records,
        "decoder_box_case": decoder_record,
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*"):
        if old.suffix in (".npy", ".json"):
            old.unlink()

    ck = json.loads((CKPT_DIR / "checkpoints.json").read_text())
    vit_sha = ck["vit_tiny.pth"]["sha256"]
    ms_sha = ck["mobilesam_tiny.pth"]["sha256"]

    src = SKIMAGE_DATA / IMAGE_FILE
    with Image.open(src) as im:
        pil_mode = im.mode
        image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    assert pil_mode == "RGB" and image.shape == (300, 451, 3) and image.dtype == np.uint8

    writer = Writer(OUT_DIR)
    notes: list[str] = []
    models = {}
    models["vit"] = run_model("vit", build_vit(vit_sha), image, writer, notes)
    models["mobilesam"] = run_model("mobilesam", build_mobilesam(ms_sha), image, writer, notes)

    manifest = {
        "description": "Per-layer parity fixtures for PocketSAM on the random-weight checkpoints made by "
                       "make_random_checkpoints.py: one real image through the official segment_anything "
                       "SamPredictor. Generated by Tests/Reference/make_random_fixtures.py.",
        "generator": "Tests/Reference/make_random_fixtures.py",
        "checkpoints": {
            "vit": {"file": "Tests/Fixtures/random/vit_tiny.pth", "sha256": vit_sha,
                    "build": "ImageEncoderViT(norm_layer=LayerNorm(eps=1e-6), **" + json.dumps(VIT_CFG) +
                             ") + make_random_checkpoints.heads(32, 256, 16) in segment_anything Sam; "
                             "load_state_dict(strict=True) fp32; eval()"},
            "mobilesam": {"file": "Tests/Fixtures/random/mobilesam_tiny.pth", "sha256": ms_sha,
                          "build": "mobilesam_lite tiny_vit_sam.TinyViT(**" + json.dumps(TV_CFG) + ") with neck = "
                                   "Conv2d(320,32,1,bias=False), LayerNorm2d(32), Conv2d(32,32,3,padding=1,bias=False), "
                                   "LayerNorm2d(32) + make_random_checkpoints.heads(32, 1024, 64) in Sam; fp16 state "
                                   "dict loaded strictly, then cast to fp32 (exact), then eval() (recomputes TinyViT "
                                   "attention-bias caches `ab` from the loaded attention_biases)"},
        },
        "image": {
            "source_file": IMAGE_FILE,
            "source": "scikit-image data directory",
            "source_sha256": sha256_file(src),
            "source_pil_mode": pil_mode,
            "decoded_rgb_sha256": sha256_bytes(image.tobytes()),
            "original_hw": list(image.shape[:2]),
        },
        "pipeline": {
            "predictor": "segment_anything.SamPredictor(Sam(..., pixel_mean=[123.675,116.28,103.53], "
                         "pixel_std=[58.395,57.12,57.375]))",
            "resize": "ResizeLongestSide(sam.image_encoder.img_size).apply_image = torchvision resize of a PIL image = "
                      "PIL Image.resize((new_w,new_h), BILINEAR) on uint8 RGB (asserted equal); new = "
                      "int(dim * img_size / max(h, w) + 0.5)",
            "normalisation": "(x - pixel_mean) / pixel_std per channel, float32, then F.pad with zeros to img_size "
                             "x img_size (bottom/right)",
            "prompt_transform": "ResizeLongestSide.apply_coords/apply_boxes: x*new_w/orig_w, y*new_h/orig_h",
            "postprocess": "Sam.postprocess_masks: bilinear (align_corners=False) lowres -> img_size, crop to "
                           "resized_hw, bilinear (align_corners=False) to original_hw; masks = logits > 0.0",
        },
        "layouts": {
            "NCHW": "[1, C, H, W] (convolutions, neck, output_upscaling)",
            "NHWC": "[1, H, W, C]: ViT blocks' own output layout; TinyViT token outputs [1, L=H*W, C] reshaped to "
                    "[1, H, W, C] (no data reordering, token index = y*W + x)",
            "[1,T,C]": "decoder tokens",
            "[1,HW,C]": "decoder image tokens, index = y*grid + x",
        },
        "crops": {
            "mobilesam_encoder": f"every MobileSAM encoder map except the neck output is stored as two crops: top-left "
                                 f"rows [0,n) cols [0,n) ('tl<n>') and bottom-right rows [H-n,H) cols [W-n,W) "
                                 f"('br<n>'), all channels, in the map's own grid; n = {CROP}, except n = {CROP_WIDE} "
                                 f"for the {WIDE_CHANNELS}-channel maps (layers2_downsample, layers3_blocks0) to keep "
                                 "the fixture set near 5 MB. Each file's exact crop is in its 'crop' entry. The image fills "
                                 "rows [0,681) of the 1024x1024 input (bottom 343 rows zero padding after "
                                 "normalisation), so at 256/128 resolution the bottom-right crop lies in the padded "
                                 "region (it still exercises conv border padding and the unmasked window padding of "
                                 "TinyViT attention); at 64x64 the image ends at row 42.56, inside the crop",
            "mobilesam_upscaled": f"the box case's output_upscaling map [1,4,256,256] as top-left and bottom-right "
                                  f"{UPSCALE_CROP}x{UPSCALE_CROP} crops",
        },
        "stability_score": {
            "function": "segment_anything.utils.amg.calculate_stability_score(masks, mask_threshold=0.0, "
                        "threshold_offset=1.0)",
            "computed_on": "the logits at ORIGINAL image size (first output of predict(..., return_logits=True)), "
                           "not the low-res logits",
            "definition": "count(logits > 1.0) / count(logits > -1.0) per mask",
            "note": "random-weight logits mostly stay within (-1, 1), so these are ~0 (count(logits > 1) is ~0); "
                    "'stability_scores_offset_0.1' (same function, threshold_offset=0.1) is recorded as well so "
                    "the computation can be checked non-trivially",
        },
        "mask_packing": "masks files hold np.packbits(bool_masks.reshape(-1)) (bitorder 'big', MSB first, C order "
                        "over [C, orig_h, orig_w]); unpack with np.unpackbits(a)[:C*H*W].reshape(C, H, W)",
        "coordinates": "prompts are (x, y) in original image pixels as SamPredictor.predict takes them; boxes xyxy",
        "prompts": {"box": BOX, "positive_point": POS, "negative_point": NEG},
        "models": models,
        "degenerate_notes": notes,
        "files": writer.files,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit-image": skimage.__version__,
            "segment-anything": version("segment-anything"),
            "mobilesam-lite": version("mobilesam-lite"),
            "timm": version("timm"),
        },
        "determinism": "CPU, torch.set_num_threads(1), torch.use_deterministic_algorithms(True), no randomness",
    }
    manifest["files"]["manifest.json"] = {"description": "this file"}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")

    for n in notes:
        print("NOTE:", n)
    files = sorted(p for p in OUT_DIR.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB to {OUT_DIR}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fixtures for a FULL-SIZE random-weight Light HQ-SAM, made by the OFFICIAL HQ-SAM code, without committing weights.

The model is segment_anything_hq 0.3's ``build_sam_vit_t`` (HQ-SAM on MobileSAM's TinyViT: embed_dims [64,128,160,320],
depths [2,2,6,2], heads [2,4,5,10], windows [7,7,14,7], 1024 px, 256-channel neck and heads, MaskDecoderHQ with
vit_dim 160). Its weights are NOT a checkpoint in the repository: they come from PocketSAM's own seeded generator,

    .build/release/pocketsam-quantize --random mobilesam_hq --precision fp32 --seed 7 -o .cache/mobilesam_hq32.psam

(41,046,592 bytes; the same command always writes the same bytes, and HQSAMParityTests.testFullSizeHQTinyViT rebuilds
the same file in memory from the seed and checks its SHA-256 against manifest.json's ``psam.sha256``).

Run by hand (never in CI), from the repository root, in the venv of make_hq_fixtures.py (see its docstring), after
``swift build -c release --product pocketsam-quantize`` and the command above:

    . /tmp/psam-venv/bin/activate
    python Tests/Reference/make_hq_full_fixtures.py [--psam .cache/mobilesam_hq32.psam]

Reads .cache/mobilesam_hq32.psam (SHA-256 recorded) and .cache/images/{chelsea,coffee}.png (scripts/fetch-assets.sh;
the scikit-image files, SHA-256 recorded). Writes Tests/Fixtures/random/hq/full/ (its *.npy and manifest.json are
regenerated; nothing else is touched).

How the official model gets our weights
---------------------------------------
* ``read_psam`` below reads the .psam (docs/FORMAT.md): header, directory CRC-32, metadata, tensor table, every
  tensor's CRC-32; only dtype f32 in layout 0 is accepted (anything else fails with a clear message).
* ``build_sam_vit_t()`` (checkpoint=None) builds the model. Every psam tensor goes to the state-dict key of the same
  name, except TinyViT's folded Conv2d_BN ``X`` (stored as ``X.weight``/``X.bias``): ``X.c.weight`` = our ``X.weight``;
  BatchNorm running_mean 0, running_var 1, weight float32(sqrt(1 + bn.eps)), bias = our ``X.bias`` -- the identity
  followed by our bias, to within an ulp of the scale (the measured effective scale is recorded in the manifest).
  ``X.bn.num_batches_tracked`` (an integer buffer) keeps its built value; the non-persistent buffers
  (attention_bias_idxs, ab) are not in the state dict at all.
* Keys the psam cannot supply: only TinyViT's classification head (``image_encoder.norm_head.*``,
  ``image_encoder.head.*``, 320 -> 1000), which TinyViT.forward never calls (the calls are commented out in the
  official code). They are filled with NaN, so if they were used every output would be NaN (and the Writer refuses
  non-finite arrays). Any other unmapped parameter is an error; every psam tensor must be used exactly once; every
  shape must match.
* ``load_state_dict(strict=True)``, then ``eval()`` AGAIN: build_sam_vit_t calls eval() before any weights exist, and
  TinyViT's Attention caches its bias table ``ab`` in eval(); the cache is checked against the loaded biases.

Outputs (per image, chelsea 300x451 and coffee 400x600; segment_anything_hq.SamPredictor, fp32 CPU):
  {image}_early_{tl,br}16.npy   predictor.interm_features[0] (TinyViT layers[1] output, NHWC [1,64,64,160]),
                                top-left / bottom-right 16x16 crops, all channels
  {image}_hqfeat_{tl,br}32.npy  embedding_encoder(embedding) + compress_vit_feat(early) (NCHW [1,32,256,256]),
                                top-left / bottom-right 32x32 crops, all channels
  {image}_{case}_{mode}_lowres.npy / _masks.npy   low-res logits float32 [1,256,256]; final masks np.packbits
  cases: box (multimask False), point (one positive point, multimask True), box_point (box + one negative point),
  mask_input (the box plus the box case's low-res logits of the same mode), each with hq_token_only False ('sam+hq')
  and True ('hq') -- except that point and box_point are stored with hq_token_only False only, to keep the directory
  under 4.5 MB (12 low-res maps of 262 KB instead of 16; see manifest "omitted_cases").

Checks made here (any failure aborts before a file is written):
  * psam: magic, version, flags, bounds, alignment, directory and tensor CRC-32, dtype f32 / layout 0 only, the
    metadata says mobilesam + HQ (vit_dim 160, early layer 1), SHA-256 recorded.
  * every official tensor shape equals ours; strict load; the state dict afterwards equals what was mapped.
  * the early feature is layers[1]'s output (hooked) viewed as [1,64,64,160], bit for bit.
  * the HQ features computed here equal, bit for bit, the sum of embedding_encoder and compress_vit_feat outputs
    hooked inside MaskDecoderHQ.forward, in EVERY predict call.
  * the returned IoU equals the selected SAM token's entry of iou_prediction_head's output (hooked): token 0 without
    multimask, 1 + argmax(iou[1:4]) with it; masks == (return_logits output > 0).
  * determinism: the whole image run (set_image and every case) is done twice with fresh predictors and must give
    bit-identical arrays and IoUs.
  * no final mask covers more than 98 % or less than 2 % of the image (else the prompts must be changed), and the two
    hq_token_only modes give different masks where both are stored.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import struct
import sys
import warnings
import zlib
from pathlib import Path

warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.")
warnings.filterwarnings("ignore", message=r"Overwriting tiny_vit_")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

from segment_anything_hq import SamPredictor  # noqa: E402
from segment_anything_hq.build_sam import build_sam_vit_t  # noqa: E402
from segment_anything_hq.modeling import Sam, tiny_vit_sam  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_hq_fixtures import IMAGES as HQ_IMAGES, MODES, Hooks, predict_checked, prompt_cases, prompt_records  # noqa: E402
from make_random_fixtures import Writer, crops_nchw, sha256_file, stats, version  # noqa: E402

REPO = HERE.parents[1]
OUT_DIR = REPO / "Tests" / "Fixtures" / "random" / "hq" / "full"
IMAGE_DIR = REPO / ".cache" / "images"
DEFAULT_PSAM = REPO / ".cache" / "mobilesam_hq32.psam"
SEED = 7
PSAM_COMMAND = (f".build/release/pocketsam-quantize --random mobilesam_hq --precision fp32 --seed {SEED} "
                "-o .cache/mobilesam_hq32.psam")
TAG = "tinyvit_full"
VIT_DIM = 160
GRID = 64
LOW = 4 * GRID
HQ_CHANNELS = 256 // 8
EARLY_CROP = 16  # early feature [1,64,64,160]: 16x16x160 fp32 = 164 KB per crop
HQ_CROP = 32     # HQ features [1,32,256,256]: 32x32x32 fp32 = 131 KB per crop
SIZE_LIMIT = 4.5 * 2 ** 20  # bytes, the whole directory
# Cases stored with hq_token_only False only (size limit; box and mask_input keep both modes).
SAM_HQ_ONLY_CASES = ("point", "box_point")
# TinyViT's classification head: built by TinyViT.__init__, never called by TinyViT.forward (commented out there),
# absent from the psam. Filled with NaN (see the docstring).
UNUSED_HEAD_KEYS = ("image_encoder.norm_head.weight", "image_encoder.norm_head.bias",
                    "image_encoder.head.weight", "image_encoder.head.bias")
AREA_MIN, AREA_MAX = 0.02, 0.98

# Prompts in original pixels (x, y): make_hq_fixtures.py's box / positive / negative point of each image.
# (Their second positive point is not used here; its part of the note is dropped.)
IMAGES = {stem: dict({k: HQ_IMAGES[stem][k] for k in ("file", "hw", "box", "pos", "neg")},
                     note=HQ_IMAGES[stem]["note"].split(", pos2")[0]) for stem in HQ_IMAGES}


# ---------------------------------------------------------------------------------------------- .psam reader

PSAM_MAGIC = b"PSAM\r\n\x1a\n"
HEADER = struct.Struct("<8sIIIIQQQQQQII")  # 80 bytes, docs/FORMAT.md
U64_MAX = 2 ** 64 - 1


class PSAMError(Exception):
    pass


class _Cursor:
    def __init__(self, buf: bytes, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise PSAMError(f"{self.what}: {field} runs past the end ({self.pos}+{n} > {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, field))

    def u8(self, f): return self.unpack("B", f)[0]
    def u16(self, f): return self.unpack("H", f)[0]
    def u32(self, f): return self.unpack("I", f)[0]
    def u64(self, f): return self.unpack("Q", f)[0]


def read_psam(path: Path) -> tuple[dict, dict[str, np.ndarray], list[dict]]:
    """(metadata, tensors by name as float32 arrays in their logical shape, table entries) of an fp32 .psam file."""
    raw = Path(path).read_bytes()
    size = len(raw)
    if size < HEADER.size:
        raise PSAMError(f"{path}: {size} bytes, smaller than the 80-byte header")
    (magic, ver, flags, meta_count, tensor_count, meta_off, meta_len, table_off, table_len, data_off, data_len,
     dir_crc, reserved) = HEADER.unpack_from(raw, 0)
    if magic != PSAM_MAGIC:
        raise PSAMError(f"{path}: bad magic {magic!r}")
    if ver != 1 or flags != 0 or reserved != 0:
        raise PSAMError(f"{path}: version {ver}, flags {flags}, reserved {reserved} (want 1, 0, 0)")
    for what, off, ln in (("metadata", meta_off, meta_len), ("table", table_off, table_len),
                          ("data", data_off, data_len)):
        if off < HEADER.size or off + ln > size:
            raise PSAMError(f"{path}: {what} section [{off}, {off + ln}) outside [80, {size})")
    if data_off % 64:
        raise PSAMError(f"{path}: data offset {data_off} not 64-byte aligned")
    meta_bytes = raw[meta_off:meta_off + meta_len]
    table_bytes = raw[table_off:table_off + table_len]
    crc = zlib.crc32(table_bytes, zlib.crc32(meta_bytes, zlib.crc32(raw[:72])))
    if crc != dir_crc:
        raise PSAMError(f"{path}: directory CRC-32 {crc:08x} != stored {dir_crc:08x}")

    meta: dict = {}
    c = _Cursor(meta_bytes, "metadata")
    for _ in range(meta_count):
        key = c.take(c.u16("key length"), "key").decode("utf-8")
        t = c.u8(f"type of {key}")
        if t == 1:
            val = c.unpack("q", key)[0]
        elif t == 2:
            val = c.unpack("d", key)[0]
        elif t == 3:
            b = c.u8(key)
            if b > 1:
                raise PSAMError(f"metadata {key}: bool byte {b}")
            val = bool(b)
        elif t == 4:
            val = c.take(c.u32(key), key).decode("utf-8")
        elif t in (5, 6):
            n = c.u32(key)
            val = list(c.unpack(("q" if t == 5 else "d") * n, key))
        else:
            raise PSAMError(f"metadata {key}: unknown value type {t}")
        if key in meta:
            raise PSAMError(f"metadata key {key} repeated")
        meta[key] = val
    if c.pos != len(meta_bytes):
        raise PSAMError(f"metadata: {len(meta_bytes) - c.pos} stray bytes")

    data = raw[data_off:data_off + data_len]
    tensors: dict[str, np.ndarray] = {}
    table: list[dict] = []
    c = _Cursor(table_bytes, "tensor table")
    for _ in range(tensor_count):
        name = c.take(c.u16("name length"), "name").decode("utf-8")
        dtype, layout, rank, axis = c.unpack("BBBB", name)
        shape = list(c.unpack("Q" * rank, name))
        off, length, scale_off = c.unpack("QQQ", name)
        group, tcrc = c.unpack("II", name)
        if dtype != 0 or layout != 0:
            raise PSAMError(f"tensor {name}: dtype code {dtype}, layout {layout}; this reader supports only f32 "
                            "(dtype 0) in layout 0 -- convert with --precision fp32")
        if axis != 0xFF or scale_off != U64_MAX or group != 0:
            raise PSAMError(f"tensor {name}: an f32 tensor with scales (axis {axis}, offset {scale_off})")
        count = math.prod(shape)
        if length != 4 * count or off % 64 or off + length > len(data):
            raise PSAMError(f"tensor {name}: data [{off}, +{length}) for shape {shape} is malformed")
        blob = data[off:off + length]
        if zlib.crc32(blob) != tcrc:
            raise PSAMError(f"tensor {name}: CRC-32 mismatch")
        if name in tensors:
            raise PSAMError(f"tensor {name} repeated")
        tensors[name] = np.frombuffer(blob, dtype="<f4").reshape(shape).astype(np.float32)
        table.append({"name": name, "shape": shape})
    if c.pos != len(table_bytes):
        raise PSAMError(f"tensor table: {len(table_bytes) - c.pos} stray bytes")
    return meta, tensors, table


# ---------------------------------------------------------------------------------------------- official model

def check_metadata(meta: dict) -> None:
    want = {"model.family": "tinyvit", "model.variant": "mobilesam", "psam.precision": "fp32",
            "preprocess.image_size": 1024, "tinyvit.embed_dims": [64, 128, 160, 320], "tinyvit.depths": [2, 2, 6, 2],
            "tinyvit.window_sizes": [0, 7, 14, 7], "tinyvit.out_chans": 256, "decoder.transformer_dim": 256,
            "decoder.hq_vit_dim": VIT_DIM, "decoder.hq_early_layer": 1}
    for k, v in want.items():
        if meta.get(k) != v:
            raise SystemExit(f"psam metadata {k} = {meta.get(k)!r}, want {v!r}: not the mobilesam_hq preset")


def build_official(ours: dict[str, np.ndarray]) -> tuple[Sam, dict]:
    sam = build_sam_vit_t()  # checkpoint=None; calls eval() itself (before weights exist)
    sd = sam.state_dict()
    conv_bn = {name: m for name, m in sam.named_modules() if isinstance(m, tiny_vit_sam.Conv2d_BN)}
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    kept_buffers, nan_filled, bn_scale = [], [], {}

    def take(name: str, shape) -> torch.Tensor:
        if name not in ours:
            raise SystemExit(f"psam has no tensor {name}")
        if name in used:
            raise SystemExit(f"psam tensor {name} mapped twice")
        a = ours[name]
        if list(a.shape) != list(shape):
            raise SystemExit(f"shape mismatch: official {list(shape)} vs psam {name} {list(a.shape)}")
        used.add(name)
        return torch.from_numpy(a.copy())

    for key, ref in sd.items():
        prefix, _, leaf = key.rpartition(".")
        owner, _, sub = prefix.rpartition(".")
        if sub in ("c", "bn") and owner in conv_bn:
            bn = conv_bn[owner].bn
            if sub == "c":
                assert leaf == "weight" and conv_bn[owner].c.bias is None, key
                new[key] = take(owner + ".weight", ref.shape)
            elif leaf == "weight":
                new[key] = torch.full(ref.shape, math.sqrt(1.0 + bn.eps), dtype=torch.float32)
            elif leaf == "bias":
                new[key] = take(owner + ".bias", ref.shape)
            elif leaf == "running_mean":
                new[key] = torch.zeros_like(ref)
            elif leaf == "running_var":
                new[key] = torch.ones_like(ref)
            elif leaf == "num_batches_tracked":
                assert not ref.dtype.is_floating_point
                new[key] = ref.clone()
                kept_buffers.append(key)
            else:
                raise SystemExit(f"unexpected Conv2d_BN entry {key}")
        elif key in ours:
            new[key] = take(key, ref.shape)
        elif key in UNUSED_HEAD_KEYS:
            new[key] = torch.full_like(ref, float("nan"))
            nan_filled.append(key)
        else:
            params = dict(sam.named_parameters())
            if key in params or ref.dtype.is_floating_point:
                raise SystemExit(f"official tensor {key} {list(ref.shape)} has no psam counterpart")
            new[key] = ref.clone()
            kept_buffers.append(key)
    leftover = sorted(set(ours) - used)
    if leftover:
        raise SystemExit(f"psam tensors not used by the official model: {leftover}")
    assert sorted(nan_filled) == sorted(UNUSED_HEAD_KEYS), nan_filled

    sam.load_state_dict(new, strict=True)
    sam.eval()  # AFTER loading: Attention.train(False) re-caches ab from the loaded attention_biases
    for k, v in sam.state_dict().items():
        assert v.dtype == new[k].dtype and torch.equal(v, new[k]) or (k in nan_filled and v.isnan().all()), k
    n_attn = 0
    for m in sam.modules():
        if isinstance(m, tiny_vit_sam.Attention):
            assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]), "stale attention bias cache"
            n_attn += 1
    assert n_attn == 2 + 6 + 2
    assert all(p.dtype == torch.float32 for p in sam.parameters())
    assert torch.equal(sam.pixel_mean.view(-1), torch.tensor([123.675, 116.28, 103.53]))
    assert torch.equal(sam.pixel_std.view(-1), torch.tensor([58.395, 57.12, 57.375]))
    assert sam.mask_decoder.compress_vit_feat[0].in_channels == VIT_DIM

    # Effective BatchNorm scale per Conv2d_BN: bn(1) - bias for a zero bias, as the eval-mode kernel computes it.
    for name, m in conv_bn.items():
        one = torch.ones(1, m.bn.num_features, 1, 1)
        s = torch.nn.functional.batch_norm(one, m.bn.running_mean, m.bn.running_var, m.bn.weight,
                                           torch.zeros_like(m.bn.bias), False, 0.0, m.bn.eps)
        bn_scale[name] = sorted({float(v) for v in s.reshape(-1)})
    scales = sorted({v for vs in bn_scale.values() for v in vs})
    assert all(abs(v - 1.0) <= 2 * np.finfo(np.float32).eps for v in scales), scales
    info = {
        "conv2d_bn_modules": len(conv_bn),
        "bn_weight": float(np.float32(math.sqrt(1.0 + 1e-5))),
        "bn_effective_scales": scales,
        "bn_effective_scale_note": "x * weight / sqrt(running_var + eps) evaluated by torch's eval BatchNorm on ones "
                                   "(zero bias): the identity to within this deviation from 1.0",
        "kept_built_buffers": kept_buffers,
        "nan_filled_unused_parameters": nan_filled,
        "psam_tensors_mapped": len(used),
        "state_dict_keys": len(sd),
    }
    return sam, info


# ---------------------------------------------------------------------------------------------- one image

def run_image(sam: Sam, stem: str, image: np.ndarray) -> dict:
    """Everything for one image, as arrays and numbers (nothing written): called twice for the determinism check."""
    spec = IMAGES[stem]
    predictor = SamPredictor(sam)
    enc, dec = sam.image_encoder, sam.mask_decoder
    orig_h, orig_w = image.shape[:2]
    total = orig_h * orig_w

    hooks = Hooks()
    hooks.out(enc.layers[1], "early_module")
    predictor.set_image(image, image_format="RGB")
    hooks.remove()
    interm = predictor.interm_features
    assert len(interm) == 1
    early = interm[0]
    assert early.shape == (1, GRID, GRID, VIT_DIM) and early.dtype == torch.float32, early.shape
    src = hooks.data["early_module"]
    assert src.shape == (1, GRID * GRID, VIT_DIM) and torch.equal(early, src.view(1, GRID, GRID, VIT_DIM))
    emb = predictor.features
    assert emb.shape == (1, 256, GRID, GRID) and emb.dtype == torch.float32
    hq_feat = dec.embedding_encoder(emb) + dec.compress_vit_feat(early.permute(0, 3, 1, 2))
    assert hq_feat.shape == (1, HQ_CHANNELS, LOW, LOW)

    box = np.array(spec["box"], dtype=np.float64)  # the mask_input case's box
    cases = prompt_cases(spec)
    out = {"new_hw": list(predictor.input_size), "early": early.numpy().copy(), "hq": hq_feat.numpy().copy(),
           "cases": []}
    box_lowres = {}
    for case, kwargs, note in cases:
        for hq_only, mode in MODES:
            kw = dict(box=box, mask_input=box_lowres[mode], multimask_output=False) if case == "mask_input" else kwargs
            masks, iou, lowres, logits, h = predict_checked(predictor, sam, dec, kw, hq_only)
            # the decoder's own fused HQ feature (hooked inside MaskDecoderHQ.forward) equals ours bit for bit
            assert torch.equal(h.data["embedding_encoder"] + h.data["compress_vit_feat"], hq_feat), (stem, case, mode)
            assert masks.shape == (1, orig_h, orig_w) and masks.dtype == bool
            assert lowres.shape == (1, LOW, LOW) and lowres.dtype == np.float32
            assert iou.shape == (1,) and iou.dtype == np.float32
            iou_all = h.data["iou_all"][0].numpy().copy()
            assert iou_all.shape == (4,)
            sam_token = 1 + int(np.argmax(iou_all[1:])) if kw["multimask_output"] else 0
            assert iou[0] == iou_all[sam_token], (stem, case, mode, iou, iou_all)
            if case == "box":
                box_lowres[mode] = lowres.copy()
            t = predictor.transform
            out["cases"].append({
                "name": case, "note": note, "mode": mode, "hq_token_only": hq_only, "kw": kw,
                "masks": masks.copy(), "iou": iou.copy(), "lowres": lowres.copy(), "iou_all": iou_all,
                "sam_token": sam_token, "logits_abs": np.abs(logits),
                "model_box": None if kw.get("box") is None else t.apply_boxes(kw["box"], (orig_h, orig_w)).reshape(-1),
                "model_pts": None if kw.get("point_coords") is None
                else t.apply_coords(kw["point_coords"], (orig_h, orig_w)),
                "area": int(masks.sum()), "total": total,
            })
    return out


def assert_same_runs(a: dict, b: dict, stem: str) -> None:
    assert a["new_hw"] == b["new_hw"]
    assert np.array_equal(a["early"], b["early"]) and np.array_equal(a["hq"], b["hq"]), f"{stem}: features differ"
    assert len(a["cases"]) == len(b["cases"])
    for x, y in zip(a["cases"], b["cases"]):
        for k in ("masks", "iou", "lowres", "iou_all"):
            assert np.array_equal(x[k], y[k]), f"{stem}/{x['name']}/{x['mode']}: {k} differs between two runs"
        assert x["sam_token"] == y["sam_token"]


# ---------------------------------------------------------------------------------------------- output

def write_image(stem: str, r: dict, image: np.ndarray, writer: Writer, notes: list) -> dict:
    orig_h, orig_w = image.shape[:2]
    early_np, hq_np = r["early"], r["hq"]
    early_desc = (f"predictor.interm_features[0] = image_encoder.layers.1 output ([1,{GRID * GRID},{VIT_DIM}] tokens "
                  f"viewed as [1,{GRID},{GRID},{VIT_DIM}], token = y*{GRID}+x) NHWC")
    hq_desc = ("mask_decoder.embedding_encoder(image_embedding) + mask_decoder.compress_vit_feat("
               f"early.permute(0,3,1,2)) [1,{HQ_CHANNELS},{LOW},{LOW}] NCHW")
    entries = {}
    for key, arr_nchw, n, layout, desc, fname in (
            ("early_feature", early_np.transpose(0, 3, 1, 2), EARLY_CROP, "NHWC", early_desc, "early"),
            ("hq_features", hq_np, HQ_CROP, "NCHW", hq_desc, "hqfeat")):
        full = early_np if layout == "NHWC" else hq_np
        entry = {"layout": layout, "shape": list(full.shape), "full_tensor_stats": stats(full), "files": []}
        for (arr, (y0, y1, x0, x1)), where in zip(crops_nchw(arr_nchw, n), ("tl", "br")):
            if layout == "NHWC":
                arr = arr.transpose(0, 2, 3, 1)
            crop = {"rows": [y0, y1], "cols": [x0, x1],
                    "note": "half-open [start, end) in the map's own spatial grid; all channels"}
            name = writer.npy(f"{stem}_{fname}_{where}{n}.npy", arr,
                              f"{desc}; {layout} crop rows {y0}:{y1}, cols {x0}:{x1} of {list(full.shape)}",
                              layout=layout, crop=crop, full_shape=list(full.shape))
            entry["files"].append({"file": name, "crop": crop})
        entries[key] = entry

    records = []
    for c in r["cases"]:
        case, mode, hq_only, kw = c["name"], c["mode"], c["hq_token_only"], c["kw"]
        if hq_only and case in SAM_HQ_ONLY_CASES:
            continue
        area, total = c["area"], c["total"]
        lowres_stats = [stats(m) for m in c["lowres"]]
        if not 0.0 < lowres_stats[0]["positive_fraction"] < 1.0:
            notes.append(f"{stem}/{case}/{mode}: low-res logits all of one sign")
        lowres_name = writer.npy(
            f"{stem}_{case}_{mode}_lowres.npy", c["lowres"],
            f"low-res mask logits [1,{LOW},{LOW}] float32 (third output of segment_anything_hq SamPredictor.predict, "
            f"hq_token_only={hq_only}: " + ("masks_hq alone)" if hq_only else "masks_sam + masks_hq)"))
        masks_name = writer.npy(
            f"{stem}_{case}_{mode}_masks.npy", np.packbits(c["masks"].reshape(-1)),
            "final boolean masks [1,H,W] at original size (first output of predict, return_logits=False), "
            "np.packbits(masks.reshape(-1)), bitorder 'big', C-order flattening",
            unpacked_shape=[1, orig_h, orig_w], unpacked_dtype="bool", packbits_bitorder="big")
        la = c["logits_abs"]
        records.append({
            "name": case,
            "description": c["note"],
            "multimask_output": bool(kw["multimask_output"]),
            "hq_token_only": hq_only,
            **prompt_records(kw, case, f"{stem}_box_{mode}_lowres.npy", c["model_box"], c["model_pts"]),
            "lowres_file": lowres_name,
            "masks_file": masks_name,
            "num_masks": 1,
            "iou_predictions": [float(v) for v in c["iou"]],
            "mask_areas": [area],
            "mask_area_fractions": [area / total],
            "iou_predictions_all_mask_tokens": [float(v) for v in c["iou_all"]],
            "sam_mask_token": c["sam_token"],
            "near_threshold_pixels": {"abs_lt_1e-5": int((la < 1e-5).sum()), "abs_lt_1e-4": int((la < 1e-4).sum()),
                                      "abs_lt_1e-3": int((la < 1e-3).sum())},
            "lowres_stats": lowres_stats,
        })
    return {
        "image": stem,
        "original_hw": [orig_h, orig_w],
        "resized_hw": r["new_hw"],
        "image_encoder_img_size": 1024,
        "embedding_grid": GRID,
        "lowres_size": LOW,
        "early_feature": entries["early_feature"],
        "hq_features": entries["hq_features"],
        "image_embedding": None,
        "cases": records,
    }


def check_masks(stem: str, r: dict) -> list[str]:
    """Problems that make a case useless as a fixture (mask all-on/all-off, modes identical)."""
    bad = []
    by = {(c["name"], c["mode"]): c for c in r["cases"]}
    for c in r["cases"]:
        f = c["area"] / c["total"]
        tag = f"{stem}/{c['name']}/{c['mode']}"
        print(f"{tag:28s} iou={float(c['iou'][0]):+.6f} token={c['sam_token']} area={c['area']} ({100 * f:.2f}%) "
              f"lowres+={float((c['lowres'] > 0).mean()):.3f}")
        stored = not (c["hq_token_only"] and c["name"] in SAM_HQ_ONLY_CASES)
        if stored and not AREA_MIN <= f <= AREA_MAX:
            bad.append(f"{tag}: mask covers {100 * f:.2f}% of the image")
    for name in {c["name"] for c in r["cases"]} - set(SAM_HQ_ONLY_CASES):
        if np.array_equal(by[(name, "sam+hq")]["masks"], by[(name, "hq")]["masks"]):
            bad.append(f"{stem}/{name}: the two hq_token_only modes give the same mask")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--psam", type=Path, default=DEFAULT_PSAM)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)

    psam_sha = sha256_file(args.psam)
    meta, ours, table = read_psam(args.psam)
    check_metadata(meta)
    print(f"{args.psam}: {args.psam.stat().st_size} bytes, {len(ours)} f32 tensors, sha256 {psam_sha}")
    sam, load_info = build_official(ours)
    del ours

    images, image_meta = {}, {}
    for stem, spec in IMAGES.items():
        src = IMAGE_DIR / spec["file"]
        with Image.open(src) as im:
            pil_mode = im.mode
            img = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        assert pil_mode == "RGB" and img.shape == (*spec["hw"], 3) and img.dtype == np.uint8, (stem, pil_mode)
        images[stem] = img
        image_meta[stem] = {"source_file": f".cache/images/{spec['file']}",
                            "source": "scikit-image data directory (scripts/fetch-assets.sh)",
                            "source_sha256": sha256_file(src), "source_pil_mode": pil_mode,
                            "original_hw": list(img.shape[:2]), "box_xyxy": spec["box"],
                            "positive_point": spec["pos"], "negative_point": spec["neg"],
                            "prompt_note": spec["note"] + " (make_hq_fixtures.py's prompts)"}

    runs, problems = {}, []
    for stem, img in images.items():
        first = run_image(sam, stem, img)
        second = run_image(sam, stem, img)
        assert_same_runs(first, second, stem)
        problems += check_masks(stem, first)
        runs[stem] = first
    if problems:
        raise SystemExit("degenerate fixtures, change the prompts:\n  " + "\n  ".join(problems))

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*"):
        if old.suffix in (".npy", ".json"):
            old.unlink()
    writer = Writer(OUT_DIR)
    notes: list[str] = []
    model = {"checkpoint": "psam", "images": {}}
    for stem, img in images.items():
        model["images"][stem] = write_image(stem, runs[stem], img, writer, notes)

    manifest = {
        "description": "Full-size Light HQ-SAM (segment_anything_hq 0.3 build_sam_vit_t: TinyViT 5M encoder, 256-wide "
                       "prompt encoder and MaskDecoderHQ, vit_dim 160) with PocketSAM's seeded random fp32 weights, "
                       "run by the official SamPredictor on two real images: early feature and fused HQ feature crops,"
                       " low-res logits / masks / IoUs for 4 prompt cases. The weights are not committed: they are "
                       "`psam.command` (the Swift test rebuilds them in memory from `psam.seed` and checks "
                       "`psam.sha256`). Generated by Tests/Reference/make_hq_full_fixtures.py (see its docstring).",
        "generator": "Tests/Reference/make_hq_full_fixtures.py",
        "psam": {
            "command": PSAM_COMMAND,
            "preset": "mobilesam_hq",
            "precision": "fp32",
            "seed": SEED,
            "sha256": psam_sha,
            "bytes": args.psam.stat().st_size,
            "tool_version": meta.get("psam.tool_version"),
            "tensor_count": len(table),
            "metadata": meta,
        },
        "official_model": {
            "builder": "segment_anything_hq.build_sam.build_sam_vit_t(checkpoint=None), load_state_dict(strict=True),"
                       " eval() after loading",
            "constructor": {
                "image_encoder": "TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64,128,160,320], "
                                 "depths=[2,2,6,2], num_heads=[2,4,5,10], window_sizes=[7,7,14,7], mlp_ratio=4.0, "
                                 "drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, "
                                 "local_conv_size=3, layer_lr_decay=0.8) with its built-in 256-channel neck",
                "prompt_encoder": {"embed_dim": 256, "image_embedding_size": [64, 64],
                                   "input_image_size": [1024, 1024], "mask_in_chans": 16},
                "mask_decoder_hq": {"num_multimask_outputs": 3, "transformer_dim": 256, "iou_head_depth": 3,
                                    "iou_head_hidden_dim": 256, "vit_dim": VIT_DIM,
                                    "transformer": {"depth": 2, "embedding_dim": 256, "mlp_dim": 2048,
                                                    "num_heads": 8, "attention_downsample_rate": 2}},
            },
            "early_feature_source": "image_encoder.layers.1",
            "early_feature_shape": [1, GRID, GRID, VIT_DIM],
            "weight_mapping": "psam tensor -> state-dict key of the same name; TinyViT Conv2d_BN X: X.c.weight = "
                              "X.weight, X.bn = (running_mean 0, running_var 1, weight float32(sqrt(1+eps)), bias = "
                              "X.bias); X.bn.num_batches_tracked kept as built; image_encoder.norm_head.* and "
                              "image_encoder.head.* (TinyViT's classifier, never called by forward) filled with NaN",
            **load_info,
        },
        "images": image_meta,
        "models": {TAG: model},
        "omitted_cases": {
            "cases": [f"{c}/hq" for c in SAM_HQ_ONLY_CASES],
            "reason": "size: 16 low-res maps of 262 KB would take the directory over 4.5 MB; point and box_point are "
                      "stored with hq_token_only False only (box and mask_input with both)",
        },
        "pipeline": {
            "predictor": "segment_anything_hq.SamPredictor: set_image(uint8 RGB) then predict(..., hq_token_only=...,"
                         " return_logits=False); preprocessing, prompt transforms and postprocess_masks are those of "
                         "segment_anything 1.0 (ResizeLongestSide, ImageNet mean/std, zero padding)",
            "hq_features": "embedding_encoder(image_embedding) + compress_vit_feat(early.permute(0,3,1,2)), checked "
                           "bit-equal to the sum of those two modules' outputs hooked inside MaskDecoderHQ.forward "
                           "in every predict call",
            "selection": "one mask per prompt: SAM token 0 (multimask_output=False) or the best of tokens 1..3 by "
                         "predicted IoU (multimask_output=True); logits = sam + hq (hq_token_only=False) or hq alone "
                         "(True); iou = the selected SAM token's (checked against the hooked IoU head)",
        },
        "file_naming": "{image}_{case}_{mode}_{lowres|masks}.npy with mode 'sam+hq' (hq_token_only=False) or 'hq' "
                       f"(True); {{image}}_early_{{tl,br}}{EARLY_CROP}.npy, {{image}}_hqfeat_{{tl,br}}{HQ_CROP}.npy",
        "crops": f"the early feature [1,64,64,{VIT_DIM}] (NHWC) as top-left rows/cols [0,{EARLY_CROP}) and bottom-"
                 f"right [{GRID - EARLY_CROP},{GRID}) crops; the fused HQ feature [1,{HQ_CHANNELS},{LOW},{LOW}] "
                 f"(NCHW) as [0,{HQ_CROP}) and [{LOW - HQ_CROP},{LOW}) crops; all channels",
        "layouts": {"NCHW": "[1, C, H, W]", "NHWC": "[1, H, W, C] (the encoder's own layout for the early feature)"},
        "mask_packing": "masks files hold np.packbits(bool_masks.reshape(-1)) (bitorder 'big', MSB first, C order "
                        "over [1, orig_h, orig_w]); unpack with np.unpackbits(a)[:H*W].reshape(1, H, W)",
        "coordinates": "prompts are (x, y) in original image pixels as SamPredictor.predict takes them; boxes xyxy",
        "case_fields": {
            "prompts_model_frame_xy": "after ResizeLongestSide.apply_coords/apply_boxes (float64), before predict's "
                                      "cast to float32 and the prompt encoder's +0.5 shift",
            "mask_input": "name of the case (same image and hq_token_only mode) whose low-res logits are fed as "
                          "mask_input [1,256,256]; mask_input_file is its file",
            "num_masks": "always 1: MaskDecoderHQ returns one mask per prompt, also with multimask_output=True",
            "iou_predictions": "the predictor's IoU output, full float32 value: the selected SAM token's predicted "
                               "IoU (also when hq_token_only=True; the HQ token has no IoU)",
            "iou_predictions_all_mask_tokens": "mask_decoder.iou_prediction_head output (hooked), SAM tokens 0..3",
            "sam_mask_token": "0 when multimask_output=False, else 1 + argmax(iou[1:4])",
            "mask_areas": "true pixels of the final mask at original size",
            "near_threshold_pixels": "pixels whose upscaled logit (return_logits=True) is within +-eps of 0.0",
            "lowres_stats": "stats of the low-res logits (mean, std, min, max, abs_mean, positive_fraction)",
        },
        "degenerate_notes": notes,
        "area_bounds": f"every stored final mask covers {100 * AREA_MIN:g}-{100 * AREA_MAX:g} % of its image (checked)",
        "files": writer.files,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "segment-anything-hq": version("segment-anything-hq"),
            "timm": version("timm"),
        },
        "determinism": "CPU, fp32, torch.set_num_threads(1), torch.use_deterministic_algorithms(True); each image run "
                       "twice (fresh predictor) with bit-identical results; weights from the seeded psam generator",
    }
    manifest["files"]["manifest.json"] = {"description": "this file"}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")

    for n in notes:
        print("NOTE:", n)
    files = sorted(p for p in OUT_DIR.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total} bytes ({total / 2 ** 20:.2f} MiB) to {OUT_DIR}")
    if total > SIZE_LIMIT:
        raise SystemExit(f"{total} bytes is over the {SIZE_LIMIT:.0f}-byte limit")


if __name__ == "__main__":
    main()

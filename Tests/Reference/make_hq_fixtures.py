#!/usr/bin/env python3
"""Small random-weight HQ-SAM checkpoints and their fixtures, made by the OFFICIAL HQ-SAM code.

Run by hand (never in CI), from the repository root, in the venv of make_random_fixtures.py plus the HQ package:

    python3 -m venv /tmp/psam-venv && . /tmp/psam-venv/bin/activate
    pip install torch torchvision numpy pillow scikit-image==0.26.0 timm safetensors
    pip install --no-deps segment-anything==1.0 mobilesam-lite==0.1.2 segment-anything-hq==0.3
    python Tests/Reference/make_hq_fixtures.py

(segment-anything and mobilesam-lite are only there because the helpers ``randomise``/``sha``/``describe``
are imported from make_random_checkpoints.py and ``Writer``/``crops_*``/``stats``/``version`` from
make_random_fixtures.py; every model here is built from ``segment_anything_hq`` classes.)

Writes Tests/Fixtures/random/hq/ (everything in it is regenerated; nothing outside it is touched):
  hq_vit_tiny.pth      Sam(ImageEncoderViT, PromptEncoder, MaskDecoderHQ) of segment_anything_hq, the encoder with
                       exactly make_random_checkpoints.py's vit_cfg (img 256, patch 16, embed 64, depth 4, heads 4,
                       window 6, global blocks 1 and 3, out_chans 32), relative-position tables random (non-zero:
                       randomise() draws every float parameter, rel_pos_* included, as it did for vit_tiny.pth),
                       vit_dim 64; fp32 state_dict, torch.save
  hq_tinyvit_tiny.pth  Sam(segment_anything_hq TinyViT with make_random_checkpoints.py's shrunk MobileSAM config and
                       its 32-channel neck, PromptEncoder, MaskDecoderHQ(vit_dim=48)); state_dict saved in fp16
  *.npy                per model and image (scikit-image chelsea.png 300x451 and coffee.png 400x600):
                       the early ViT feature (predictor.interm_features[0], NHWC), the fused HQ feature map
                       (NCHW, computed as MaskDecoderHQ.forward does), the image embedding (ViT model only), and
                       for 5 prompt cases x hq_token_only in (False, True): low-res logits and packed final masks.
                       ViT maps are stored whole; TinyViT's fused HQ map [1,4,256,256] as top-left/bottom-right 48x48
                       crops and its early feature [1,64,64,48] as 16x16 crops (two 48x48 crops of a 64x64 map
                       would be larger than the map; 16 keeps the directory under 12 MB)
  manifest.json        constructor values, tensor lists, the tensors HQ adds, files with SHA-256, prompts, IoUs, areas

Both models: every float parameter and BatchNorm statistic randomised with a seeded generator (randomise() of
make_random_checkpoints.py), saved, rebuilt from scratch, loaded strictly, eval() AFTER loading (TinyViT's Attention
caches its bias table in eval()), fp32 on CPU, one thread, deterministic algorithms. The TinyViT model used for the
outputs holds the fp16-rounded weights cast back to fp32 (exact), as for mobilesam_tiny.pth.

What the official HQ-SAM code (segment_anything_hq 0.3) computes and returns
----------------------------------------------------------------------------
* Early feature. ImageEncoderViT.forward returns (embedding, interm_embeddings) where interm_embeddings is the output
  [B,H,W,C] of EVERY global-attention block (blk.window_size == 0), in order; MaskDecoderHQ only uses
  interm_embeddings[0], the FIRST global block (blocks.1 here; blocks.2/5/7 for vit_b/l/h). TinyViT.forward_features
  appends the output of self.layers[1] - i.e. AFTER layers[1]'s PatchMerging, so 64x64 tokens with embed_dims[2]
  channels (48 here, 160 for the official vit_tiny, matching its vit_dim=160) - viewed as [B,64,64,C] with a
  hard-coded 64 (as the neck input is).
* Decoder tokens: [iou_token, 4 SAM mask tokens, hf_token (HQ output token), sparse prompts]. The HQ token takes part
  in the two-way transformer like the others, so even the SAM masks differ from a plain SAM decoder with equal
  weights. The IoU head is built before num_mask_tokens is raised to 5: it still predicts 4 IoUs; the HQ token has
  no IoU of its own.
* HQ feature: hq = embedding_encoder(image_embedding) + compress_vit_feat(interm[0].permute(0,3,1,2)),
  [B, transformer_dim/8, 4g, 4g] (g = embedding grid). Neither branch ends in an activation.
  upscaled_hq = embedding_maskfeature(upscaled_sam) + hq, where upscaled_sam is output_upscaling(src) (ending in
  GELU). SAM masks = hypernetwork_mlps[i](token i) @ upscaled_sam; HQ mask = hf_mlp(hf token) @ upscaled_hq.
* Selection (MaskDecoderHQ.forward), per prompt, ALWAYS ONE mask out (num_masks is 1 even with multimask_output=True):
    multimask_output=False: masks_sam = mask token 0, iou = iou[0]
    multimask_output=True:  masks_sam = the mask among tokens 1..3 with the highest predicted IoU (torch.max over
                            iou[1:4]), iou = that maximum
    hq_token_only=False:    returned logits = masks_sam + masks_hq (the SUM of the two logit maps, thresholded at 0
                            after postprocessing)
    hq_token_only=True:     returned logits = masks_hq alone
  The returned IoU is always the SAM token's (index 0, or the best of 1..3), also when hq_token_only=True.
  SamPredictor.predict(..., hq_token_only=False) passes the flag through; the low-res output is the selected
  [1, 4g, 4g] logits (64x64 for the ViT model here, 256x256 for the TinyViT one), and the same
  Sam.postprocess_masks / > 0.0 as segment_anything gives the final masks.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings
from functools import partial
from pathlib import Path

warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.")
warnings.filterwarnings("ignore", message=r"Overwriting tiny_vit_")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import skimage  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from segment_anything_hq import SamPredictor  # noqa: E402
from segment_anything_hq.modeling import (ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam,  # noqa: E402
                                          TinyViT, TwoWayTransformer)
from segment_anything_hq.modeling import tiny_vit_sam  # noqa: E402
from segment_anything_hq.modeling.mask_decoder import MaskDecoder  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_random_checkpoints import describe, randomise, sha  # noqa: E402
from make_random_fixtures import Writer, crops_nchw, stats, version  # noqa: E402

REPO = HERE.parents[1]
OUT_DIR = REPO / "Tests" / "Fixtures" / "random" / "hq"
SKIMAGE_DATA = Path(skimage.__file__).resolve().parent / "data"

# make_random_checkpoints.py's constructor values (repeated, as make_random_fixtures.py does)
VIT_CFG = dict(img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, out_chans=32,
               qkv_bias=True, use_rel_pos=True, window_size=6, global_attn_indexes=(1, 3))
TV_CFG = dict(img_size=1024, in_chans=3, num_classes=10, embed_dims=[16, 32, 48, 320], depths=[1, 1, 2, 1],
              num_heads=[1, 2, 3, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
              drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3)
DEC_CFG = dict(num_multimask_outputs=3, transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32)
TRANSFORMER_CFG = dict(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8)
PROMPT_DIM, MASK_IN_CHANS = 32, 16
VIT_DIM = {"vit": VIT_CFG["embed_dim"],            # blocks.1 output channels
           "tinyvit": TV_CFG["embed_dims"][2]}     # layers[1] output = its PatchMerging's out_dim = embed_dims[2]
EARLY_SOURCE = {"vit": "blocks.1", "tinyvit": "layers.1"}
# Picked by hand from a scan of seeds 11..40 (vit) and 12..31 (tinyvit), running this script's prompts: with
# randomise()'s weights the 4-channel HQ path often adds a near-constant logit offset that fills (or empties) every
# mask; under these two seeds every final mask covers 22-76 % of the image and the two hq_token_only modes differ.
SEEDS = {"vit": 37, "tinyvit": 14}
CKPT_FILE = {"vit": "hq_vit_tiny.pth", "tinyvit": "hq_tinyvit_tiny.pth"}
HQ_MODULES = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")

# TinyViT maps: the fused HQ feature [1,4,256,256] as top-left/bottom-right HQ_CROP crops; the early feature is only
# 64x64, where two 48x48 crops (884 KB) would be larger than the whole map (786 KB), so it gets EARLY_CROP crops.
HQ_CROP = 48
EARLY_CROP = 16

# Prompts in ORIGINAL image pixels, (x, y). chelsea: the parity fixtures' box/points plus the cat's nose;
# coffee: make_litemedsam_fixtures.py's cup box, coffee-surface point, saucer negative, plus the cup's handle.
IMAGES = {
    "chelsea": dict(file="chelsea.png", hw=(300, 451), box=[150, 60, 330, 270], pos=[240, 150], neg=[170, 80],
                    pos2=[262, 238], note="cat's face box; pos = between the eyes, neg = left eye (inside the box), "
                                          "pos2 = nose"),
    "coffee": dict(file="coffee.png", hw=(400, 600), box=[172, 18, 412, 300], pos=[290, 150], neg=[100, 300],
                   pos2=[225, 265], note="espresso cup box; pos = coffee surface, neg = saucer (outside the box), "
                                         "pos2 = the cup's handle"),
}
MODES = ((False, "sam+hq"), (True, "hq"))


# ---------------------------------------------------------------------------------------------- models

def hq_heads(image_size: int, grid: int, vit_dim: int):
    prompt = PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                           input_image_size=(image_size, image_size), mask_in_chans=MASK_IN_CHANS)
    decoder = MaskDecoderHQ(transformer=TwoWayTransformer(**TRANSFORMER_CFG), vit_dim=vit_dim, **DEC_CFG)
    return prompt, decoder


def build(tag: str) -> Sam:
    if tag == "vit":
        enc = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **VIT_CFG)
        prompt, decoder = hq_heads(256, 16, VIT_DIM["vit"])
    else:
        enc = TinyViT(**TV_CFG)
        enc.neck = nn.Sequential(nn.Conv2d(320, 32, 1, bias=False), tiny_vit_sam.LayerNorm2d(32),
                                 nn.Conv2d(32, 32, 3, padding=1, bias=False), tiny_vit_sam.LayerNorm2d(32))
        prompt, decoder = hq_heads(1024, 64, VIT_DIM["tinyvit"])
    return Sam(image_encoder=enc, prompt_encoder=prompt, mask_decoder=decoder)


def hq_added_tensors(sd: dict, tag: str) -> list[str]:
    """Keys of the HQ decoder state dict that the plain decoder of segment_anything_hq (same config) lacks."""
    plain = MaskDecoder(transformer=TwoWayTransformer(**TRANSFORMER_CFG), **DEC_CFG).state_dict()
    hq = {k[len("mask_decoder."):] for k in sd if k.startswith("mask_decoder.")}
    assert set(plain) <= hq, set(plain) - hq
    for k, v in plain.items():
        assert list(v.shape) == list(sd["mask_decoder." + k].shape), (tag, k)
    added = sorted("mask_decoder." + k for k in hq - set(plain))
    assert all(k.split(".")[1] in HQ_MODULES for k in added), added
    for m in HQ_MODULES:
        assert any(k.split(".")[1] == m for k in added), (tag, m)
    assert "mask_decoder.hf_token.weight" in added
    return [k for k in sd if k in added]  # state-dict order


def make_checkpoint(tag: str) -> tuple[Path, dict]:
    sam = build(tag).eval()
    randomise(sam, SEEDS[tag])
    if tag == "vit":
        rel = {k: v for k, v in sam.state_dict().items() if "rel_pos" in k}
        assert len(rel) == 2 * VIT_CFG["depth"] and all(bool((v != 0).all()) for v in rel.values())
    sd = sam.state_dict()
    if tag == "tinyvit":
        sd = {k: (v.half() if v.dtype.is_floating_point else v) for k, v in sd.items()}
    path = OUT_DIR / CKPT_FILE[tag]
    torch.save(sd, path)
    return path, sd


def load(tag: str, path: Path) -> Sam:
    sam = build(tag)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    want = torch.float32 if tag == "vit" else torch.float16
    assert all(v.dtype == want for v in sd.values() if v.dtype.is_floating_point)
    # fp32 model: load_state_dict copies fp16 tensors with an exact cast (not sam.half()/.float(), which would also
    # round the non-persistent pixel_mean/pixel_std buffers)
    sam.load_state_dict(sd, strict=True)
    sam.eval()  # AFTER loading: TinyViT Attention.train(False) caches ab from the loaded biases
    for k, v in sam.state_dict().items():
        ref = sd[k].float() if sd[k].dtype.is_floating_point else sd[k]
        assert v.dtype == ref.dtype and torch.equal(v, ref), k
    assert all(p.dtype == torch.float32 for p in sam.parameters())
    assert torch.equal(sam.pixel_mean.view(-1), torch.tensor([123.675, 116.28, 103.53]))
    assert torch.equal(sam.pixel_std.view(-1), torch.tensor([58.395, 57.12, 57.375]))
    if tag == "tinyvit":
        n = 0
        for m in sam.modules():
            if isinstance(m, tiny_vit_sam.Attention):
                assert torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]), "stale attention bias cache"
                n += 1
        assert n == sum(TV_CFG["depths"][1:])
    return sam


def constructor(tag: str) -> dict:
    dec = dict(DEC_CFG, vit_dim=VIT_DIM[tag], transformer=dict(TRANSFORMER_CFG, attention_downsample_rate=2))
    if tag == "vit":
        return {"image_encoder": dict(VIT_CFG, global_attn_indexes=list(VIT_CFG["global_attn_indexes"]),
                                      norm_layer="LayerNorm(eps=1e-6)", rel_pos="random (randomise), non-zero"),
                "prompt_encoder": {"embed_dim": PROMPT_DIM, "image_embedding_size": [16, 16],
                                   "input_image_size": [256, 256], "mask_in_chans": MASK_IN_CHANS},
                "mask_decoder_hq": dec}
    return {"image_encoder": dict(TV_CFG, neck="Conv2d(320,32,1,bias=False), LayerNorm2d(32), "
                                               "Conv2d(32,32,3,padding=1,bias=False), LayerNorm2d(32) (replaces the "
                                               "hard-coded 256-channel neck)"),
            "prompt_encoder": {"embed_dim": PROMPT_DIM, "image_embedding_size": [64, 64],
                               "input_image_size": [1024, 1024], "mask_in_chans": MASK_IN_CHANS},
            "mask_decoder_hq": dec}


# ---------------------------------------------------------------------------------------------- per model, image

class Hooks:
    def __init__(self):
        self.data: dict[str, torch.Tensor] = {}
        self.handles = []

    def out(self, module: nn.Module, key: str):
        def hook(mod, inp, out):
            self.data[key] = out.detach().clone()
        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def prompt_records(kw, case, mask_input_file, model_box, model_pts):
    """A case's prompts as the manifest records them: in original-image pixels (the mask input as the name of the case
    whose logits are fed, and that file) and in the model frame (after ResizeLongestSide)."""
    return {
        "prompts_original_xy": {
            "box_xyxy": None if kw.get("box") is None else [float(v) for v in kw["box"]],
            "point_coords": None if kw.get("point_coords") is None else [[float(v) for v in p] for p in kw["point_coords"]],
            "point_labels": None if kw.get("point_labels") is None else [int(v) for v in kw["point_labels"]],
            "mask_input": "box" if case == "mask_input" else None,
            "mask_input_file": mask_input_file if case == "mask_input" else None,
        },
        "prompts_model_frame_xy": {
            "box_xyxy": None if model_box is None else [float(v) for v in model_box],
            "point_coords": None if model_pts is None else [[float(v) for v in p] for p in model_pts],
        },
    }


def prompt_cases(spec: dict) -> list:
    """The prompt cases of an image spec (box, pos, neg in image pixels) that both HQ fixture scripts use: (name,
    predictor kwargs or None for the mask-input case, description)."""
    box = np.array(spec["box"], dtype=np.float64)
    pos = np.array(spec["pos"], dtype=np.float64)
    neg = np.array(spec["neg"], dtype=np.float64)
    return [
        ("box", dict(box=box, multimask_output=False), "one box"),
        ("point", dict(point_coords=pos[None], point_labels=np.array([1]), multimask_output=True),
         "one positive point, multimask_output=True (SAM part = best of mask tokens 1..3 by predicted IoU)"),
        ("box_point", dict(box=box, point_coords=neg[None], point_labels=np.array([0]), multimask_output=False),
         "the box plus one negative point"),
        ("mask_input", None, "the box plus mask_input = the box case's low-res logits of the same hq_token_only mode"),
    ]


def predict_checked(predictor, sam, dec, kw, hq_only):
    """SamPredictor.predict with the HQ decoder's fusion branches and IoU head hooked, checked against the same call
    with return_logits=True (masks = logits > threshold, same IoU and low-res logits). Returns masks, iou, lowres,
    logits and the hooks (``.data``: embedding_encoder, compress_vit_feat, iou_all)."""
    h = Hooks()
    h.out(dec.embedding_encoder, "embedding_encoder")
    h.out(dec.compress_vit_feat, "compress_vit_feat")
    h.out(dec.iou_prediction_head, "iou_all")
    masks, iou, lowres = predictor.predict(**kw, hq_token_only=hq_only)
    h.remove()
    logits, iou_l, lowres_l = predictor.predict(**kw, hq_token_only=hq_only, return_logits=True)
    assert np.array_equal(logits > sam.mask_threshold, masks)
    assert np.array_equal(iou, iou_l) and np.array_equal(lowres, lowres_l)
    return masks, iou, lowres, logits, h


def run_image(tag: str, sam: Sam, stem: str, image: np.ndarray, writer: Writer, notes: list) -> dict:
    spec = IMAGES[stem]
    predictor = SamPredictor(sam)
    enc, dec = sam.image_encoder, sam.mask_decoder
    img_size = enc.img_size
    grid = sam.prompt_encoder.image_embedding_size[0]
    low = 4 * grid
    orig_h, orig_w = image.shape[:2]

    hooks = Hooks()
    hooks.out(enc.blocks[1] if tag == "vit" else enc.layers[1], "early_module")
    predictor.set_image(image, image_format="RGB")
    hooks.remove()
    new_h, new_w = predictor.input_size

    # ---------------- early feature, HQ feature, embedding
    interm = predictor.interm_features
    assert len(interm) == (len(VIT_CFG["global_attn_indexes"]) if tag == "vit" else 1)
    early = interm[0]
    c = VIT_DIM[tag]
    eg = grid  # the early feature shares the embedding grid (16 for ViT, hard-coded 64 for TinyViT)
    assert early.shape == (1, eg, eg, c) and early.dtype == torch.float32, early.shape
    src_mod = hooks.data["early_module"]
    if tag == "vit":
        assert torch.equal(early, src_mod)
    else:
        assert src_mod.shape == (1, eg * eg, c) and torch.equal(early, src_mod.view(1, eg, eg, c))
    emb = predictor.features
    assert emb.shape == (1, 32, grid, grid) and emb.dtype == torch.float32
    hq_feat = dec.embedding_encoder(emb) + dec.compress_vit_feat(early.permute(0, 3, 1, 2))
    assert hq_feat.shape == (1, DEC_CFG["transformer_dim"] // 8, low, low)

    pre = f"{tag}_{stem}"
    files = {}
    early_np, hq_np = early.numpy(), hq_feat.numpy()
    early_desc = (f"predictor.interm_features[0] = image_encoder.{EARLY_SOURCE[tag]} output"
                  + ("" if tag == "vit" else
                     f" ([1,{eg * eg},{c}] tokens viewed as [1,{eg},{eg},{c}], token = y*{eg}+x)")
                  + f" [1,{eg},{eg},{c}] NHWC")
    hq_desc = ("mask_decoder.embedding_encoder(image_embedding) + mask_decoder.compress_vit_feat("
               f"early.permute(0,3,1,2)) [1,{hq_np.shape[1]},{low},{low}] NCHW")
    if tag == "vit":
        files["early_feature"] = {"layout": "NHWC", "shape": list(early_np.shape), "files": [
            {"file": writer.npy(f"{pre}_early.npy", early_np, early_desc + "; full", layout="NHWC"), "crop": None}]}
        files["hq_features"] = {"layout": "NCHW", "shape": list(hq_np.shape), "files": [
            {"file": writer.npy(f"{pre}_hqfeat.npy", hq_np, hq_desc + "; full", layout="NCHW"), "crop": None}]}
        files["image_embedding"] = {"layout": "NCHW", "shape": list(emb.shape), "files": [
            {"file": writer.npy(f"{pre}_embedding.npy", emb.numpy(),
                                "predictor.get_image_embedding() [1,32,16,16] NCHW; full", layout="NCHW"),
             "crop": None}]}
    else:
        for key, arr_nchw, n, layout, desc, fname in (
                ("early_feature", early_np.transpose(0, 3, 1, 2), EARLY_CROP, "NHWC", early_desc, "early"),
                ("hq_features", hq_np, HQ_CROP, "NCHW", hq_desc, "hqfeat")):
            full = early_np if layout == "NHWC" else hq_np
            entry = {"layout": layout, "shape": list(full.shape), "full_tensor_stats": stats(full), "files": []}
            for (arr, (y0, y1, x0, x1)), where in zip(crops_nchw(arr_nchw, n), ("tl", "br")):
                if layout == "NHWC":
                    arr = arr.transpose(0, 2, 3, 1)
                crop = {"rows": [y0, y1], "cols": [x0, x1], "note": "half-open [start, end) in the map's own "
                        "spatial grid; all channels"}
                name = writer.npy(f"{pre}_{fname}_{where}{n}.npy", arr,
                                  f"{desc}; {layout} crop rows {y0}:{y1}, cols {x0}:{x1} of {list(full.shape)}",
                                  layout=layout, crop=crop, full_shape=list(full.shape))
                entry["files"].append({"file": name, "crop": crop})
            files[key] = entry
        files["image_embedding"] = None
    if tag == "vit":
        files["early_feature"]["full_tensor_stats"] = stats(early_np)
        files["hq_features"]["full_tensor_stats"] = stats(hq_np)

    # ---------------- prompt cases
    box = np.array(spec["box"], dtype=np.float64)  # the mask_input case's box
    pos = np.array(spec["pos"], dtype=np.float64)
    pos2 = np.array(spec["pos2"], dtype=np.float64)
    cases = prompt_cases(spec) + [
        ("points_multi", dict(point_coords=np.stack([pos, pos2]), point_labels=np.array([1, 1]),
                              multimask_output=False), "two positive points"),
    ]
    total = orig_h * orig_w
    box_lowres = {}
    records = []
    hq_checked = False
    for case, kwargs, note in cases:
        for hq_only, mode in MODES:
            kw = dict(box=box, mask_input=box_lowres[mode], multimask_output=False) if case == "mask_input" else kwargs
            masks, iou, lowres, logits, h = predict_checked(predictor, sam, dec, kw, hq_only)
            if not hq_checked:  # the decoder's own fused feature equals ours bit for bit
                assert torch.equal(h.data["embedding_encoder"] + h.data["compress_vit_feat"], hq_feat)
                hq_checked = True
            assert masks.shape == (1, orig_h, orig_w) and masks.dtype == bool
            assert lowres.shape == (1, low, low) and lowres.dtype == np.float32
            assert iou.shape == (1,) and iou.dtype == np.float32
            iou_all = h.data["iou_all"][0].numpy()
            assert iou_all.shape == (4,)
            if kw["multimask_output"]:
                sam_token = 1 + int(np.argmax(iou_all[1:]))
            else:
                sam_token = 0
            assert iou[0] == iou_all[sam_token]
            if case == "box":
                box_lowres[mode] = lowres.copy()

            areas = [int(a) for a in masks.reshape(1, -1).sum(axis=1)]
            for i, a in enumerate(areas):
                if a == 0 or a == total:
                    notes.append(f"{pre}/{case}/{mode} mask {i}: final mask is {'EMPTY' if a == 0 else 'FULL'}")
                elif a < 0.001 * total or a > 0.999 * total:
                    notes.append(f"{pre}/{case}/{mode} mask {i}: nearly {'empty' if a < total / 2 else 'full'} "
                                 f"({a} of {total} pixels)")
            lowres_stats = [stats(m) for m in lowres]
            for i, s in enumerate(lowres_stats):
                if not 0.0 < s["positive_fraction"] < 1.0:
                    notes.append(f"{pre}/{case}/{mode} mask {i}: low-res logits all of one sign")

            lowres_name = writer.npy(
                f"{pre}_{case}_{mode}_lowres.npy", lowres,
                f"low-res mask logits [1,{low},{low}] float32 (third output of segment_anything_hq "
                f"SamPredictor.predict, hq_token_only={hq_only}: "
                + ("masks_hq alone)" if hq_only else "masks_sam + masks_hq)"))
            masks_name = writer.npy(
                f"{pre}_{case}_{mode}_masks.npy", np.packbits(masks.reshape(-1)),
                "final boolean masks [1,H,W] at original size (first output of predict, return_logits=False), "
                "np.packbits(masks.reshape(-1)), bitorder 'big', C-order flattening",
                unpacked_shape=[1, orig_h, orig_w], unpacked_dtype="bool", packbits_bitorder="big")
            t = predictor.transform
            model_box = None if kw.get("box") is None else t.apply_boxes(kw["box"], (orig_h, orig_w)).reshape(-1)
            model_pts = None if kw.get("point_coords") is None else t.apply_coords(kw["point_coords"], (orig_h, orig_w))
            records.append({
                "name": case,
                "description": note,
                "multimask_output": bool(kw["multimask_output"]),
                "hq_token_only": hq_only,
                **prompt_records(kw, case, f"{pre}_box_{mode}_lowres.npy", model_box, model_pts),
                "lowres_file": lowres_name,
                "masks_file": masks_name,
                "num_masks": 1,
                "iou_predictions": [float(v) for v in iou],
                "mask_areas": areas,
                "mask_area_fractions": [a / total for a in areas],
                "iou_predictions_all_mask_tokens": [float(v) for v in iou_all],
                "sam_mask_token": sam_token,
                "near_threshold_pixels": {
                    "abs_lt_1e-5": int((np.abs(logits) < 1e-5).sum()),
                    "abs_lt_1e-4": int((np.abs(logits) < 1e-4).sum()),
                    "abs_lt_1e-3": int((np.abs(logits) < 1e-3).sum()),
                },
                "lowres_stats": lowres_stats,
            })
            print(f"{pre:16s} {case:12s} {mode:6s} iou={float(iou[0]):+.6f} token={sam_token} area={areas[0]} "
                  f"({100 * areas[0] / total:.2f}%) lowres+={lowres_stats[0]['positive_fraction']:.3f}")

    return {
        "image": stem,
        "original_hw": [orig_h, orig_w],
        "resized_hw": [new_h, new_w],
        "image_encoder_img_size": img_size,
        "embedding_grid": grid,
        "lowres_size": low,
        "early_feature": files["early_feature"],
        "hq_features": files["hq_features"],
        "image_embedding": files["image_embedding"],
        "cases": records,
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*"):
        if old.suffix in (".npy", ".json", ".pth"):
            old.unlink()

    images = {}
    image_meta = {}
    for stem, spec in IMAGES.items():
        src = SKIMAGE_DATA / spec["file"]
        with Image.open(src) as im:
            mode = im.mode
            img = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        assert mode == "RGB" and img.shape == (*spec["hw"], 3) and img.dtype == np.uint8, (stem, mode, img.shape)
        images[stem] = img
        image_meta[stem] = {"source_file": spec["file"], "source": "scikit-image data directory",
                            "source_sha256": sha(src), "source_pil_mode": mode, "original_hw": list(img.shape[:2]),
                            "box_xyxy": spec["box"], "positive_point": spec["pos"], "negative_point": spec["neg"],
                            "second_positive_point": spec["pos2"], "prompt_note": spec["note"]}

    writer = Writer(OUT_DIR)
    notes: list[str] = []
    checkpoints, models = {}, {}
    for tag in ("vit", "tinyvit"):
        path, sd = make_checkpoint(tag)
        added = hq_added_tensors(sd, tag)
        sam = load(tag, path)
        checkpoints[tag] = {
            "file": f"Tests/Fixtures/random/hq/{path.name}",
            "sha256": sha(path),
            "bytes": path.stat().st_size,
            "saved_dtype": "float32" if tag == "vit" else "float16",
            "seed": SEEDS[tag],
            "classes": "segment_anything_hq.modeling: Sam(" + ("ImageEncoderViT" if tag == "vit" else "TinyViT")
                       + ", PromptEncoder, MaskDecoderHQ(TwoWayTransformer))",
            "constructor": constructor(tag),
            "early_feature_source": EARLY_SOURCE[tag],
            "early_feature_shape": [1, sam.prompt_encoder.image_embedding_size[0],
                                    sam.prompt_encoder.image_embedding_size[0], VIT_DIM[tag]],
            "vit_dim": VIT_DIM[tag],
            "hq_added_tensors": {k: describe({k: sd[k]})[k] for k in added},
            "tensors": describe(sd),
        }
        if tag == "vit":
            checkpoints[tag]["rel_pos_abs_max"] = {k: float(v.abs().max()) for k, v in sd.items() if "rel_pos" in k}
        models[tag] = {"checkpoint": tag, "images": {}}
        for stem, img in images.items():
            models[tag]["images"][stem] = run_image(tag, sam, stem, img, writer, notes)

    manifest = {
        "description": "HQ-SAM fixtures for PocketSAM: two small random-weight HQ-SAM models (SAM-ViT and "
                       "MobileSAM-style TinyViT encoders, MaskDecoderHQ) built and run by the official "
                       "segment_anything_hq 0.3 code on two real images; early ViT features, fused HQ features, "
                       "and low-res logits / masks / IoUs for 5 prompt cases with hq_token_only False and True. "
                       "Generated by Tests/Reference/make_hq_fixtures.py (see its docstring for what the official "
                       "predictor returns).",
        "generator": "Tests/Reference/make_hq_fixtures.py",
        "checkpoints": checkpoints,
        "images": image_meta,
        "models": models,
        "pipeline": {
            "predictor": "segment_anything_hq.SamPredictor: set_image(uint8 RGB) then predict(..., hq_token_only=...,"
                         " return_logits=False); preprocessing, prompt transforms and postprocess_masks are those of "
                         "segment_anything 1.0 (ResizeLongestSide, ImageNet mean/std, zero padding)",
            "hq_features": "embedding_encoder(image_embedding) + compress_vit_feat(early.permute(0,3,1,2)), checked "
                           "bit-equal to the sum of those two modules' outputs hooked inside MaskDecoderHQ.forward",
            "selection": "one mask per prompt: SAM token 0 (multimask_output=False) or the best of tokens 1..3 by "
                         "predicted IoU (multimask_output=True); logits = sam + hq (hq_token_only=False) or hq alone "
                         "(True); iou = the selected SAM token's",
        },
        "file_naming": "{model}_{image}_{case}_{mode}_{lowres|masks}.npy with model in (vit, tinyvit), mode 'sam+hq' "
                       "(hq_token_only=False) or 'hq' (hq_token_only=True); {model}_{image}_{early|hqfeat|embedding}"
                       "[_tl<n>|_br<n>].npy",
        "crops": f"tinyvit maps: the fused HQ feature [1,4,256,256] as top-left rows/cols [0,{HQ_CROP}) and "
                 f"bottom-right [256-{HQ_CROP},256) crops, the early feature [1,64,64,48] as {EARLY_CROP}x{EARLY_CROP} "
                 f"crops (two 48x48 crops of a 64x64 map would exceed the whole map; {EARLY_CROP} keeps the "
                 "directory under 12 MB); all channels. vit maps are stored whole.",
        "layouts": {"NCHW": "[1, C, H, W]", "NHWC": "[1, H, W, C] (the encoder's own layout for the early feature)"},
        "mask_packing": "masks files hold np.packbits(bool_masks.reshape(-1)) (bitorder 'big', MSB first, C order "
                        "over [1, orig_h, orig_w]); unpack with np.unpackbits(a)[:H*W].reshape(1, H, W)",
        "coordinates": "prompts are (x, y) in original image pixels as SamPredictor.predict takes them; boxes xyxy",
        "case_fields": {
            "prompts_model_frame_xy": "after ResizeLongestSide.apply_coords/apply_boxes (x*new_w/orig_w, "
                                      "y*new_h/orig_h, float64), before predict's cast to float32 and the prompt "
                                      "encoder's +0.5 shift",
            "mask_input": "name of the case (same model, image and hq_token_only mode) whose low-res logits are fed "
                          "as mask_input [1,4g,4g]; mask_input_file is its file",
            "num_masks": "always 1: MaskDecoderHQ returns one mask per prompt, also with multimask_output=True",
            "iou_predictions": "the predictor's IoU output: the selected SAM token's predicted IoU (also when "
                               "hq_token_only=True; the HQ token has no IoU)",
            "iou_predictions_all_mask_tokens": "mask_decoder.iou_prediction_head output (hooked) for SAM mask tokens "
                                               "0..3",
            "sam_mask_token": "index of the SAM mask token whose mask (and IoU) was selected: 0 when "
                              "multimask_output=False, else 1 + argmax(iou[1:4]); its low-res logits are added to "
                              "the HQ token's unless hq_token_only",
            "mask_areas": "true pixels of the final mask at original size",
            "near_threshold_pixels": "pixels whose upscaled logit (return_logits=True, same call otherwise) is within "
                                     "+-eps of the 0.0 threshold; a port whose logits differ by about eps may flip "
                                     "these",
            "lowres_stats": "stats of the low-res logits (mean, std, min, max, abs_mean, positive_fraction)",
        },
        "degenerate_notes": notes,
        "files": writer.files,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit-image": skimage.__version__,
            "segment-anything-hq": version("segment-anything-hq"),
            "timm": version("timm"),
            "segment-anything": version("segment-anything") + " (helpers only)",
            "mobilesam-lite": version("mobilesam-lite") + " (helpers only)",
        },
        "determinism": "CPU, fp32, torch.set_num_threads(1), torch.use_deterministic_algorithms(True); weights from "
                       "seeded torch.Generator draws (randomise of make_random_checkpoints.py)",
    }
    for tag, ck in checkpoints.items():
        p = OUT_DIR / CKPT_FILE[tag]
        manifest["files"][p.name] = {"bytes": ck["bytes"], "sha256": ck["sha256"],
                                     "description": f"{tag} HQ-SAM state_dict ({ck['saved_dtype']})"}
    manifest["files"]["manifest.json"] = {"description": "this file"}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")

    for n in notes:
        print("NOTE:", n)
    files = sorted(p for p in OUT_DIR.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    for tag in checkpoints:
        print(CKPT_FILE[tag], checkpoints[tag]["bytes"])
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB to {OUT_DIR}")


if __name__ == "__main__":
    main()

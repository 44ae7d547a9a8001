#!/usr/bin/env python3
"""Hugging Face / PEFT / SAMed checkpoint fixtures: one small random SAM in every layout people ship it in.

Run by hand (never in CI), from the repository root, in the venv of make_random_fixtures.py plus transformers and
peft:

    python3 -m venv /tmp/psam-venv && . /tmp/psam-venv/bin/activate
    pip install torch torchvision numpy pillow scikit-image==0.26.0 timm safetensors transformers==5.25.0 peft==0.22.0
    pip install --no-deps segment-anything==1.0 mobilesam-lite==0.1.2
    OMP_NUM_THREADS=1 python Tests/Reference/make_hf_fixtures.py

(mobilesam-lite and timm are only there because ``randomise``/``sha``/``describe`` are imported from
make_random_checkpoints.py and ``version``/``stats`` from make_random_fixtures.py, which import them.)
The fixtures were made with the versions recorded in manifest.json. CPU, fp32, one thread, deterministic algorithms.
The script re-executes itself with PYTHONHASHSEED=0 (PEFT writes target_modules in set order); two runs give
byte-identical files.

The model
---------
transformers.SamModel (fp32) with SamVisionConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
image_size=256, patch_size=16, output_channels=32, window_size=6, global_attn_indexes=[1,3], mlp_dim=128,
qkv_bias=True, use_rel_pos=True, num_pos_feats=16), SamPromptEncoderConfig(hidden_size=32, image_size=256,
patch_size=16, mask_input_channels=16), SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2,
num_attention_heads=8, iou_head_hidden_dim=32, iou_head_depth=3). num_pos_feats must be given: its default (128)
is the real SAM's 256/2 and would not fit a 32-wide prompt encoder. Every float parameter is drawn by
make_random_checkpoints.randomise(model, seed=2201) (rel_pos tables, pos_embed and norms non-trivial).
``shared_image_embedding.positional_embedding`` and ``prompt_encoder.shared_embedding.positional_embedding`` are ONE
tied Parameter (SamModel._tied_weights_keys); randomise() sees it once (named_parameters de-duplicates), the script
asserts the tie still holds.

Writes Tests/Fixtures/hf/ (deleted and rebuilt on every run; nothing outside it is touched):
  sam_tiny/                  model.save_pretrained(dir): config.json + model.safetensors (single file). transformers 5
                             writes the tied positional embedding ONCE, as shared_image_embedding.positional_embedding
                             (202 tensors; the state dict has 203 names)
  sam_tiny_sharded/          save_pretrained(dir, max_shard_size=SHARD_SIZE): config.json,
                             model-0000k-of-0000N.safetensors (N in 3..5) and model.safetensors.index.json
                             ({"metadata": {"total_parameters", "total_size"}, "weight_map": {name: shard file}})
  sam_tiny_bin_sharded/      the same weights as PyTorch pickles, written by this script because transformers 5
                             silently ignores safe_serialization=False (it writes safetensors): config.json (copy of
                             sam_tiny's), pytorch_model-0000k-of-0000N.bin, each torch.save({name: own contiguous
                             clone}) in the default zip format, same names and shard assignment as the sharded
                             safetensors, and pytorch_model.bin.index.json = {"metadata": {"total_size": bytes of all
                             tensors}, "weight_map": {name: shard file}} (json sort_keys=True, indent=2, as transformers
                             4 wrote it)
  sam_tiny_official.pth      torch.save(state_dict) of the OFFICIAL segment_anything Sam (ImageEncoderViT,
                             PromptEncoder, MaskDecoder/TwoWayTransformer with the same sizes) holding the same
                             weights, renamed with OFFICIAL_RENAME below and loaded with load_state_dict(strict=True).
                             pixel_mean/pixel_std are NOT in it: the official Sam registers them persistent=False, so
                             its state_dict (and the released sam_vit_*.pth files) never carry them
  sam_tiny_peft_inline.pth   torch.save(peft_model.state_dict()) of the lora_hf PEFT model: base weights as
                             base_model.model.<hf name> (adapted Linear weights/biases as <module>.base_layer.weight/
                             .bias) and <module>.lora_A.default.weight / .lora_B.default.weight; r and alpha are not in
                             the file (the manifest records them). Both tied positional-embedding names are present and
                             share one storage in the pickle. Outputs = lora_hf's
  sam_tiny_samed_inline.pth  torch.save(state_dict) of the official Sam wrapped SAMed-style (see below)
  lora_hf/, lora_hf_rslora/, lora_official/
                             PeftModel.save_pretrained: adapter_config.json + adapter_model.safetensors (tensor names
                             base_model.model.<module>.lora_A.weight / lora_B.weight, no ".default"). The generic
                             README.md model card PEFT also writes is deleted
  {adapter}_merged.safetensors   for lora_hf, lora_hf_rslora, lora_official: the weights that merge_and_unload()
                             changed (merged fp32 values) under the base model's own names (HF names for the two HF
                             adapters, official names for lora_official); exactly the adapted modules' .weight
  samed_merged.safetensors   image_encoder.blocks.N.attn.qkv.weight with the SAMed q/v deltas added (official names)
  hf_image_embedding.npy     the HF vision encoder output for the image [1,32,16,16] float32 (NCHW)
  {model}_{case}_lowres.npy  low-res mask logits [num_masks,64,64] float32 for model in hf, official, lora_hf,
                             lora_hf_rslora, lora_official, samed and case in points, box, box_point (IoUs in the
                             manifest)
  manifest.json              versions, seeds, configs, tensor lists, the rename table, every file's sha256/bytes/
                             description, image and prompts, per model and case the low-res file, shape, IoUs

Inputs
------
scikit-image's chelsea.png (300x451 RGB) through the OFFICIAL segment_anything.SamPredictor of the official model:
ResizeLongestSide(256).apply_image (-> 170x256), (x - [123.675,116.28,103.53]) / [58.395,57.12,57.375], zero pad
to 256x256. The same pixel tensor, computed here and checked bit-equal to the image encoder's input during
set_image, is the HF model's pixel_values. Prompts are written in ORIGINAL image pixels (manifest
prompts_original_xy) and given to both models in the resized frame (predictor.transform.apply_coords/apply_boxes,
then float32, as SamPredictor.predict does); both prompt encoders add the +0.5 pixel-centre shift themselves.
HF inputs: input_points [1,1,N,2], input_labels [1,1,N], input_boxes [1,1,4]; pred_masks [1,1,M,64,64],
iou_scores [1,1,M]. multimask_output=True returns mask tokens 1..3, False token 0 (HF slices masks[:, :, 1:] /
[:, :, 0:1] in SamMaskDecoder.forward, as the official MaskDecoder does); checked against the hooked IoU head (all 4
tokens) and against the official predictor.

HF vs official: same weights, same outputs except the mask decoder's TwoWayAttentionBlock LayerNorms (norm1..4):
HF builds them with config.layer_norm_eps = 1e-6, the official code with nn.LayerNorm's default 1e-5 (the final
norm_final_attn is 1e-5 in both; all other norms are 1e-6 in both). The manifest records the max differences.

LoRA adapters (peft get_peft_model + LoraConfig; PEFT zero-initialises lora_B, so after get_peft_model every lora_A
is overwritten with randn/sqrt(fan_in) (fan_in = in_features, or in_channels*kh*kw for a Conv2d) and every lora_B
with 0.05*randn from a seeded generator, in named_modules order):
  lora_hf          HF model, r=4, lora_alpha=8, target_modules [qkv, lin1, lin2], lora_dropout 0, bias none; lin1/lin2
                   also match the mask decoder's transformer.layers.N.mlp.lin1/lin2 (intended)
  lora_hf_rslora   HF model, r=4, lora_alpha=8, use_rslora (scaling alpha/sqrt(r) = 4), target qkv,
                   layers_to_transform [0, 2], layers_pattern "layers": only vision_encoder.layers.0/2.attn.qkv
  lora_official    OFFICIAL Sam (an nn.Module, not a PreTrainedModel: peft 0.22 accepts it as is, no workaround;
                   adapter_config.json gets auto_mapping {base_model_class: Sam}), r=4, lora_alpha=8,
                   target [qkv, proj]. PEFT matches the LAST name component, so "proj" matches every
                   image_encoder.blocks.N.attn.proj (Linear) AND image_encoder.patch_embed.proj (the Conv2d
                   16x16/16 patch embedding: lora_A Conv2d(3,4,16,stride 16) [4,3,16,16], lora_B Conv2d(4,32,1)
                   [32,4,1,1]; delta = (B[:,:,0,0] @ A.reshape(4,-1)).reshape(32,3,16,16) * scaling), but not q_proj/
                   k_proj/v_proj/out_proj. Outputs through SamPredictor(peft_model.base_model.model) (LoRA layers are
                   injected in place)
Outputs are the unmerged PEFT model's (adapter active). merge_and_unload() is then checked to change exactly the
adapted modules' weights, to W + scaling * B @ A (checked to 1e-6 relative), and the merged model's outputs are
compared with the unmerged ones (manifest merged_vs_unmerged_max_abs).

SAMed (github.com/hitachinsk/SAMed, sam_lora_image_encoder.py): LoRA_Sam(sam, r) replaces every
image_encoder.blocks[i].attn.qkv (Linear dim->3dim) by _LoRA_qkv holding the original Linear as `qkv` and four
bias-free Linears linear_a_q (dim->r), linear_b_q (r->dim), linear_a_v, linear_b_v, whose forward is
qkv = self.qkv(x); qkv[..., :dim] += linear_b_q(linear_a_q(x)); qkv[..., -dim:] += linear_b_v(linear_a_v(x)) - no
scaling factor, k untouched. SAMed trains it inside LoRA_Sam (attribute `sam`, so its own state_dict is prefixed
"sam." and also lists the A/B Linears again as w_As.i/w_Bs.i) and saves with save_lora_parameters (w_a_%03d/
w_b_%03d + prompt encoder + mask decoder); fine-tuning scripts also torch.save the wrapped Sam's state_dict, which is
the file written here: image_encoder.blocks.N.attn.qkv.qkv.weight/.bias, .qkv.linear_a_q.weight [4,32],
.qkv.linear_b_q.weight [32,4], .qkv.linear_a_v.weight, .qkv.linear_b_v.weight, everything else under the official
names. The wrapper class here is written from that description (r=4, all 4 blocks, seed 2205).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import sys
import time
import warnings
from functools import partial
from pathlib import Path

warnings.filterwarnings("ignore", message=r"Importing from timm\.models\.")
warnings.filterwarnings("ignore", message=r"Overwriting tiny_vit_")

import numpy as np  # noqa: E402
import peft  # noqa: E402
import PIL  # noqa: E402
import safetensors  # noqa: E402
import skimage  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig,  # noqa: E402
                          SamVisionConfig)
from transformers.utils import logging as hf_logging  # noqa: E402

from segment_anything import SamPredictor  # noqa: E402
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_random_checkpoints import describe, randomise, sha  # noqa: E402
from make_random_fixtures import stats, version  # noqa: E402

REPO = HERE.parents[1]
OUT_DIR = REPO / "Tests" / "Fixtures" / "hf"
REL = "Tests/Fixtures/hf"
SKIMAGE_DATA = Path(skimage.__file__).resolve().parent / "data"
IMAGE_FILE = "chelsea.png"
IMAGE_HW = (300, 451)
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]

SEEDS = {"base": 2201, "lora_hf": 2202, "lora_hf_rslora": 2203, "lora_official": 2204, "samed": 2205}
SHARD_SIZE = "150KB"   # 553,520 bytes of tensors -> 4 shards
LORA_B_STD = 0.05
SAMED_R = 4

VISION_CFG = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=256, patch_size=16,
                  output_channels=32, window_size=6, global_attn_indexes=[1, 3], mlp_dim=128, qkv_bias=True,
                  use_rel_pos=True, num_pos_feats=16)
PROMPT_CFG = dict(hidden_size=32, image_size=256, patch_size=16, mask_input_channels=16)
DECODER_CFG = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=8, iou_head_hidden_dim=32,
                   iou_head_depth=3)
OFFICIAL_ENCODER_CFG = dict(img_size=256, patch_size=16, embed_dim=32, depth=4, num_heads=2, mlp_ratio=4,
                            out_chans=32, qkv_bias=True, use_rel_pos=True, window_size=6, global_attn_indexes=(1, 3))
OFFICIAL_PROMPT_CFG = dict(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=16)
OFFICIAL_DECODER_CFG = dict(num_multimask_outputs=3, transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32)
OFFICIAL_TRANSFORMER_CFG = dict(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8)

TIED = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")

# HF SamModel name -> official segment_anything name. Each HF name must fullmatch exactly one rule. The two tied HF
# names both map to the official prompt encoder's Gaussian matrix. SamFeedForward(proj_in, layers.*, proj_out) is the
# official MLP(layers.0 .. layers.{depth-1}); with depth 3: proj_in -> layers.0, layers.0 -> layers.1, proj_out ->
# layers.2 (asserted below).
OFFICIAL_RENAME = [
    (r"shared_image_embedding\.positional_embedding", r"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"prompt_encoder\.shared_embedding\.positional_embedding",
     r"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"vision_encoder\.pos_embed", r"image_encoder.pos_embed"),
    (r"vision_encoder\.patch_embed\.projection\.(weight|bias)", r"image_encoder.patch_embed.proj.\1"),
    (r"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"image_encoder.blocks.\1.norm\2.\3"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.(rel_pos_h|rel_pos_w)", r"image_encoder.blocks.\1.attn.\2"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"image_encoder.blocks.\1.attn.\2.\3"),
    (r"vision_encoder\.layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)", r"image_encoder.blocks.\1.mlp.\2.\3"),
    (r"vision_encoder\.neck\.conv1\.weight", r"image_encoder.neck.0.weight"),
    (r"vision_encoder\.neck\.layer_norm1\.(weight|bias)", r"image_encoder.neck.1.\1"),
    (r"vision_encoder\.neck\.conv2\.weight", r"image_encoder.neck.2.weight"),
    (r"vision_encoder\.neck\.layer_norm2\.(weight|bias)", r"image_encoder.neck.3.\1"),
    (r"prompt_encoder\.mask_embed\.conv1\.(weight|bias)", r"prompt_encoder.mask_downscaling.0.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm1\.(weight|bias)", r"prompt_encoder.mask_downscaling.1.\1"),
    (r"prompt_encoder\.mask_embed\.conv2\.(weight|bias)", r"prompt_encoder.mask_downscaling.3.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm2\.(weight|bias)", r"prompt_encoder.mask_downscaling.4.\1"),
    (r"prompt_encoder\.mask_embed\.conv3\.(weight|bias)", r"prompt_encoder.mask_downscaling.6.\1"),
    (r"prompt_encoder\.no_mask_embed\.weight", r"prompt_encoder.no_mask_embed.weight"),
    (r"prompt_encoder\.not_a_point_embed\.weight", r"prompt_encoder.not_a_point_embed.weight"),
    (r"prompt_encoder\.point_embed\.(\d+)\.weight", r"prompt_encoder.point_embeddings.\1.weight"),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
     r"\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)", r"mask_decoder.transformer.layers.\1.\2.\3.\4"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.(weight|bias)",
     r"mask_decoder.transformer.layers.\1.norm\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)",
     r"mask_decoder.transformer.layers.\1.mlp.\2.\3"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"mask_decoder.transformer.final_attn_token_to_image.\1.\2"),
    (r"mask_decoder\.transformer\.layer_norm_final_attn\.(weight|bias)",
     r"mask_decoder.transformer.norm_final_attn.\1"),
    (r"mask_decoder\.upscale_conv1\.(weight|bias)", r"mask_decoder.output_upscaling.0.\1"),
    (r"mask_decoder\.upscale_layer_norm\.(weight|bias)", r"mask_decoder.output_upscaling.1.\1"),
    (r"mask_decoder\.upscale_conv2\.(weight|bias)", r"mask_decoder.output_upscaling.3.\1"),
    (r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.(weight|bias)",
     r"mask_decoder.\1.layers.0.\2"),
    (r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.(weight|bias)",
     r"mask_decoder.\1.layers.1.\2"),
    (r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.(weight|bias)",
     r"mask_decoder.\1.layers.2.\2"),
]

# Prompts in ORIGINAL image pixels (x, y); the project's chelsea prompts (make_random_fixtures.py / make_hq_fixtures.py)
BOX = [150.0, 60.0, 330.0, 270.0]   # the cat's face
POS = [240.0, 150.0]                # between the eyes
NEG = [170.0, 80.0]                 # the left eye (on the cat, inside the box)
NOSE = [262.0, 238.0]               # the nose
CASES = {
    "points": dict(point_coords=[POS, NEG], point_labels=[1, 0], box=None, multimask_output=True,
                   description="one positive point (between the eyes) and one negative point (left eye), "
                               "multimask_output=True: mask tokens 1..3"),
    "box": dict(point_coords=None, point_labels=None, box=BOX, multimask_output=False,
                description="a box around the cat's face, multimask_output=False: mask token 0"),
    "box_point": dict(point_coords=[NOSE], point_labels=[1], box=BOX, multimask_output=False,
                      description="the face box plus one positive point (the nose), multimask_output=False: token 0"),
}

ADAPTERS = {
    "lora_hf": dict(base="hf", config=dict(r=4, lora_alpha=8, target_modules=["qkv", "lin1", "lin2"],
                                           lora_dropout=0.0, bias="none")),
    "lora_hf_rslora": dict(base="hf", config=dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["qkv"],
                                                  layers_to_transform=[0, 2], layers_pattern="layers")),
    "lora_official": dict(base="official", config=dict(r=4, lora_alpha=8, target_modules=["qkv", "proj"])),
}
PEFT_PREFIX = "base_model.model."


# ---------------------------------------------------------------------------------------------- files

class Files:
    """Every written file: bytes, sha256, description (relative to OUT_DIR)."""

    def __init__(self):
        self.entries: dict[str, dict] = {}

    def add(self, path: Path, description: str, **extra) -> str:
        rel = path.relative_to(OUT_DIR).as_posix()
        self.entries[rel] = {"bytes": path.stat().st_size, "sha256": sha(path), "description": description, **extra}
        return rel

    def npy(self, name: str, array: np.ndarray, description: str) -> str:
        array = np.ascontiguousarray(array)
        assert array.dtype == np.float32 and np.isfinite(array).all(), name
        path = OUT_DIR / name
        np.save(path, array, allow_pickle=False)
        return self.add(path, description, shape=list(array.shape), dtype="float32")


def clone_sd(sd: dict) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def safetensors_names(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


# ---------------------------------------------------------------------------------------------- models

def hf_config() -> SamConfig:
    return SamConfig(vision_config=SamVisionConfig(**VISION_CFG),
                     prompt_encoder_config=SamPromptEncoderConfig(**PROMPT_CFG),
                     mask_decoder_config=SamMaskDecoderConfig(**DECODER_CFG))


def check_tied(model: SamModel) -> None:
    a = model.shared_image_embedding.positional_embedding
    b = model.prompt_encoder.shared_embedding.positional_embedding
    assert a is b, "positional embeddings are not tied"


def build_hf() -> SamModel:
    model = SamModel(hf_config()).eval()
    check_tied(model)
    randomise(model, SEEDS["base"])
    a = model.shared_image_embedding.positional_embedding
    b = model.prompt_encoder.shared_embedding.positional_embedding
    if a is not b:  # randomise broke the tie: re-tie (not expected, named_parameters de-duplicates)
        with torch.no_grad():
            b.copy_(a)
    check_tied(model)
    sd = model.state_dict()
    rel = {k: v for k, v in sd.items() if "rel_pos" in k}
    assert len(rel) == 2 * VISION_CFG["num_hidden_layers"] and all(bool((v != 0).all()) for v in rel.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


def build_official() -> Sam:
    enc = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **OFFICIAL_ENCODER_CFG)
    prompt = PromptEncoder(**OFFICIAL_PROMPT_CFG)
    dec = MaskDecoder(transformer=TwoWayTransformer(**OFFICIAL_TRANSFORMER_CFG), **OFFICIAL_DECODER_CFG)
    return Sam(image_encoder=enc, prompt_encoder=prompt, mask_decoder=dec).eval()


def official_name(hf_name: str) -> str:
    hits = [(p, r) for p, r in OFFICIAL_RENAME if re.fullmatch(p, hf_name)]
    assert len(hits) == 1, (hf_name, hits)
    return re.sub(hits[0][0], hits[0][1], hf_name)


def to_official(hf_sd: dict) -> tuple[dict, dict]:
    assert DECODER_CFG["iou_head_depth"] == 3  # the proj_in/layers.0/proj_out rules assume depth 3
    rename = {k: official_name(k) for k in hf_sd}
    out = {}
    for k, v in hf_sd.items():
        o = rename[k]
        if o in out:
            assert torch.equal(out[o], v) and k in TIED, (k, o)
            continue
        out[o] = v.detach().clone().contiguous()
    return out, rename


# ---------------------------------------------------------------------------------------------- running

def model_frame(predictor: SamPredictor, case: dict, orig_hw) -> dict:
    t = predictor.transform
    pts = None if case["point_coords"] is None else t.apply_coords(np.array(case["point_coords"], dtype=np.float64),
                                                                   orig_hw)
    box = None if case["box"] is None else t.apply_boxes(np.array(case["box"], dtype=np.float64), orig_hw).reshape(-1)
    return {"point_coords": pts, "box": box}


def run_hf(model, pixel_values, mf: dict, case: dict, head) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HF SamModel (or a PeftModel around one) forward; returns low-res logits [M,64,64], IoUs [M] and the hooked IoU
    head output for all 4 mask tokens."""
    kw = {}
    if mf["point_coords"] is not None:
        kw["input_points"] = torch.as_tensor(mf["point_coords"], dtype=torch.float32).view(1, 1, -1, 2)
        kw["input_labels"] = torch.as_tensor(case["point_labels"], dtype=torch.int64).view(1, 1, -1)
    if mf["box"] is not None:
        kw["input_boxes"] = torch.as_tensor(mf["box"], dtype=torch.float32).view(1, 1, 4)
    got = {}
    h = head.register_forward_hook(lambda m, i, o: got.__setitem__("iou_all", o.detach().clone()))
    out = model(pixel_values=pixel_values, multimask_output=case["multimask_output"], **kw)
    h.remove()
    m = 3 if case["multimask_output"] else 1
    assert out.pred_masks.shape == (1, 1, m, 64, 64) and out.iou_scores.shape == (1, 1, m)
    iou_all = got["iou_all"].view(4)
    sel = iou_all[1:4] if case["multimask_output"] else iou_all[0:1]
    assert torch.equal(out.iou_scores.view(-1), sel)
    return out.pred_masks[0, 0].numpy().copy(), out.iou_scores.view(-1).numpy().copy(), iou_all.numpy().copy()


def run_official(predictor: SamPredictor, case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    got = {}
    head = predictor.model.mask_decoder.iou_prediction_head
    h = head.register_forward_hook(lambda m, i, o: got.__setitem__("iou_all", o.detach().clone()))
    _, iou, low = predictor.predict(
        point_coords=None if case["point_coords"] is None else np.array(case["point_coords"], dtype=np.float64),
        point_labels=None if case["point_labels"] is None else np.array(case["point_labels"]),
        box=None if case["box"] is None else np.array(case["box"], dtype=np.float64),
        multimask_output=case["multimask_output"], return_logits=True)
    h.remove()
    m = 3 if case["multimask_output"] else 1
    assert low.shape == (m, 64, 64) and low.dtype == np.float32 and iou.shape == (m,)
    iou_all = got["iou_all"].view(4)
    sel = iou_all[1:4] if case["multimask_output"] else iou_all[0:1]
    assert np.array_equal(iou, sel.numpy())
    return low.copy(), iou.copy(), iou_all.numpy().copy()


def record_outputs(tag: str, results: dict, files: Files, what: str) -> dict:
    cases = {}
    for name, (low, iou, iou_all) in results.items():
        mm = CASES[name]["multimask_output"]
        fname = files.npy(f"{tag}_{name}_lowres.npy", low,
                          f"{what}: low-res mask logits [{low.shape[0]},64,64] for case '{name}' "
                          f"(mask tokens {'1..3' if mm else '0'})")
        cases[name] = {"lowres_file": fname, "shape": list(low.shape), "iou_scores": [float(v) for v in iou],
                       "iou_all_mask_tokens": [float(v) for v in iou_all], "multimask_output": mm,
                       "mask_tokens": [1, 2, 3] if mm else [0], "lowres_stats": stats(low)}
    return cases


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# ---------------------------------------------------------------------------------------------- LoRA

def randomise_lora(model: nn.Module, seed: int) -> list[str]:
    """Overwrite every lora_A (randn / sqrt(fan_in)) and lora_B (0.05 randn), in named_modules order. Returns the
    adapted modules' names relative to the base model."""
    g = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not isinstance(mod, LoraLayer):
                continue
            a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=g) / (a[0].numel() ** 0.5))
            b.copy_(LORA_B_STD * torch.randn(b.shape, generator=g))
            assert name.startswith(PEFT_PREFIX)
            names.append(name[len(PEFT_PREFIX):])
    return names


def lora_delta(mod: LoraLayer) -> torch.Tensor:
    """W' - W as this script states it (checked against PEFT's merge)."""
    a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
    s = mod.scaling["default"]
    w = mod.get_base_layer().weight
    if a.dim() == 2:
        return s * (b @ a)
    return s * (b[:, :, 0, 0] @ a.reshape(a.shape[0], -1)).reshape(w.shape)


def base_names(peft_sd: dict) -> dict:
    """PeftModel state dict -> base model names (prefix stripped, '.base_layer' removed, LoRA tensors dropped)."""
    out = {}
    for k, v in peft_sd.items():
        if ".lora_" in k:
            continue
        assert k.startswith(PEFT_PREFIX), k
        out[k[len(PEFT_PREFIX):].replace(".base_layer.", ".")] = v.detach().clone()
    return out


def make_adapter(tag: str, base_model: nn.Module, pixel_values, official_image, files: Files, orig_hw) -> tuple:
    spec = ADAPTERS[tag]
    cfg = LoraConfig(**spec["config"])
    pm = get_peft_model(copy.deepcopy(base_model), cfg)
    pm.eval()
    adapted = randomise_lora(pm, SEEDS[tag])
    base = pm.base_model.model
    lora_mods = {n[len(PEFT_PREFIX):]: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}
    scalings = {n: float(m.scaling["default"]) for n, m in lora_mods.items()}
    want_scale = cfg.lora_alpha / (cfg.r ** 0.5 if cfg.use_rslora else cfg.r)
    assert all(abs(s - want_scale) < 1e-12 for s in scalings.values()), scalings
    if tag == "lora_hf_rslora":
        assert adapted == ["vision_encoder.layers.0.attn.qkv", "vision_encoder.layers.2.attn.qkv"], adapted

    out_dir = OUT_DIR / tag
    pm.save_pretrained(str(out_dir))
    readme = out_dir / "README.md"
    if readme.exists():
        readme.unlink()
    cfg_json = json.loads((out_dir / "adapter_config.json").read_text())
    st_path = out_dir / "adapter_model.safetensors"
    adapter_tensors = safetensors_names(st_path)
    expect = {f"{PEFT_PREFIX}{n}.lora_{ab}.weight" for n in adapted for ab in ("A", "B")}
    assert set(adapter_tensors) == expect, set(adapter_tensors) ^ expect

    # outputs of the unmerged model (adapter active)
    results = {}
    if spec["base"] == "hf":
        mf_pred = official_image["predictor"]
        for name, case in CASES.items():
            results[name] = run_hf(pm, pixel_values, model_frame(mf_pred, case, orig_hw), case,
                                   base.mask_decoder.iou_prediction_head)
    else:
        predictor = SamPredictor(base)
        predictor.set_image(official_image["image"], image_format="RGB")
        for name, case in CASES.items():
            results[name] = run_official(predictor, case)

    inline = None
    if tag == "lora_hf":
        inline = OUT_DIR / "sam_tiny_peft_inline.pth"
        torch.save(pm.state_dict(), inline)
        inline_sd = torch.load(inline, map_location="cpu", weights_only=True)
        assert list(inline_sd) == list(pm.state_dict())

    # merge: exactly the adapted modules' weights change, by scaling * B @ A
    before = base_names(pm.state_dict())
    deltas = {n + ".weight": lora_delta(m).clone() for n, m in lora_mods.items()}
    merged_model = pm.merge_and_unload()
    after = {k: v.detach().clone() for k, v in merged_model.state_dict().items()}
    assert list(after) == list(before), set(after) ^ set(before)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert sorted(changed) == sorted(n + ".weight" for n in adapted), (changed, adapted)
    merge_rel = {}
    for k in changed:
        ref = before[k].double() + deltas[k].double()
        rel = float((after[k].double() - ref).abs().max() / ref.abs().max())
        assert rel < 1e-6, (k, rel)
        merge_rel[k] = rel
    merged_path = OUT_DIR / f"{tag}_merged.safetensors"
    save_file({k: after[k].contiguous() for k in changed}, str(merged_path), metadata={"format": "pt"})
    if spec["base"] == "hf":
        check_tied(merged_model)

    # merged model outputs vs unmerged
    merged_diff = {}
    if spec["base"] == "hf":
        merged_model.eval()
        for name, case in CASES.items():
            low, iou, _ = run_hf(merged_model, pixel_values, model_frame(official_image["predictor"], case, orig_hw),
                                 case, merged_model.mask_decoder.iou_prediction_head)
            merged_diff[name] = {"lowres": max_abs(low, results[name][0]), "iou": max_abs(iou, results[name][1])}
    else:
        predictor = SamPredictor(merged_model)
        predictor.set_image(official_image["image"], image_format="RGB")
        for name, case in CASES.items():
            low, iou, _ = run_official(predictor, case)
            merged_diff[name] = {"lowres": max_abs(low, results[name][0]), "iou": max_abs(iou, results[name][1])}

    return dict(results=results, adapted=adapted, cfg_json=cfg_json, adapter_tensors=adapter_tensors,
                changed=changed, merge_rel=merge_rel, merged_path=merged_path, merged_diff=merged_diff,
                scalings=scalings, inline=inline, lora_mods=lora_mods)


# ---------------------------------------------------------------------------------------------- SAMed

class SamedLoRAQKV(nn.Module):
    """SAMed's _LoRA_qkv as described in the module docstring (written here from that description)."""

    def __init__(self, qkv: nn.Linear, r: int):
        super().__init__()
        dim = qkv.in_features
        self.qkv = qkv
        self.linear_a_q = nn.Linear(dim, r, bias=False)
        self.linear_b_q = nn.Linear(r, dim, bias=False)
        self.linear_a_v = nn.Linear(dim, r, bias=False)
        self.linear_b_v = nn.Linear(r, dim, bias=False)
        self.dim = dim

    def forward(self, x):
        qkv = self.qkv(x)
        qkv[..., :self.dim] += self.linear_b_q(self.linear_a_q(x))
        qkv[..., -self.dim:] += self.linear_b_v(self.linear_a_v(x))
        return qkv


def make_samed(official: Sam) -> tuple[Sam, dict]:
    sam = copy.deepcopy(official)
    g = torch.Generator().manual_seed(SEEDS["samed"])
    merged = {}
    with torch.no_grad():
        for i, blk in enumerate(sam.image_encoder.blocks):
            wrap = SamedLoRAQKV(blk.attn.qkv, SAMED_R)
            for lin in (wrap.linear_a_q, wrap.linear_b_q, wrap.linear_a_v, wrap.linear_b_v):
                w = lin.weight
                if lin.out_features == SAMED_R:   # A: dim -> r
                    w.copy_(torch.randn(w.shape, generator=g) / (w.shape[1] ** 0.5))
                else:                             # B: r -> dim
                    w.copy_(LORA_B_STD * torch.randn(w.shape, generator=g))
            blk.attn.qkv = wrap
            d = wrap.dim
            w = wrap.qkv.weight.detach().clone()
            w[:d] += wrap.linear_b_q.weight @ wrap.linear_a_q.weight
            w[-d:] += wrap.linear_b_v.weight @ wrap.linear_a_v.weight
            merged[f"image_encoder.blocks.{i}.attn.qkv.weight"] = w.contiguous()
    return sam.eval(), merged


# ---------------------------------------------------------------------------------------------- main

def main() -> None:
    # PEFT keeps target_modules as a set and writes it to adapter_config.json in set order, which follows Python's
    # string hashing: run under a fixed PYTHONHASHSEED so the file (and its sha256) is reproducible.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))
    t0 = time.time()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    files = Files()
    notes: list[str] = []

    # ---------------- base HF model and its three layouts
    hf = build_hf()
    hf_sd = clone_sd(hf.state_dict())
    hf_tensors = describe(hf_sd)

    single = OUT_DIR / "sam_tiny"
    hf.save_pretrained(str(single))
    assert sorted(p.name for p in single.iterdir()) == ["config.json", "model.safetensors"]
    single_names = safetensors_names(single / "model.safetensors")
    assert set(single_names) == set(hf_sd) - {TIED[1]}, set(single_names) ^ set(hf_sd)
    with safe_open(str(single / "model.safetensors"), "pt") as f:
        single_meta = f.metadata()
    reloaded = SamModel.from_pretrained(str(single)).eval()
    check_tied(reloaded)
    assert all(torch.equal(v, hf_sd[k]) for k, v in reloaded.state_dict().items())

    sharded = OUT_DIR / "sam_tiny_sharded"
    hf.save_pretrained(str(sharded), max_shard_size=SHARD_SIZE)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard_files = sorted(set(index["weight_map"].values()))
    assert 3 <= len(shard_files) <= 5, shard_files
    assert set(index["weight_map"]) == set(single_names)
    reloaded = SamModel.from_pretrained(str(sharded)).eval()
    check_tied(reloaded)
    assert all(torch.equal(v, hf_sd[k]) for k, v in reloaded.state_dict().items())

    # .bin shards, transformers 4 style, same names and shard assignment
    bin_dir = OUT_DIR / "sam_tiny_bin_sharded"
    bin_dir.mkdir()
    shutil.copyfile(single / "config.json", bin_dir / "config.json")
    n = len(shard_files)
    bin_map = {}
    total_size = 0
    for k_idx, sf in enumerate(shard_files, start=1):
        names = [k for k in hf_sd if index["weight_map"].get(k) == sf]
        bf = f"pytorch_model-{k_idx:05d}-of-{n:05d}.bin"
        torch.save({k: hf_sd[k].detach().clone().contiguous() for k in names}, bin_dir / bf)
        for k in names:
            bin_map[k] = bf
            total_size += hf_sd[k].numel() * hf_sd[k].element_size()
    (bin_dir / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total_size}, "weight_map": bin_map}, indent=2, sort_keys=True) + "\n")
    for bf in sorted(set(bin_map.values())):
        d = torch.load(bin_dir / bf, map_location="cpu", weights_only=True)
        assert all(torch.equal(v, hf_sd[k]) for k, v in d.items())
        storages = {v.untyped_storage().data_ptr() for v in d.values()}
        assert len(storages) == len(d), "bin tensors share storage"
    bin_loads = "not tried"
    try:
        m = SamModel.from_pretrained(str(bin_dir), use_safetensors=False).eval()
        check_tied(m)
        assert all(torch.equal(v, hf_sd[k]) for k, v in m.state_dict().items())
        bin_loads = "SamModel.from_pretrained(dir, use_safetensors=False) loads it; all tensors equal"
    except Exception as e:  # noqa: BLE001
        bin_loads = f"SamModel.from_pretrained failed: {type(e).__name__}: {e}"
        notes.append(bin_loads)

    # ---------------- official model
    official_sd, rename = to_official(hf_sd)
    official = build_official()
    off_keys = list(official.state_dict())
    assert set(off_keys) == set(official_sd), set(off_keys) ^ set(official_sd)
    assert "pixel_mean" not in official.state_dict()
    official.load_state_dict(official_sd, strict=True)
    official.eval()
    assert torch.equal(official.pixel_mean.view(-1), torch.tensor(PIXEL_MEAN))
    assert torch.equal(official.pixel_std.view(-1), torch.tensor(PIXEL_STD))
    official_path = OUT_DIR / "sam_tiny_official.pth"
    torch.save(official.state_dict(), official_path)
    off_loaded = torch.load(official_path, map_location="cpu", weights_only=True)
    assert list(off_loaded) == off_keys and all(torch.equal(off_loaded[k], official_sd[k]) for k in off_keys)

    # ---------------- image and preprocessing (official predictor)
    src = SKIMAGE_DATA / IMAGE_FILE
    with Image.open(src) as im:
        pil_mode = im.mode
        image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    assert image.shape == (*IMAGE_HW, 3) and image.dtype == np.uint8
    assert np.array_equal(image, skimage.data.chelsea())
    predictor = SamPredictor(official)
    seen = {}
    hook = official.image_encoder.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone()))
    predictor.set_image(image, image_format="RGB")
    hook.remove()
    orig_hw = tuple(predictor.original_size)
    input_hw = tuple(predictor.input_size)
    resized = predictor.transform.apply_image(image)
    assert resized.shape[:2] == input_hw
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)
    x = (x - mean) / std
    pixel_values = F.pad(x, (0, 256 - input_hw[1], 0, 256 - input_hw[0]))
    assert pixel_values.shape == (1, 3, 256, 256)
    assert torch.equal(pixel_values, seen["x"]), "pixel tensor differs from the official encoder input"

    # ---------------- base outputs: HF and official
    hf_emb = hf.get_image_embeddings(pixel_values)
    emb_diff = float((hf_emb - predictor.features).abs().max())
    emb_file = files.npy("hf_image_embedding.npy", hf_emb.numpy(),
                         "HF SamModel.get_image_embeddings(pixel_values) [1,32,16,16] float32 NCHW (base model)")
    head = hf.mask_decoder.iou_prediction_head
    frames = {name: model_frame(predictor, case, orig_hw) for name, case in CASES.items()}
    hf_res = {name: run_hf(hf, pixel_values, frames[name], case, head) for name, case in CASES.items()}
    off_res = {name: run_official(predictor, case) for name, case in CASES.items()}
    off_vs_hf = {}
    for name in CASES:
        off_vs_hf[name] = {"lowres_max_abs": max_abs(hf_res[name][0], off_res[name][0]),
                           "iou_max_abs": max_abs(hf_res[name][1], off_res[name][1]),
                           "iou_all_tokens_max_abs": max_abs(hf_res[name][2], off_res[name][2])}
        assert off_vs_hf[name]["lowres_max_abs"] < 1e-2, off_vs_hf
    # the eps explanation: with the official decoder's block norms set to 1e-6 the two agree to float rounding
    off_eps = copy.deepcopy(official)
    for layer in off_eps.mask_decoder.transformer.layers:
        for nm in ("norm1", "norm2", "norm3", "norm4"):
            getattr(layer, nm).eps = 1e-6
    pred_eps = SamPredictor(off_eps)
    pred_eps.set_image(image, image_format="RGB")
    eps_matched = {name: max_abs(run_official(pred_eps, case)[0], hf_res[name][0]) for name, case in CASES.items()}
    del off_eps, pred_eps

    hf_cases = record_outputs("hf", hf_res, files, "base HF SamModel (sam_tiny*)")
    off_cases = record_outputs("official", off_res, files, "base official segment_anything Sam "
                               "(sam_tiny_official.pth) through SamPredictor.predict(return_logits=True)")

    # ---------------- LoRA adapters
    official_image = {"image": image, "predictor": predictor}
    adapters = {}
    for tag, spec in ADAPTERS.items():
        base = hf if spec["base"] == "hf" else official
        adapters[tag] = make_adapter(tag, base, pixel_values, official_image, files, orig_hw)
        check_tied(hf)
    # the base models were deep-copied: still the saved weights
    assert all(torch.equal(v, hf_sd[k]) for k, v in hf.state_dict().items())
    assert all(torch.equal(v, official_sd[k]) for k, v in official.state_dict().items())

    # ---------------- SAMed
    samed, samed_merged = make_samed(official)
    samed_path = OUT_DIR / "sam_tiny_samed_inline.pth"
    samed_sd = samed.state_dict()
    torch.save(samed_sd, samed_path)
    samed_loaded = torch.load(samed_path, map_location="cpu", weights_only=True)
    assert list(samed_loaded) == list(samed_sd)
    samed_pred = SamPredictor(samed)
    samed_pred.set_image(image, image_format="RGB")
    samed_res = {name: run_official(samed_pred, case) for name, case in CASES.items()}
    samed_merged_path = OUT_DIR / "samed_merged.safetensors"
    save_file(samed_merged, str(samed_merged_path), metadata={"format": "pt"})
    merged_official = copy.deepcopy(official)
    for k, v in samed_merged.items():
        merged_official.state_dict()[k].copy_(v)
    mp = SamPredictor(merged_official)
    mp.set_image(image, image_format="RGB")
    samed_merge_diff = {}
    for name, case in CASES.items():
        low, iou, _ = run_official(mp, case)
        samed_merge_diff[name] = {"lowres": max_abs(low, samed_res[name][0]), "iou": max_abs(iou, samed_res[name][1])}
    del merged_official, mp

    # ---------------- files
    files.add(single / "config.json", "SamModel config (save_pretrained); vision num_pos_feats=16")
    files.add(single / "model.safetensors", "all base weights, single file (tied positional embedding once)",
              tensors=len(single_names), metadata=single_meta)
    files.add(sharded / "config.json", "same as sam_tiny/config.json")
    files.add(sharded / "model.safetensors.index.json", "safetensors shard index (save_pretrained)")
    for sf in shard_files:
        files.add(sharded / sf, "safetensors shard (tensor names: see the index)",
                  tensors=sum(v == sf for v in index["weight_map"].values()))
    files.add(bin_dir / "config.json", "copy of sam_tiny/config.json")
    files.add(bin_dir / "pytorch_model.bin.index.json", "transformers-4-style .bin shard index, written by this script")
    for bf in sorted(set(bin_map.values())):
        files.add(bin_dir / bf, "torch.save(dict name -> contiguous fp32 clone), zip format (tensor names: see the "
                                "index)", tensors=sum(v == bf for v in bin_map.values()))
    files.add(official_path, "official segment_anything Sam state_dict (renamed HF weights), torch.save, fp32, "
                             "no pixel_mean/pixel_std (non-persistent buffers)")
    for tag, a in adapters.items():
        files.add(OUT_DIR / tag / "adapter_config.json", f"{tag}: PEFT adapter config (save_pretrained)")
        files.add(OUT_DIR / tag / "adapter_model.safetensors", f"{tag}: PEFT adapter weights (save_pretrained)")
        files.add(a["merged_path"], f"{tag}: weights changed by merge_and_unload() (merged fp32 values) under the "
                                    "base model's own names")
    files.add(OUT_DIR / "sam_tiny_peft_inline.pth", "torch.save(PeftModel.state_dict()) of lora_hf (base + LoRA in "
                                                    "one file, PEFT in-memory names with .base_layer and .default)")
    files.add(samed_path, "torch.save(state_dict) of the official Sam with SAMed _LoRA_qkv wrappers on all 4 blocks")
    files.add(samed_merged_path, "SAMed: merged image_encoder.blocks.N.attn.qkv.weight (q rows 0:32 += Bq@Aq, v rows "
                                 "64:96 += Bv@Av, no scaling)")

    # ---------------- manifest
    def prompt_record(name):
        case = CASES[name]
        mf = frames[name]
        return {
            "description": case["description"],
            "multimask_output": case["multimask_output"],
            "prompts_original_xy": {"point_coords": case["point_coords"], "point_labels": case["point_labels"],
                                    "box_xyxy": case["box"]},
            "prompts_model_frame_xy": {
                "point_coords": None if mf["point_coords"] is None else [[float(v) for v in p] for p in
                                                                         mf["point_coords"]],
                "box_xyxy": None if mf["box"] is None else [float(v) for v in mf["box"]]},
        }

    peft_inline_sd = torch.load(OUT_DIR / "sam_tiny_peft_inline.pth", map_location="cpu", weights_only=True)
    shared = [k for k in peft_inline_sd if k.endswith("positional_embedding")]
    models = {
        "hf": {"description": "base HF SamModel", "checkpoints": ["sam_tiny/", "sam_tiny_sharded/",
                                                                 "sam_tiny_bin_sharded/"],
               "image_embedding_file": emb_file, "cases": hf_cases},
        "official": {"description": "base official Sam (same weights; decoder block LayerNorm eps 1e-5)",
                     "checkpoints": ["sam_tiny_official.pth"], "cases": off_cases},
    }
    adapter_meta = {}
    for tag, a in adapters.items():
        spec = ADAPTERS[tag]
        c = a["cfg_json"]
        models[tag] = {"description": f"{tag} PEFT model, unmerged, adapter active",
                       "base": "hf" if spec["base"] == "hf" else "official",
                       "cases": record_outputs(tag, a["results"], files, f"{tag} (unmerged PEFT, adapter active)")}
        adapter_meta[tag] = {
            "dir": f"{tag}/",
            "base_model": "hf (sam_tiny)" if spec["base"] == "hf" else "official (sam_tiny_official.pth)",
            "seed": SEEDS[tag],
            "lora_config_args": spec["config"],
            "peft_type": c["peft_type"], "r": c["r"], "lora_alpha": c["lora_alpha"], "use_rslora": c["use_rslora"],
            "target_modules": c["target_modules"], "layers_to_transform": c["layers_to_transform"],
            "layers_pattern": c["layers_pattern"], "bias": c["bias"], "fan_in_fan_out": c["fan_in_fan_out"],
            "use_dora": c["use_dora"], "rank_pattern": c["rank_pattern"], "alpha_pattern": c["alpha_pattern"],
            "scaling": a["scalings"][a["adapted"][0]],
            "scaling_rule": "lora_alpha / sqrt(r)" if c["use_rslora"] else "lora_alpha / r",
            "adapted_modules": a["adapted"],
            "adapted_module_types": {n: type(m.get_base_layer()).__name__ for n, m in a["lora_mods"].items()},
            "adapter_tensors": a["adapter_tensors"],
            "adapter_tensor_naming": "base_model.model.<module>.lora_A.weight [r, in] / lora_B.weight [out, r] "
                                     "(Conv2d: lora_A [r, in_ch, kh, kw], lora_B [out_ch, r, 1, 1]); no '.default'",
            "merged_file": a["merged_path"].name,
            "merged_tensors": sorted(a["changed"]),
            "merge_check": "merge_and_unload() changed exactly these tensors (all other state-dict tensors bit-equal); "
                           "each equals W + scaling * (B @ A) to the relative error given",
            "merge_relative_error": a["merge_rel"],
            "merged_vs_unmerged_max_abs": a["merged_diff"],
        }
    lh = adapter_meta["lora_hf"]
    inline_lora = {k: lh[k] for k in ("r", "lora_alpha", "use_rslora", "scaling")}
    models["peft_inline"] = dict({"description": "sam_tiny_peft_inline.pth: the lora_hf model itself",
                                  "outputs_same_as": "lora_hf"}, **inline_lora)
    models["samed"] = {"description": "official Sam with SAMed LoRA qkv wrappers (sam_tiny_samed_inline.pth)",
                       "base": "official",
                       "cases": record_outputs("samed", samed_res, files, "SAMed-wrapped official Sam through "
                                               "SamPredictor.predict(return_logits=True)")}

    manifest = {
        "description": "One small random SAM in the Hugging Face layouts (single/sharded safetensors, sharded .bin), "
                       "the official segment_anything layout, PEFT LoRA adapters (HF and official targets, rsLoRA, "
                       "layers_to_transform), a PEFT inline checkpoint and a SAMed inline checkpoint, with low-res "
                       "logits and IoUs for 3 prompt cases on chelsea.png. Generated by "
                       "Tests/Reference/make_hf_fixtures.py (see its docstring).",
        "generator": "Tests/Reference/make_hf_fixtures.py",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__,
                     "segment_anything": version("segment-anything"), "numpy": np.__version__,
                     "safetensors": safetensors.__version__, "torchvision": torchvision.__version__,
                     "pillow": PIL.__version__, "scikit-image": skimage.__version__},
        "seeds": dict(SEEDS, lora_b_std=LORA_B_STD,
                      note="base: make_random_checkpoints.randomise(model, seed); adapters: lora_A = "
                           "randn/sqrt(fan_in), lora_B = 0.05*randn from torch.Generator().manual_seed(seed), "
                           "named_modules order; samed: per block a_q, b_q, a_v, b_v in that order, same "
                           "distributions"),
        "determinism": "CPU, fp32, torch.set_num_threads(1), torch.use_deterministic_algorithms(True), "
                       f"HF attention implementation '{hf.config._attn_implementation}'",
        "configs": {
            "hf": {"vision_config": VISION_CFG, "prompt_encoder_config": PROMPT_CFG, "mask_decoder_config": DECODER_CFG,
                   "config_json": json.loads((single / "config.json").read_text())},
            "official": {"image_encoder": dict(OFFICIAL_ENCODER_CFG,
                                               global_attn_indexes=list(OFFICIAL_ENCODER_CFG["global_attn_indexes"]),
                                               norm_layer="LayerNorm(eps=1e-6)"),
                         "prompt_encoder": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in OFFICIAL_PROMPT_CFG.items()},
                         "mask_decoder": dict(OFFICIAL_DECODER_CFG,
                                              transformer=dict(OFFICIAL_TRANSFORMER_CFG, attention_downsample_rate=2))},
            "layer_norm_eps": {
                "vision blocks, neck, prompt mask_downscaling, decoder output_upscaling": "1e-6 in both",
                "mask_decoder.transformer.layers.N.norm1..4 (HF layer_norm1..4)": "HF 1e-6 (mask_decoder_config."
                                                                                 "layer_norm_eps), official 1e-5",
                "mask_decoder.transformer.norm_final_attn (HF layer_norm_final_attn)": "1e-5 in both",
            },
        },
        "hf_state_dict": {"tensors": hf_tensors, "count": len(hf_tensors),
                          "tied": {"names": list(TIED), "same_parameter": True,
                                   "saved_as": TIED[0] + " only (safetensors and .bin files: 202 tensors)"},
                          "safetensors_tensors": len(single_names)},
        "official_state_dict": {"tensors": describe(official.state_dict()), "count": len(off_keys),
                                "pixel_mean_std_in_file": False},
        "official_rename": {"rules": [[p, r] for p, r in OFFICIAL_RENAME], "map": rename,
                            "note": "HF name -> official name; rules are Python re fullmatch/sub; both tied HF names "
                                    "map to prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"},
        "official_vs_hf": {"per_case": off_vs_hf,
                           "lowres_max_abs": max(v["lowres_max_abs"] for v in off_vs_hf.values()),
                           "iou_max_abs": max(v["iou_max_abs"] for v in off_vs_hf.values()),
                           "image_embedding_max_abs": emb_diff,
                           "lowres_max_abs_with_official_block_norm_eps_set_to_1e-6": eps_matched,
                           "note": "the difference comes from the mask decoder's TwoWayAttentionBlock LayerNorm eps: "
                                   "HF 1e-6, official nn.LayerNorm default 1e-5; with the official eps patched to 1e-6 "
                                   "the logits agree to float rounding"},
        "image": {"name": IMAGE_FILE, "source": "scikit-image data directory (== skimage.data.chelsea())",
                  "source_sha256": sha(src), "source_pil_mode": pil_mode, "original_hw": list(orig_hw),
                  "input_hw": list(input_hw), "padded_hw": [256, 256], "pixel_mean": PIXEL_MEAN,
                  "pixel_std": PIXEL_STD,
                  "preprocessing": "segment_anything ResizeLongestSide(256).apply_image (PIL resize, bilinear), "
                                   "(x - mean) / std per channel, zero pad bottom/right to 256x256; the HF model gets "
                                   "the identical tensor as pixel_values",
                  "pixel_values_stats": stats(pixel_values.numpy())},
        "prompts": {name: prompt_record(name) for name in CASES},
        "prompt_convention": "prompts_original_xy in original image pixels (x, y), boxes xyxy; prompts_model_frame_xy "
                             "= ResizeLongestSide.apply_coords/apply_boxes (x*256/451, y*170/300), float64 here, cast "
                             "to float32 before the models; both prompt encoders add +0.5 themselves. HF gets "
                             "input_points [1,1,N,2], input_labels [1,1,N], input_boxes [1,1,4]; points are not padded "
                             "when a box is present (both implementations)",
        "multimask": "HF SamModel multimask_output=True returns mask tokens 1..3 (3 masks, iou_scores = IoU head "
                     "outputs 1..3), False returns token 0, exactly as the official MaskDecoder/SamPredictor; checked "
                     "per case against the hooked IoU head and against the official predictor",
        "models": models,
        "adapters": adapter_meta,
        "peft_inline": {
            "file": "sam_tiny_peft_inline.pth", "outputs_same_as": "lora_hf", **inline_lora,
            "tensors": describe(peft_inline_sd),
            "naming": "base_model.model.<hf name>; adapted modules: <module>.base_layer.weight/.bias, "
                      "<module>.lora_A.default.weight, <module>.lora_B.default.weight",
            "shared_storage": {"names": shared,
                               "one_storage": len({peft_inline_sd[k].untyped_storage().data_ptr()
                                                   for k in shared}) == 1}},
        "samed_inline": {
            "file": "sam_tiny_samed_inline.pth", "r": SAMED_R, "seed": SEEDS["samed"], "blocks": [0, 1, 2, 3],
            "scaling": 1.0,
            "tensors": describe(samed_sd),
            "forward": "qkv = qkv.qkv(x); qkv[..., :dim] += linear_b_q(linear_a_q(x)); qkv[..., -dim:] += "
                       "linear_b_v(linear_a_v(x)); dim = 32, no scaling, k rows untouched",
            "merged_file": "samed_merged.safetensors", "merged_tensors": sorted(samed_merged),
            "merged_vs_wrapped_max_abs": samed_merge_diff},
        "notes": notes + [
            "transformers 5 save_pretrained writes the tied positional embedding once "
            "(shared_image_embedding.positional_embedding); prompt_encoder.shared_embedding.positional_embedding is "
            "absent from every safetensors/.bin file and restored by tying",
            "transformers 5 ignores save_pretrained(safe_serialization=False) and writes safetensors; the .bin shards "
            "are written by this script. " + bin_loads,
            "the sharded safetensors index metadata holds total_parameters and total_size",
            "PEFT's in-memory state dict has '.default' (lora_A.default.weight) and '.base_layer'; "
            "adapter_model.safetensors has neither (base_model.model.<module>.lora_A.weight)",
            "peft adapter_config.json target_modules is written as a list whose order may differ from the LoraConfig "
            "argument (it is a set)",
        ],
        "files": files.entries,
    }
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")

    all_files = sorted(p for p in OUT_DIR.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in all_files)
    for p in all_files:
        print(f"{p.stat().st_size:9d}  {p.relative_to(OUT_DIR).as_posix()}")
    print("official vs HF lowres max abs:", manifest["official_vs_hf"]["lowres_max_abs"],
          "eps-matched:", max(eps_matched.values()))
    for tag, a in adapters.items():
        print(tag, a["adapted"], "merged-vs-unmerged", a["merged_diff"])
    for n_ in notes:
        print("NOTE:", n_)
    print(f"wrote {len(all_files)} files, {total / 1e6:.3f} MB to {OUT_DIR} in {time.time() - t0:.1f} s")
    assert total < 5.5e6, total


if __name__ == "__main__":
    main()

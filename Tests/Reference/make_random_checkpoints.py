"""Small random-weight SAM-ViT and MobileSAM-TinyViT checkpoints made by the official code.

Run by hand (never in CI), from the repository root:

    python3 -m venv /tmp/psam-venv && . /tmp/psam-venv/bin/activate
    pip install torch numpy timm safetensors
    pip install --no-deps segment-anything==1.0 mobilesam-lite==0.1.2
    python Tests/Reference/make_random_checkpoints.py

Writes Tests/Fixtures/random/:
  vit_tiny.pth               SAM (ImageEncoderViT + PromptEncoder + MaskDecoder), fp32, torch.save(state_dict)
  vit_tiny_bf16.safetensors  the same weights in bfloat16, safetensors
  mobilesam_tiny.pth         MobileSAM's TinyViT (mobilesam_lite's tiny_vit_sam.py) + SAM heads, saved fp16
  checkpoints.json           the constructor values used, for the detection tests to compare against

The structure is the official one; only widths and depths are shrunk. TinyViT hard-codes a 256-channel
neck; it is replaced by the identical Conv/LayerNorm2d/Conv/LayerNorm2d sequence at 32 channels so the
file stays small. TinyViT also hard-codes a 64x64 output grid and a stride-1 last patch merging when
the last width is 320, so the image size stays 1024 and the last width 320.
Every parameter and BatchNorm statistic is randomised (default init leaves many tensors constant).
"""
import hashlib
import json
import os
import sys

import torch
from torch import nn

from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from mobilesam_lite.mobile_sam.modeling import tiny_vit_sam

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fixtures", "random")


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.dtype.is_floating_point or "pixel_" in name:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("weight") and t.dim() == 1:  # norms
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 16
                t.copy_(torch.randn(t.shape, generator=g) / (fan_in ** 0.5))


def heads(dim, image_size, grid):
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size),
                           mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=8),
                          transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=32)
    return prompt, decoder


def describe(sd):
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sd.items()}


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    meta = {"torch": torch.__version__}

    vit_cfg = dict(img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, out_chans=32,
                   qkv_bias=True, use_rel_pos=True, window_size=6, global_attn_indexes=(1, 3))
    from functools import partial
    enc = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), rel_pos_zero_init=True, **vit_cfg)
    prompt, decoder = heads(32, 256, 16)
    sam = Sam(image_encoder=enc, prompt_encoder=prompt, mask_decoder=decoder).eval()
    randomise(sam, 1)
    sd = sam.state_dict()
    p = os.path.join(OUT, "vit_tiny.pth")
    torch.save(sd, p)
    sam2 = Sam(image_encoder=ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **vit_cfg),
               prompt_encoder=heads(32, 256, 16)[0], mask_decoder=heads(32, 256, 16)[1])
    sam2.load_state_dict(torch.load(p, weights_only=True), strict=True)
    from safetensors.torch import save_file
    ps = os.path.join(OUT, "vit_tiny_bf16.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, ps, metadata={"format": "pt"})
    vit_meta = {"family": "sam_vit", "variant": "sam", "image_size": 256, "patch_size": 16, "embed_dim": 64, "depth": 4,
                "num_heads": 4, "mlp_dim": 256, "window_size": 6, "global_attn_indexes": [1, 3], "qkv_bias": True,
                "out_chans": 32, "grid": 16, "prompt_embed_dim": 32, "mask_in_chans": 16,
                "decoder": {"transformer_dim": 32, "depth": 2, "num_heads": 8, "mlp_dim": 64,
                            "attention_downsample_rate": 2, "num_multimask_outputs": 3, "iou_head_depth": 3,
                            "iou_head_hidden_dim": 32}}
    meta["vit_tiny.pth"] = dict(vit_meta, bytes=os.path.getsize(p), sha256=sha(p), tensors=describe(sd))
    meta["vit_tiny_bf16.safetensors"] = dict(vit_meta, bytes=os.path.getsize(ps), sha256=sha(ps))

    tv_cfg = dict(img_size=1024, in_chans=3, num_classes=10, embed_dims=[16, 32, 48, 320], depths=[1, 1, 2, 1],
                  num_heads=[1, 2, 3, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3)
    tv = tiny_vit_sam.TinyViT(**tv_cfg)
    tv.neck = nn.Sequential(nn.Conv2d(320, 32, 1, bias=False), tiny_vit_sam.LayerNorm2d(32),
                            nn.Conv2d(32, 32, 3, padding=1, bias=False), tiny_vit_sam.LayerNorm2d(32))
    prompt, decoder = heads(32, 1024, 64)
    msam = Sam(image_encoder=tv, prompt_encoder=prompt, mask_decoder=decoder).eval()
    randomise(msam, 2)
    sd = {k: (v.half() if v.dtype.is_floating_point else v) for k, v in msam.state_dict().items()}
    pm = os.path.join(OUT, "mobilesam_tiny.pth")
    torch.save(sd, pm)
    msam.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in torch.load(pm, weights_only=True).items()},
                         strict=True)
    meta["mobilesam_tiny.pth"] = {
        "family": "tinyvit", "variant": "mobilesam", "image_size": 1024, "embed_dims": [16, 32, 48, 320],
        "depths": [1, 1, 2, 1], "num_heads": [0, 2, 3, 10], "window_sizes": [0, 7, 14, 7],
        "mlp_hidden_dims": [0, 128, 192, 1280], "mbconv_hidden_dim": 64, "patch_embed_kernel": 3,
        "patch_embed_stride": 2, "merge_strides": [2, 2, 1], "local_conv_size": 3, "out_chans": 32,
        "embedding_size": 64, "prompt_embed_dim": 32, "mask_in_chans": 16,
        "decoder": meta["vit_tiny.pth"]["decoder"], "bytes": os.path.getsize(pm), "sha256": sha(pm),
        "tensors": describe(sd),
        "note": "stage 0 is the MBConv stage: its heads/window are reported as 0; the constructor got num_heads[0]=1, window_sizes[0]=7"}
    with open(os.path.join(OUT, "checkpoints.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    for name in ["vit_tiny.pth", "vit_tiny_bf16.safetensors", "mobilesam_tiny.pth"]:
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    sys.exit(main())

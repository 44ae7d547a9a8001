#!/usr/bin/env python3
"""A small SAM-ViT whose relative-position tables are not zero, and its image embedding by the official code.

It was written believing the other random SAM-ViT (make_random_checkpoints.py) kept SAM's rel_pos_zero_init; it does
not (that script's randomise() redraws every float parameter, the tables included: max |value| 0.63-0.84), so both
check the relative terms. What this one adds: a grid the windows do not divide (10 tokens a side, windows of 4: the
last window of each row and column is half padding), with one global block, and tables drawn at random (normal, std
0.5).

Run by hand (never in CI), from the repository root, in the venv of make_random_fixtures.py:

    python Tests/Reference/make_relpos_fixture.py

Writes Tests/Fixtures/random/relpos/:
  vit_relpos.pth   SAM (ImageEncoderViT img_size 160, patch 16, embed 48, depth 3, heads 4, window 4, global
                   block 1, out_chans 32; the prompt encoder and decoder of make_random_checkpoints.heads), state_dict
  image.npy        uint8 [160, 160, 3] (already the encoder's input size: SamPredictor's resize leaves it as is)
  embedding.npy    float32 [32, 10, 10]: SamPredictor(sam).set_image(image) -> get_image_embedding()[0]
  vit_relpos_hd32.pth, embedding_hd32.npy
                   the same with embed 64 and 2 heads: 32-wide heads, which the bf16 attention of int8 models takes
                   (psam_vit_attention_bf16 needs a multiple of 32), so its windows over the border and its global
                   block are checked against the official code too
  vit_relpos_hd64.pth, image384.npy, embedding_hd64.npy
                   img 384 (a 24 x 24 grid: 576 tokens, more than one 512-query group of the bf16 global attention),
                   embed 128, 2 heads of 64 (the width of SAM's heads: the kernel's 64-wide tiles), depth 2, windows
                   of 7 (over the border), global block 1
  manifest.json    versions and SHA-256 of the files
"""
import hashlib, json, os, sys
from functools import partial

import numpy as np
import torch
from torch import nn
from segment_anything.modeling import ImageEncoderViT, Sam
from segment_anything import SamPredictor

sys.path.insert(0, os.path.dirname(__file__))
from make_random_checkpoints import heads, randomise  # noqa: E402

OUT = os.path.join("Tests", "Fixtures", "random", "relpos")


def build(embed, heads_n, size=160, depth=3, window=4):
    torch.manual_seed(0)
    enc = ImageEncoderViT(img_size=size, patch_size=16, embed_dim=embed, depth=depth, num_heads=heads_n, mlp_ratio=4.0,
                          out_chans=32, qkv_bias=True, use_rel_pos=True, window_size=window, global_attn_indexes=(1,),
                          norm_layer=partial(nn.LayerNorm, eps=1e-6), rel_pos_zero_init=True)
    prompt, decoder = heads(32, size, size // 16)
    sam = Sam(image_encoder=enc, prompt_encoder=prompt, mask_decoder=decoder).eval()
    randomise(sam, 1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, t in sam.named_parameters():
            if "rel_pos" in name:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return sam


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)
    np.save(os.path.join(OUT, "image.npy"), image)
    torch.set_num_threads(1)
    names = ["image.npy"]
    largest = {}
    for suffix, embed, heads_n in (("", 48, 4), ("_hd32", 64, 2)):
        sam = build(embed, heads_n)
        torch.save(sam.state_dict(), os.path.join(OUT, f"vit_relpos{suffix}.pth"))
        pred = SamPredictor(sam)
        pred.set_image(image)
        emb = pred.get_image_embedding()[0].numpy().astype(np.float32)
        np.save(os.path.join(OUT, f"embedding{suffix}.npy"), emb)
        names += [f"vit_relpos{suffix}.pth", f"embedding{suffix}.npy"]
        largest["embedding" + suffix] = float(np.abs(emb).max())
        print("wrote", suffix or "48-wide", emb.shape, largest["embedding" + suffix])
    # 64-wide heads on a 24 x 24 grid (576 tokens: two of the bf16 global attention's 512-query groups, windows of 7
    # over the border), its own 384 x 384 image.
    image384 = rng.integers(0, 256, size=(384, 384, 3), dtype=np.uint8)
    np.save(os.path.join(OUT, "image384.npy"), image384)
    sam = build(128, 2, size=384, depth=2, window=7)
    torch.save(sam.state_dict(), os.path.join(OUT, "vit_relpos_hd64.pth"))
    pred = SamPredictor(sam)
    pred.set_image(image384)
    emb = pred.get_image_embedding()[0].numpy().astype(np.float32)
    np.save(os.path.join(OUT, "embedding_hd64.npy"), emb)
    names += ["image384.npy", "vit_relpos_hd64.pth", "embedding_hd64.npy"]
    largest["embedding_hd64"] = float(np.abs(emb).max())
    print("wrote _hd64", emb.shape, largest["embedding_hd64"])
    files = {f: hashlib.sha256(open(os.path.join(OUT, f), "rb").read()).hexdigest() for f in sorted(names)}
    json.dump({"torch": torch.__version__, "numpy": np.__version__, "sha256": files,
               "embedding_max_abs": largest["embedding"], "embedding_hd32_max_abs": largest["embedding_hd32"],
               "embedding_hd64_max_abs": largest["embedding_hd64"]},
              open(os.path.join(OUT, "manifest.json"), "w"), indent=1)


if __name__ == "__main__":
    main()

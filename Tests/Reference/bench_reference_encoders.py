#!/usr/bin/env python3
"""Speed of the reference implementations of SAM ViT-B's image encoder and one prompt's decoder, to put beside
`pocketsam bench` in the same window (issue: the big encoders and the prompt path).

Run by hand (never in CI; no test needs it), from the repository root, in the venv of make_random_fixtures.py plus
onnx and onnxruntime:

    pip install onnx onnxruntime onnxscript
    python Tests/Reference/bench_reference_encoders.py [--arch vit_b] [--runs 3] [--prompts 20] [--threads 2]
        [--skip-torch] [--skip-onnx] [--skip-int8]

Model: segment_anything's sam_model_registry[arch] with no checkpoint (its own random initialisation; speed does not
depend on the values), eval(), fp32, CPU, torch.set_num_threads(THREADS). Input: a 1024 x 1024 RGB image (scikit-
image's astronaut resized), so the encoder sees no padding and the masks are upscaled to 1024 x 1024.

Measures (medians and ranges over --runs encoder passes, --prompts box prompts):
 1. PyTorch: SamPredictor.set_image (preprocessing + encoder) and SamPredictor.predict(box=..., multimask_output=False)
    (prompt encoder, decoder, postprocess_masks to 1024 x 1024, threshold).
 2. onnxruntime fp32: the image encoder exported with torch.onnx.export (opset 17, a fixed 1 x 3 x 1024 x 1024 input),
    CPUExecutionProvider, intra_op_num_threads=THREADS, inter_op 1, every graph optimisation; and the prompt encoder +
    decoder exported as segment-anything's scripts/export_onnx_model.py does (SamOnnxModel, return_single_mask=True,
    dynamic point count), run on the encoder's embedding with one box (two corner points, labels 2 and 3) - its
    output is the 1024 x 1024 logits (orig_im_size), so it includes the upscaling.
 3. onnxruntime int8: onnxruntime.quantization.quantize_dynamic of the fp32 encoder (QInt8 weights, per-tensor),
    the same session options.
The ONNX files go to a temporary directory and are deleted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np
import torch
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.utils.onnx import SamOnnxModel


def stats(xs):
    return f"median {1000 * statistics.median(xs):.1f} ms (range {1000 * min(xs):.1f}-{1000 * max(xs):.1f}, n={len(xs)})"


def boxes(n, size=1024):
    for p in range(n):
        f = p / n
        yield np.array([size * 0.1 * f, size * 0.1, size * (0.5 + 0.4 * f), size * 0.8], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default=".cache/images/astronaut.png")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--skip-int8", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    img = np.array(Image.open(a.image).convert("RGB").resize((1024, 1024), Image.BILINEAR))
    sam = sam_model_registry[a.arch](checkpoint=None).eval()
    pred = SamPredictor(sam)
    print(f"{a.arch}, torch {torch.__version__}, threads {a.threads}, image {img.shape}")
    with torch.no_grad():
        pred.set_image(img)  # warm-up
        if not a.skip_torch:
            enc = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                pred.set_image(img)
                enc.append(time.perf_counter() - t0)
            print("PyTorch fp32 encoder (set_image):", stats(enc))
            dec = []
            for b in boxes(a.prompts):
                t0 = time.perf_counter()
                pred.predict(box=b, multimask_output=False)
                dec.append(time.perf_counter() - t0)
            print("PyTorch fp32 one prompt (predict, box, 1 mask, 1024x1024):", stats(dec))
        emb = pred.get_image_embedding().numpy()
        x = pred.transform.apply_image(img)
        x = torch.as_tensor(x).permute(2, 0, 1).contiguous()[None].float()
        x = sam.preprocess(x)
    if a.skip_onnx:
        return
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as d:
        encp = os.path.join(d, "encoder.onnx")
        torch.onnx.export(sam.image_encoder, x, encp, opset_version=17, input_names=["x"], output_names=["emb"],
                          dynamo=False)
        runs = [("onnxruntime fp32 encoder", encp)]
        if not a.skip_int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            q = os.path.join(d, "encoder_int8.onnx")
            quantize_dynamic(encp, q, weight_type=QuantType.QInt8)
            runs.append(("onnxruntime int8 (dynamic) encoder", q))
        xn = x.numpy()
        for name, path in runs:
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            s.run(None, {"x": xn})
            t = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                s.run(None, {"x": xn})
                t.append(time.perf_counter() - t0)
            print(name + ":", stats(t))
            del s
        decp = os.path.join(d, "decoder.onnx")
        om = SamOnnxModel(sam, return_single_mask=True)
        dummy = {"image_embeddings": torch.randn(1, 256, 64, 64), "point_coords": torch.randint(0, 1024, (1, 5, 2)).float(),
                 "point_labels": torch.randint(0, 4, (1, 5)).float(), "mask_input": torch.randn(1, 1, 256, 256),
                 "has_mask_input": torch.tensor([1.0]), "orig_im_size": torch.tensor([1024.0, 1024.0])}
        torch.onnx.export(om, tuple(dummy.values()), decp, opset_version=17, input_names=list(dummy.keys()),
                          output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "n"}, "point_labels": {1: "n"}}, dynamo=False)
        s = ort.InferenceSession(decp, so, providers=["CPUExecutionProvider"])
        t = []
        for b in boxes(a.prompts + 1):
            coords = pred.transform.apply_coords(b.reshape(2, 2), (1024, 1024))[None].astype(np.float32)
            feed = {"image_embeddings": emb, "point_coords": coords, "point_labels": np.array([[2, 3]], np.float32),
                    "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
                    "orig_im_size": np.array([1024, 1024], np.float32)}
            t0 = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - t0)
        print("onnxruntime fp32 one prompt (SamOnnxModel, box, 1 mask, 1024x1024 logits):", stats(t[1:]))


if __name__ == "__main__":
    main()

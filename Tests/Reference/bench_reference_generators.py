#!/usr/bin/env python3
"""Speed of the reference implementations of SAM's automatic mask generation ("segment everything").

Run by hand (never in CI; no test needs it), from the repository root, with .cache/images fetched
(scripts/fetch-assets.sh) and the venv of make_random_fixtures.py plus onnx and onnxruntime:

    pip install onnx onnxruntime
    python Tests/Reference/bench_reference_generators.py [--image .cache/images/astronaut.png]
        [--points-per-side 32] [--prompts 1024] [--threads 2] [--skip-torch] [--skip-onnx]

Model: the full-size MobileSAM architecture -- mobilesam_lite's TinyViT (img_size 1024, embed dims
64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7) as image encoder, segment_anything's
PromptEncoder (256 channels, 64x64 grid, 1024 px input) and MaskDecoder (TwoWayTransformer depth 2,
256 wide, MLP 2048, 8 heads; 3 multimask outputs; IoU head 3 x 256) in segment_anything.modeling.Sam.
No checkpoint is available, so the weights are random (normal(0, 1/sqrt(fan_in)) for matrices, norms near
1, BatchNorm statistics in a sane range); speed does not depend on their values. eval(), fp32, CPU,
torch.set_num_threads(THREADS).

Measures:
 1. PyTorch: segment_anything.SamAutomaticMaskGenerator(sam, points_per_side=N, pred_iou_thresh=0,
    stability_score_thresh=0) -- both thresholds 0 so that every prompt's masks are upscaled and
    post-processed -- generate(image), after one warm-up run with points_per_side=4. Reports the total
    wall time and a split: predictor.set_image (preprocessing + image encoder), mask_decoder calls,
    Sam.postprocess_masks (bilinear upscaling to 1024 and then to the original size), and the rest
    (stability scores, binarisation, boxes, box NMS, RLE encoding, ...). If N=32 takes more than ten
    minutes, rerun with --points-per-side 16.
 2. onnxruntime: the prompt encoder + mask decoder exported with segment_anything.utils.onnx.SamOnnxModel
    exactly as the segment-anything repository's scripts/export_onnx_model.py exports it
    (return_single_mask=False, dynamic axis on the point count, opset 17, TorchScript exporter), run with
    the CPUExecutionProvider (intra_op_num_threads=THREADS, inter_op 1, all graph optimisations) once
    per prompt for PROMPTS single-point prompts on the generator's grid (each with SamPredictor's padding
    point, label -1), one fixed image embedding, orig_im_size = the image size, has_mask_input 0.
    Reports the median and mean ms per prompt and the total for all prompts. With return_single_mask=False
    the ONNX graph outputs all 4 mask tokens' masks (the single-mask one too, where the generator keeps 3),
    upscaled to the original size, so this includes the upscaling but none of the generator's
    filtering / NMS / RLE.
Also times the PyTorch image encoder alone (median of 3) for reference.

Random weights make every mask a fine-grained noise pattern (about 53k RLE runs per 512x512 mask), so the
generator's RLE encoding and MaskData's deep copies of the RLE lists cost far more than with trained weights;
the split shows them separately. Every measurement prints how many cores other processes used meanwhile
(from /proc/stat) and the generator's per-batch times, so runs that shared the machine can be recognised.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # mobilesam_lite's timm registry overwrites, tracer warnings

import numpy as np
import torch
from PIL import Image

from mobilesam_lite.mobile_sam.modeling import tiny_vit_sam
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.amg import build_point_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_checkpoints import randomise  # noqa: E402  (the test checkpoints' recipe)

REPO = Path(__file__).resolve().parents[2]


def build_mobilesam() -> Sam:
    encoder = tiny_vit_sam.TinyViT(
        img_size=1024, in_chans=3, num_classes=1000,
        embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
        use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                           mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                          transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
              pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    randomise(sam, 0)  # make_random_checkpoints.randomise: the same recipe as the test checkpoints
    return sam.eval()


class Timer:
    """Wraps a bound method and accumulates its wall time."""

    def __init__(self, obj, name, keep=None):
        self.obj, self.name, self.orig = obj, name, getattr(obj, name)
        self.seconds, self.calls, self.results = 0.0, 0, []

        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                r = self.orig(*a, **k)
                if keep:
                    self.results.append(keep(r))
                return r
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        setattr(obj, name, wrapped)

    def reset(self):
        self.seconds, self.calls = 0.0, 0


class CpuShare:
    """CPU time used during a measurement by this process and by everything else (from /proc, Linux only),
    to tell whether other work on the machine shared the cores."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle, iowait
            with open("/proc/self/stat") as f:
                own_f = f.read().rsplit(")", 1)[1].split()
            own = int(own_f[11]) + int(own_f[12])  # utime + stime (all threads)
            return time.perf_counter(), busy, own
        except OSError:
            return None

    def cores(self):
        """(this process, other processes) average cores used since construction; None if unknown."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        wall = end[0] - self.start[0]
        own = (end[2] - self.start[2]) / hz
        other = max(0.0, (end[1] - self.start[1]) / hz - own)
        return own / wall, other / wall

    def report(self) -> str:
        c = self.cores()
        if c is None:
            return "cpu share: n/a"
        return (f"cpu during this: this process {c[0]:.2f} cores avg, "
                f"other processes {c[1]:.2f} cores avg (of {os.cpu_count()})")


def bench_torch(sam: Sam, image: np.ndarray, points_per_side: int) -> None:
    print(f"\n== PyTorch SamAutomaticMaskGenerator, points_per_side={points_per_side} "
          f"({points_per_side ** 2} prompts, points_per_batch 64), thresholds 0 ==", flush=True)
    with torch.inference_mode():
        enc = sam.image_encoder
        x = torch.randn(1, 3, 1024, 1024)
        times = []
        share = CpuShare()
        for _ in range(3):
            t0 = time.perf_counter()
            emb = enc(x)
            times.append(time.perf_counter() - t0)
        print(f"image encoder alone: median {statistics.median(times) * 1e3:.0f} ms "
              f"(runs {', '.join(f'{t * 1e3:.0f}' for t in times)} ms), output {tuple(emb.shape)}; "
              + share.report())

    warm = SamAutomaticMaskGenerator(sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    t0 = time.perf_counter()
    masks = warm.generate(image)
    print(f"warm-up (points_per_side=4): {time.perf_counter() - t0:.2f} s, {len(masks)} masks", flush=True)

    gen = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=0.0,
                                    stability_score_thresh=0.0)
    t_set = Timer(gen.predictor, "set_image")
    t_dec = Timer(sam.mask_decoder, "forward")  # instance attribute, called by nn.Module.__call__
    t_up = Timer(sam, "postprocess_masks")
    import segment_anything.automatic_mask_generator as amg_mod
    t_stab = Timer(amg_mod, "calculate_stability_score")
    t_box = Timer(amg_mod, "batched_mask_to_box")
    t_rle = Timer(amg_mod, "mask_to_rle_pytorch", keep=lambda rles: [len(r["counts"]) for r in rles])
    t_nms = Timer(amg_mod, "batched_nms")
    t_cat = Timer(amg_mod.MaskData, "cat")  # deep-copies the RLE count lists
    t_filt = Timer(amg_mod.MaskData, "filter")
    batches = []  # (seconds, other processes' cores) per _process_batch call (points_per_batch prompts)
    orig_batch = gen._process_batch

    def timed_batch(*a, **k):
        sh, tb = CpuShare(), time.perf_counter()
        r = orig_batch(*a, **k)
        c = sh.cores()
        batches.append((time.perf_counter() - tb, c[1] if c else float("nan")))
        return r
    gen._process_batch = timed_batch
    share = CpuShare()
    t0 = time.perf_counter()
    masks = gen.generate(image)
    total = time.perf_counter() - t0
    share = share.report()
    for t in (t_stab, t_box, t_rle, t_nms, t_cat, t_filt):
        setattr(t.obj, t.name, t.orig)
    rest = total - t_set.seconds - t_dec.seconds - t_up.seconds
    print(f"generate: {total:.2f} s wall, {len(masks)} masks")
    print(f"  predictor.set_image (preprocess + encoder): {t_set.seconds:8.3f} s ({t_set.calls} call)")
    print(f"  everything else:                            {total - t_set.seconds:8.3f} s")
    print(f"    mask_decoder:                             {t_dec.seconds:8.3f} s ({t_dec.calls} calls)")
    print(f"    postprocess_masks (upscaling):            {t_up.seconds:8.3f} s ({t_up.calls} calls)")
    print(f"    rest (stability, boxes, NMS, RLE, ...):   {rest:8.3f} s, of which")
    print(f"      calculate_stability_score:              {t_stab.seconds:8.3f} s ({t_stab.calls} calls)")
    print(f"      batched_mask_to_box:                    {t_box.seconds:8.3f} s ({t_box.calls} calls)")
    print(f"      mask_to_rle_pytorch:                    {t_rle.seconds:8.3f} s ({t_rle.calls} calls)")
    runs = [n for batch in t_rle.results for n in batch]
    if runs:
        print(f"        ({len(runs)} RLEs, median {int(np.median(runs))} runs, max {max(runs)}: random weights "
              f"give noisy masks, so this part is data dependent)")
    print(f"      batched_nms:                            {t_nms.seconds:8.3f} s ({t_nms.calls} calls)")
    print(f"      MaskData.cat + filter (deepcopy of RLEs): {t_cat.seconds + t_filt.seconds:8.3f} s "
          f"({t_cat.calls} + {t_filt.calls} calls)")
    print(f"      unattributed (binarise, crop-edge test, prompt encoder, final rle_to_mask, ...): "
          f"{rest - sum(t.seconds for t in (t_stab, t_box, t_rle, t_nms, t_cat, t_filt)):.3f} s")
    print(f"  {share}")
    bt = np.array([b[0] for b in batches])
    print(f"  per batch of {gen.points_per_batch} prompts (decoder + upscaling + filters + RLE): median "
          f"{np.median(bt):.2f} s, min {bt.min():.2f} s, max {bt.max():.2f} s; other processes' cores per batch: "
          + " ".join(f"{b[1]:.2f}" for b in batches))
    quiet = [b[0] for b in batches if b[1] < 0.05]
    if quiet:
        est = t_set.seconds + np.median(quiet) * len(batches) + (total - t_set.seconds - bt.sum())
        print(f"  {len(quiet)} batches ran with other processes under 0.05 cores: median {np.median(quiet):.2f} s; "
              f"generate estimated from them: {est:.1f} s")
    print(f"  per prompt excluding set_image: {(total - t_set.seconds) / points_per_side ** 2 * 1e3:.2f} ms")


def export_decoder(sam: Sam, path: str, opset: int = 17) -> None:
    """segment-anything scripts/export_onnx_model.py: export_decoder, return_single_mask=False."""
    from segment_anything.utils.onnx import SamOnnxModel

    onnx_model = SamOnnxModel(model=sam, return_single_mask=False, use_stability_score=False,
                              return_extra_metrics=False)
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    dummy_inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    _ = onnx_model(**dummy_inputs)
    output_names = ["masks", "iou_predictions", "low_res_masks"]
    kwargs = {}
    try:  # torch >= 2.5 has the dynamo exporter; the official script uses the TorchScript one
        import inspect
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False
    except (TypeError, ValueError):
        pass
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(onnx_model, tuple(dummy_inputs.values()), path, export_params=True, verbose=False,
                          opset_version=opset, do_constant_folding=True, input_names=list(dummy_inputs.keys()),
                          output_names=output_names, dynamic_axes=dynamic_axes, **kwargs)


def bench_onnx(sam: Sam, image: np.ndarray, n_prompts: int, threads: int) -> None:
    import onnxruntime as ort

    print(f"\n== onnxruntime {ort.__version__}, SamOnnxModel decoder (return_single_mask=False, opset 17), "
          f"{n_prompts} single-point prompts ==", flush=True)
    h, w = image.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mobilesam_decoder.onnx")
        t0 = time.perf_counter()
        export_decoder(sam, path)
        print(f"export: {time.perf_counter() - t0:.1f} s, {os.path.getsize(path) / 1e6:.1f} MB")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    # One image embedding from the PyTorch encoder (as SamPredictor.set_image computes it).
    from segment_anything import SamPredictor
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    embedding = predictor.get_image_embedding().cpu().numpy()

    # Prompts: the generator's grid (side = ceil(sqrt(n))), in original-image pixels, then transformed to
    # the 1024 frame as SamPredictor.predict does; plus the padding point (0, 0) with label -1.
    side = int(np.ceil(np.sqrt(n_prompts)))
    points = (build_point_grid(side) * np.array([[w, h]]))[:n_prompts]
    points = predictor.transform.apply_coords(points, (h, w)).astype(np.float32)
    fixed = {
        "image_embeddings": embedding,
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array([h, w], dtype=np.float32),
    }
    labels = np.array([[1, -1]], dtype=np.float32)

    def run(p):
        coords = np.array([[p, [0.0, 0.0]]], dtype=np.float32)
        return session.run(None, {**fixed, "point_coords": coords, "point_labels": labels})

    out = run(points[0])
    print("outputs: " + ", ".join(f"{o.name} {tuple(a.shape)}" for o, a in zip(session.get_outputs(), out)))
    for p in points[:5]:  # warm-up
        run(p)
    per = []
    share = CpuShare()
    t_all = time.perf_counter()
    for p in points:
        t0 = time.perf_counter()
        run(p)
        per.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    per_ms = np.array(per) * 1e3
    print(f"per prompt: median {np.median(per_ms):.2f} ms, mean {per_ms.mean():.2f} ms, "
          f"p10 {np.percentile(per_ms, 10):.2f} ms, p90 {np.percentile(per_ms, 90):.2f} ms")
    print(f"total for {n_prompts} prompts: {total:.2f} s "
          f"(+ one image embedding; embedding computed by the PyTorch encoder, not timed here)")
    print(share.report())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=str(REPO / ".cache" / "images" / "astronaut.png"))
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = np.array(Image.open(args.image).convert("RGB"))

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return "-"
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          + ", ".join(f"{p} {ver(p)}" for p in ["torchvision", "segment-anything", "mobilesam-lite", "numpy",
                                               "onnx", "onnxruntime"]))
    print(f"cpu: {platform.processor() or platform.machine()}, os.cpu_count {os.cpu_count()}, "
          f"torch threads {torch.get_num_threads()}, {torch.backends.cpu.get_cpu_capability()}")
    print(f"image: {args.image} {image.shape[1]}x{image.shape[0]}")

    sam = build_mobilesam()
    print(f"model: MobileSAM (TinyViT 5M encoder), {sum(p.numel() for p in sam.parameters()) / 1e6:.2f} M "
          f"parameters, random weights, fp32")
    if not args.skip_torch:
        bench_torch(sam, image, args.points_per_side)
    if not args.skip_onnx:
        bench_onnx(sam, image, args.prompts, args.threads)


if __name__ == "__main__":
    sys.exit(main())

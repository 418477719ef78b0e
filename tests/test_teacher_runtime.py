"""The teacher on LiteRT: same vectors as the Keras teacher on the demo photos, through Beam."""

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline.core import torch_weights
from pipeline.demo_data import CAMSDD_ROOT
from pipeline.models import teacher, teacher_runtime
from pipeline.stages import embed
from pipeline.stages import options as beam_options
from pipeline.store import embedding_cache, image_store

from .helpers import MOUNTAIN_JPEG

PHOTOS = sorted(str(p) for p in Path(CAMSDD_ROOT).rglob("*.jpg"))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([image_store.read_pixels(p) for p in PHOTOS])


@pytest.fixture(scope="module")
def keras_vectors(frames) -> np.ndarray:
    model = teacher_runtime.KerasTeacher(teacher.DEFAULT_TEACHER)
    return np.concatenate([model(frames[i : i + 16]) for i in range(0, len(frames), 16)])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("runtime") / "work")


@pytest.fixture(scope="module")
def beam_vectors(work) -> np.ndarray:
    """The demo photos (and one broken file) through embed's own handler in Beam RunInference.

    The handler reads and decodes each path itself; vectors come back by photo order.
    """
    handler = embed.make_handler(work, teacher.DEFAULT_TEACHER, 8)
    folder = Path(work).parent / "vectors"
    folder.mkdir()
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")

    def save(i, result):
        if result.inference is None:
            (folder / f"{i}.unreadable").write_text(result.example)
        else:
            np.save(folder / f"{i}.npy", result.inference)

    options = PipelineOptions(beam_options.with_local_runner([]))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam.Create([*enumerate(PHOTOS), (len(PHOTOS), str(broken))])
            | RunInference(KeyedModelHandler(handler))
            | beam.MapTuple(save)
        )
    assert sorted(p.name for p in folder.glob("*.unreadable")) == [f"{len(PHOTOS)}.unreadable"]
    assert (folder / f"{len(PHOTOS)}.unreadable").read_text() == str(broken)
    return np.stack([np.load(folder / f"{i}.npy") for i in range(len(PHOTOS))])


def test_the_litert_teacher_in_beam_gives_the_keras_vectors(keras_vectors, beam_vectors):
    assert len(PHOTOS) == 67 and beam_vectors.shape == keras_vectors.shape == (67, 1280)
    cosines = _cosines(keras_vectors, beam_vectors)
    # Measured: min 0.9999999, mean 1.0000000; the largest element differs by ~4e-6 of
    # the largest value. Float rounding, not a different model.
    assert cosines.min() >= teacher_runtime.SAME_VECTORS_COSINE
    scale = np.abs(keras_vectors).max()
    assert np.abs(keras_vectors - beam_vectors).max() <= 1e-4 * scale


def test_lanes_and_one_interpreter_give_the_same_vectors_in_order(work, frames, beam_vectors):
    path = teacher_runtime.ensure_tflite(work, teacher.DEFAULT_TEACHER)
    lanes = teacher_runtime.load(teacher.DEFAULT_TEACHER, path, threads=2, lanes=2)
    one = teacher_runtime.load(teacher.DEFAULT_TEACHER, path, threads=2, lanes=1)
    assert (lanes.lanes, one.lanes) == (2, 1)
    picked = [5, 0, 66, 5, 31]  # out of order, one twice: results keep the items' order
    np.testing.assert_allclose(lanes(frames[picked]), beam_vectors[picked], rtol=0, atol=1e-5)
    np.testing.assert_allclose(one(frames[picked]), beam_vectors[picked], rtol=0, atol=1e-5)
    assert lanes(frames[:0]).shape == (0, 1280)


def test_same_vectors_keep_the_cache_key_and_a_changed_resize_would_not(frames, keras_vectors):
    """The model id is unchanged because the vectors are; a measurable change must rename it.

    A Pillow resize outside the network (the obvious faster path) changes the vectors
    measurably, so it could not share the cache: the check above would fail for it.
    """
    spec = teacher.DEFAULT_TEACHER
    assert spec.model_id == "efficientnet_lite0-224x336"
    assert teacher_runtime.runtime_of(spec) == teacher_runtime.LITERT
    state = torch_weights.load_state_dict(teacher.lite0_weights_path())
    backbone = teacher.efficientnet_lite(state)
    height, width = spec.input_size
    resized = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
            for f in frames
        ]
    ).astype(np.float32)
    pillow = np.concatenate(
        [
            np.asarray(backbone((resized[i : i + 16] - 127) / 128, training=False))
            for i in range(0, len(resized), 16)
        ]
    )
    cosines = _cosines(keras_vectors, pillow)
    assert cosines.min() < teacher_runtime.SAME_VECTORS_COSINE  # measured 0.9947
    assert cosines.min() > 0.98  # the same teacher, a different input: close, not equal


@pytest.mark.parametrize("size", [(224, 336), (240, 360), (384 - 83, 336)])
def test_the_convolution_resize_is_the_keras_resize(size):
    import keras
    from keras import layers

    photo = np.asarray(Image.open(MOUNTAIN_JPEG).convert("RGB"), np.float32)[None]
    expected = layers.Resizing(*size, interpolation="bilinear", antialias=True)(photo)
    inputs = keras.Input(photo.shape[1:])
    got = keras.Model(inputs, teacher.exact_resize(inputs, size))(photo)
    assert got.shape == (1, *size, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=0.02)
    # 224 and 240 rows have a short period (strided convolutions); 301 falls back to a product.
    assert (teacher.StridedResize.of(384, size[0]) is None) == (size[0] == 301)


def test_the_converted_teacher_lives_beside_its_vectors_and_is_converted_once(work, beam_vectors):
    spec = teacher.DEFAULT_TEACHER
    path = teacher_runtime.ensure_tflite(work, spec)
    assert Path(path).parent == Path(embedding_cache.model_dir(work, spec))
    assert embedding_cache.cached_paths(work, spec) == []  # no vectors file confused with it
    shared = Path(teacher_runtime.user_cache_path(spec))
    assert shared.read_bytes() == Path(path).read_bytes()
    # Another work dir copies the converted file instead of converting again.
    other = str(Path(work).parent / "other")
    assert Path(teacher_runtime.ensure_tflite(other, spec)).read_bytes() == shared.read_bytes()


def test_a_keras_file_teacher_stays_on_keras(tmp_path, frames):
    import keras

    inputs = keras.Input((224, 336, 3))
    saved = tmp_path / "pool.keras"
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(saved)
    spec = teacher.TeacherSpec(name=str(saved))
    assert teacher_runtime.runtime_of(spec) == teacher_runtime.KERAS
    handler = embed.make_handler(str(tmp_path / "w"), spec, 4)
    assert handler.tflite_path is None
    model = handler.load_model()
    assert isinstance(model, teacher_runtime.KerasTeacher)
    vectors = model(frames[:2])
    assert vectors.shape == (2, 3)
    np.testing.assert_allclose(vectors[0], frames[0].reshape(-1, 3).mean(axis=0), rtol=0.02)


def test_threads_follow_the_workers_sharing_the_machine():
    cores = teacher_runtime.threads_for()
    assert embed.local_models([]) == 1
    assert embed.local_models(["--direct_num_workers=2"]) == 2
    assert embed.local_models(["--runner=DataflowRunner", "--direct_num_workers=2"]) == 1
    assert teacher_runtime.threads_for(2) == max(1, cores // 2)

"""camsdd dataset: the declarative TFDS test on dummy_data/ (real photos, small)."""

import tensorflow_datasets as tfds

from . import camsdd_dataset_builder


class CamsddTest(tfds.testing.DatasetBuilderTestCase):
    """Builds dummy_data/ with Beam and checks splits, specs and overlap."""

    DATASET_CLASS = camsdd_dataset_builder.Builder
    # dummy_data/CamSDD also holds Thumbs.db, .DS_Store, LICENSE.md and a
    # __MACOSX/ folder: none of them may become an example.
    SPLITS = {"train": 4, "validation": 2, "test": 3}
    SKIP_CHECKSUMS = True  # manual download: no URL, no checksum


if __name__ == "__main__":
    tfds.testing.test_main()

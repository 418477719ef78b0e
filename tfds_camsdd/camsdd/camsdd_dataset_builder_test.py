"""camsdd dataset: the declarative TFDS tests on dummy_data/ (real photos, small)."""

import os

import tensorflow_datasets as tfds

from . import camsdd_dataset_builder


class CamsddTest(tfds.testing.DatasetBuilderTestCase):
    """Builds the official splits of dummy_data/ with Beam; checks splits, specs and overlap."""

    DATASET_CLASS = camsdd_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["official"]
    # dummy_data/CamSDD also holds Thumbs.db, .DS_Store, LICENSE.md and a
    # __MACOSX/ folder: none of them may become an example.
    SPLITS = {"train": 4, "validation": 2, "test": 3}
    SKIP_CHECKSUMS = True  # manual download: no URL, no checksum


class CamsddPseudoTest(tfds.testing.DatasetBuilderTestCase):
    """The pseudo config: official splits plus extra_pseudo from dummy_data/pseudolabel.

    The manifest there lists two kept candidates and one dropped one (not built);
    TFDS's overlap check then proves no extra example equals an official one.
    """

    DATASET_CLASS = camsdd_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["pseudo"]
    SPLITS = {"train": 4, "validation": 2, "test": 3, "extra_pseudo": 2}
    SKIP_CHECKSUMS = True

    def setUp(self):
        super().setUp()
        self._saved = os.environ.get(camsdd_dataset_builder.EXTRA_MANIFEST_ENV)
        os.environ[camsdd_dataset_builder.EXTRA_MANIFEST_ENV] = os.fspath(
            self.dummy_data / "pseudolabel"
        )

    def tearDown(self):
        if self._saved is None:
            os.environ.pop(camsdd_dataset_builder.EXTRA_MANIFEST_ENV, None)
        else:
            os.environ[camsdd_dataset_builder.EXTRA_MANIFEST_ENV] = self._saved
        super().tearDown()


if __name__ == "__main__":
    tfds.testing.test_main()

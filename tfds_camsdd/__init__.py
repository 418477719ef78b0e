"""TFDS builders of this project. Importing this package registers ``camsdd``.

tfds build camsdd --imports tfds_camsdd --manual_dir <folder with CamSDD/>
"""

from tfds_camsdd.camsdd import camsdd_dataset_builder  # noqa: F401  (registers the builder)

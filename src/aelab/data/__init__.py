"""Data: the built-in data sets (IDX files, discovery, checksums, download, splits) and image inputs."""

from aelab.data.datasets import (
    DATASETS,
    DataBundle,
    DatasetInfo,
    Split,
    dataset_info,
    find_dataset,
    load_dataset,
    load_raw,
    split_indices,
    to_float,
)
from aelab.data.pixels import check_batch_shape, image_bytes, read_image, to_pixels, to_uint8
from aelab.data.sources import ImageSource, open_input

__all__ = ["DATASETS", "DataBundle", "DatasetInfo", "ImageSource", "Split", "check_batch_shape", "dataset_info",
           "find_dataset", "image_bytes", "load_dataset", "load_raw", "open_input", "read_image", "split_indices",
           "to_float", "to_pixels", "to_uint8"]

"""Data: the built-in data sets (IDX files, discovery, checksums, download, splits), the user's own images (image
folders, array files: ``own.py``), image inputs and pixel arrays."""

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
from aelab.data.own import is_own
from aelab.data.pixels import (
    SHAPE,
    as_nchw,
    check_batch_shape,
    display,
    image_bytes,
    image_shape,
    mosaic,
    read_image,
    shape_text,
    to_pixels,
    to_uint8,
)
from aelab.data.sources import ImageSource, open_input

__all__ = ["DATASETS", "SHAPE", "DataBundle", "DatasetInfo", "ImageSource", "Split", "as_nchw", "check_batch_shape",
           "dataset_info", "display", "find_dataset", "image_bytes", "image_shape", "is_own", "load_dataset",
           "load_raw", "mosaic", "open_input", "read_image", "shape_text", "split_indices", "to_float", "to_pixels",
           "to_uint8"]

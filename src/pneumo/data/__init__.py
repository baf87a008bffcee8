"""Data: reading images, preprocessing, discovering, auditing and splitting datasets."""

from pneumo.data.dataset import load_dataset
from pneumo.data.discover import CLASS_NAMES, DatasetIndex, Sample, parse_patient
from pneumo.data.imageio import ImageMeta, read_image
from pneumo.data.locate import resolve_data
from pneumo.data.manifest import load_manifest, write_manifest
from pneumo.data.preprocess import PreprocessSpec, preprocess

__all__ = [
    "CLASS_NAMES",
    "DatasetIndex",
    "ImageMeta",
    "PreprocessSpec",
    "Sample",
    "load_dataset",
    "load_manifest",
    "parse_patient",
    "preprocess",
    "read_image",
    "resolve_data",
    "write_manifest",
]

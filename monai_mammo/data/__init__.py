"""Files in -> MetaTensors and datalists out: readers, indexers, splits, synthetic data."""

from __future__ import annotations

from monai_mammo.data.caching import (
    CACHE_MODES,
    MetaPersistentDataset,
    cached_dataset,
    cached_prefix,
    transform_fingerprint,
)
from monai_mammo.data.dicom_writer import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    VIEW_CODES,
    write_mammogram_dicom,
)
from monai_mammo.data.prepare import (
    DATALIST_FORMAT,
    SYNTHETIC_MARKER,
    datalist_digest,
    ensure_synthetic_dataset,
    load_user_datalist,
    prepare_datalist,
)
from monai_mammo.data.readers import (
    DICOM_SUFFIXES,
    RASTER_SUFFIXES,
    MammogramFile,
    MammogramReader,
    mammogram_affine,
)
from monai_mammo.data.safe_pickle import (
    BUILTIN_GLOBALS,
    NUMPY_GLOBALS,
    restricted_load,
)
from monai_mammo.data.schema import (
    FINDING_TYPES,
    FINDINGS_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    LATERALITY_KEY,
    MASK_KEY,
    PATHOLOGIES,
    PATIENT_KEY,
    VIEW_KEY,
    PatchClass,
    patch_class,
    pathology_to_label,
)
from monai_mammo.data.splits import (
    SPLIT_KEYS,
    SPLIT_PRESETS,
    assert_patient_disjoint,
    split_by_patient,
)

__all__ = [
    "CACHE_MODES",
    "MetaPersistentDataset",
    "cached_dataset",
    "cached_prefix",
    "transform_fingerprint",
    "DATALIST_FORMAT",
    "load_user_datalist",
    "PatchClass",
    "FINDING_TYPES",
    "PATHOLOGIES",
    "pathology_to_label",
    "patch_class",
    "IMAGE_KEY",
    "LABEL_KEY",
    "MASK_KEY",
    "FINDINGS_KEY",
    "LATERALITY_KEY",
    "VIEW_KEY",
    "PATIENT_KEY",
    "MammogramReader",
    "MammogramFile",
    "RASTER_SUFFIXES",
    "DICOM_SUFFIXES",
    "mammogram_affine",
    "write_mammogram_dicom",
    "MG_FOR_PRESENTATION",
    "MG_FOR_PROCESSING",
    "VIEW_CODES",
    "restricted_load",
    "BUILTIN_GLOBALS",
    "NUMPY_GLOBALS",
    "split_by_patient",
    "assert_patient_disjoint",
    "SPLIT_PRESETS",
    "SPLIT_KEYS",
    "SYNTHETIC_MARKER",
    "ensure_synthetic_dataset",
    "prepare_datalist",
    "datalist_digest",
]

"""monai_mammo: MONAI transforms, networks, engines and bundles for mammography."""

from monai_mammo.exceptions import (
    MammoConfigError,
    MammoDataError,
    MammoDependencyError,
    MammoError,
    MammoGeometryError,
    MammoSkip,
)

__version__ = "0.1.0"

__all__ = [
    "MammoError",
    "MammoDataError",
    "MammoConfigError",
    "MammoDependencyError",
    "MammoGeometryError",
    "MammoSkip",
    "__version__",
]

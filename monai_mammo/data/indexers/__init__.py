"""Dataset indexers: dataset folders -> MONAI datalists (see :mod:`monai_mammo.data.schema`)."""

"""Subcommands of the ``monai-mammo`` CLI (see :mod:`monai_mammo.cli`)."""

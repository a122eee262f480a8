"""monai_mammo.transforms"""

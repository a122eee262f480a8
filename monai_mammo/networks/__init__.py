"""monai_mammo.networks"""

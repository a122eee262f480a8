"""monai_mammo.engines"""

"""monai_mammo.data"""

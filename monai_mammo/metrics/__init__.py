"""monai_mammo.metrics"""

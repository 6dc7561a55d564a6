"""Evaluation: distances between feature sets of real and synthetic images.

``metrics``: Fréchet distance (MONAI's FID computation on any feature space), KID, and
precision / recall / density / coverage. Feature extractors and reports build on these.
"""

"""The theory of Song, Lin & Xu (NeurIPS 2025) as checkable conditions on plain numbers.

numpy only: this package never imports torch or ntkcheck. The conditions arrive with issue 5.
"""

"""Data for RecBole (RecBole's data/): datasets from the prepared atomic files with lazy sequence windows,
loaders and each user's history (dataset.py), caches keyed by the settings a build read (cache.py),
the prepared .item file read directly (item_file.py), the future-film filter (future.py).

May import: patches, utils.
"""

"""movierec's own models, one file each; recbole_ext/registry.py lists them."""

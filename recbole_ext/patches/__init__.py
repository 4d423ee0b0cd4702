"""RecBole 1.2.1 made to run on the current stack, and movierec's models and metric in its lookups.

compat.py: every patch, one function each (docs/recbole.md); registry.py: the model table RecBole's
lookups consult, applying compat when imported. Import registry before using RecBole.

May import: evaluator.
"""

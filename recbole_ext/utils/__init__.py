"""What every layer writes with (RecBole's utils/): atomic files and staged folders (files.py), a run
folder's lifecycle and contents (run_folder.py), experiment tracking to MLflow or W&B (tracking.py), the
log of submissions' leaderboard scores (leaderboard_log.py).

May import: evaluator.
"""

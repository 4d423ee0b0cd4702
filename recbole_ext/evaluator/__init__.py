"""The competition's metric and what is judged by it (RecBole's evaluator/).

metrics.py: recall@10 / ndcg@10 per user, the holdout's parts, intervals, paired differences, objectives;
calibration.py: the leaderboard's share of latest items fitted from its log (`recall@10 calibrated`);
slots.py: the holdout's parts scored as the board scores the hidden set (the slot effect).

May import: nothing of recbole_ext but ConfigError.
"""

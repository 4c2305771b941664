"""Eviction scorers: what the score-driven ML policy evicts by (``lab.score``, ``lab.register_scorer``)."""

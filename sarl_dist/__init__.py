"""sarl_dist: Semantic Action RL (RL over a frozen VLA's prompts) on a Ray actor-learner runtime."""

__version__ = "0.1.0"

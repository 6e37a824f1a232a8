"""Analyses of the Sparse Pairwise losses: the harmful-pair model of the supplementary."""

from adasp.analysis.harmful_pairs import (
    HarmfulPairResult,
    exact_probabilities,
    num_pairs,
    simulate_harmful_pairs,
    sp_guaranteed_harmless,
    sweep_harmful_pairs,
)

__all__ = [
    "HarmfulPairResult",
    "exact_probabilities",
    "num_pairs",
    "simulate_harmful_pairs",
    "sp_guaranteed_harmless",
    "sweep_harmful_pairs",
]

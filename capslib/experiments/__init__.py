"""Experiments that make a claim: Table 1's ablation, the MultiMNIST routing-iteration study."""

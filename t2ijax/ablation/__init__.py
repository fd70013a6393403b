"""Ablation grids: plan and run an axis's variants x seeds (grid), read finished runs (results), and report
what moved (summary, report, figures). The command line is t2ijax/ablate.py."""

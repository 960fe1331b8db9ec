"""Hyperparameter search for a pretraining method, and the recipe file it leaves.

:mod:`jetlib.tune.recipe` reads and writes the recipe ``jetlib pretrain --recipe FILE`` takes (no heavy
imports); :mod:`jetlib.tune.study` runs ``jetlib tune`` on one machine with Optuna;
:mod:`jetlib.tune.katib` builds the same search as a Katib Experiment for a cluster.
"""

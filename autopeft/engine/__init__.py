"""Ray Tune + Optuna: the only package that imports ray."""

"""What a user does with finished studies: export with a model card, predict, retrain one
configuration, and learn a portfolio across tasks."""

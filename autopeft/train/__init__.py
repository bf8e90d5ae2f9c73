"""One trial: build the model, apply the method, train, evaluate, save the delta."""

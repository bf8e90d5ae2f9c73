"""Search spaces and budgets: YAML ranges and sampling (space.py), exact sizes (sizing.py),
budgets (budget.py) and every decision of what fits (fitting.py)."""

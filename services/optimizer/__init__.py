"""The optimizer: passes composed into recipes, evaluated against the base model under device budgets."""

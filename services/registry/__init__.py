"""The model registry: immutable, signed model versions and variants with lineage, and aliases."""

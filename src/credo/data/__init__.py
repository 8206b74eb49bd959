"""The data pipeline: clean, deduplicate and tag what the base ingests, and continue its pre-training on it.

Every stage is a list of datatrove pipeline steps run by a datatrove executor (local by default, Slurm or Ray when
asked), so a corpus larger than memory streams through and one machine's pipeline runs unchanged on a cluster.
Heavy imports stay inside the modules that need them; `import credo.data` is cheap.
"""

"""Exposes bitnet's validating sweeper to Hydra, which instantiates plugins only from `hydra_plugins`."""

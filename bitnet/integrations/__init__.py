"""Callbacks that measure a model trained by another framework with bitnet.probe and write a run folder that
`python -m analysis.tables` reads like one of bitnet's grid points. Each module imports its framework, which
the core install does not pull in:

    pip install ".[hf]"          # bitnet.integrations.hf.DiversityCallback (transformers.Trainer)
    pip install ".[lightning]"   # bitnet.integrations.lightning.DiversityCallback (Lightning Trainer)

(in a checkout; from the repository: "bitnet-sweeps[hf] @ git+<repository URL>").
"""

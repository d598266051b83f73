"""Callbacks that measure a model trained by another framework with bitnet.probe and write a run folder that
`python -m analysis.tables` reads like one of bitnet's grid points. Each module imports its framework, which
the core install does not pull in:

    pip install "bitnet[hf]"          # bitnet.integrations.hf.DiversityCallback (transformers.Trainer)
    pip install "bitnet[lightning]"   # bitnet.integrations.lightning.DiversityCallback (Lightning Trainer)
"""

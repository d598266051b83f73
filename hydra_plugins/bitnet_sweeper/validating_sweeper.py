"""Hydra instantiates sweepers only from the `hydra_plugins` namespace; the implementation is
bitnet.sweeper.ValidatingSweeper (see there). Selected in conf/config.yaml with
`hydra.sweeper._target_: hydra_plugins.bitnet_sweeper.validating_sweeper.ValidatingSweeper`."""

from bitnet.sweeper import ValidatingSweeper as _Implementation


class ValidatingSweeper(_Implementation):
    """bitnet.sweeper.ValidatingSweeper under the name Hydra accepts."""

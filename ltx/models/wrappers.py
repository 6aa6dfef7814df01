"""`TrunkWrapper`: the base of the modules a method puts around the multi-expert trunk.

A wrapper holds the trunk as its `trunk` attribute and calls it in `__call__`; `nn.share_scope`
(in the subclass's `setup`) keeps the trunk's variables under their own names, so checkpoints and
parameter paths are the same with and without the wrapper, and a trained trunk's checkpoint
initialises the wrapped model. The trunk's attributes that tools read (`num_experts`,
`num_shared_stages`) are passed through.
"""

from __future__ import annotations

import flax.linen as nn


class TrunkWrapper(nn.Module):
    """A module around `trunk` (an `ltx.models.MultiExpertNet`) that keeps its variable names."""

    trunk: nn.Module

    def share_trunk_scope(self) -> None:
        """Call first in `setup`: the trunk's variables live at this module's level."""
        nn.share_scope(self, self.trunk)

    @property
    def num_experts(self) -> int:
        return self.trunk.num_experts

    @property
    def num_shared_stages(self) -> int:
        return self.trunk.num_shared_stages

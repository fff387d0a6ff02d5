"""One module per stage kind, all on the shared training loop. STAGE_RUNNERS maps kind -> runner."""
from .flow_matching import FlowMatchingStage

STAGE_RUNNERS = {kind: FlowMatchingStage for kind in FlowMatchingStage.kinds}

__all__ = ["STAGE_RUNNERS"]

"""Methods that leave the backbone frozen and change what the head reads from its layers."""

from autopeft.methods.side.fusion import AttentionFusion
from autopeft.methods.side.lst import LadderSideTuning

__all__ = ["AttentionFusion", "LadderSideTuning"]

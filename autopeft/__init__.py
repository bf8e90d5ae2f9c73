"""AutoPEFT: search PEFT configurations under a hard budget of stored parameters."""

__version__ = "0.1.0"

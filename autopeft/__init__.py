"""AutoPEFT: search parameter-efficient fine-tuning configurations under a stored-parameter budget."""

__version__ = "0.1.0"

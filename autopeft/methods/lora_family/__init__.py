"""LoRA variants through Hugging Face `peft`: KronA (via LoKr), AdaLoRA, and relatives."""

"""The on-disk format of a trained delta: safetensors + JSON written by store.py, rebuilt on its
backbone by load.py (`autopeft.load`)."""

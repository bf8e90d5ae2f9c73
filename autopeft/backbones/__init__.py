"""The pretrained models a search fine-tunes: loading (local folder or Hub id, offline-safe) and
the task head (classifier, pooler, pooling)."""

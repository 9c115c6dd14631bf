"""Text templates the package fills at run time (the checkpoint model card)."""

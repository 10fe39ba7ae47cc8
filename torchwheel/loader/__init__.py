"""The packed-layer loader shipped inside every packed layer (see docs/packed-layers.md)."""

"""Bytes to pixels: header probe, decoders, orientation, resize, the shared byte budget."""

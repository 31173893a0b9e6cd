"""The models: configs and presets, attention, the linear layer, both families, generation, tokenizers and
checkpoint I/O. Nothing here reads documents or knows about the CLI."""

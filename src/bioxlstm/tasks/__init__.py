"""User jobs (pretrain, generate, demo, ...), each callable from Python and from the CLI."""

"""canvas-ls: the language server, command line and the syntax rules around the model."""

__version__ = "0.1.0"

"""The ``glassformer`` command: thin argument parsing over the library."""

"""Helpers shared by the command modules."""

import shutil
from pathlib import Path


class fresh_output_dir:
    """Remove an output directory this command created if it fails: nothing half-written is left."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.existed = self.path.exists()

    def __enter__(self):
        return self.path

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self.existed:
            shutil.rmtree(self.path, ignore_errors=True)
        return False

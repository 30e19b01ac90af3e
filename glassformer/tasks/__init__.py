"""Inference tasks: plain functions over a loaded model directory (``glassformer.model_dir.load_model_dir``).

The command line, the server and the explain report call these; none of them re-implements a task.
"""

from .caption import caption_files, caption_images, greedy_ids
from .fill_mask import check_masked_lm, fill_mask, mask_ids

__all__ = ["caption_files", "caption_images", "greedy_ids", "check_masked_lm", "fill_mask", "mask_ids"]

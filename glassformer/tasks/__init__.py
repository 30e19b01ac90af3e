"""Inference tasks: plain functions over a loaded model directory (``glassformer.model_dir.load_model_dir``).

    translate      tasks.translate: check_translator, translate_options, translate, translate_nbest, score
    generate       tasks.generate: check_generator, generation_plan, prompt_ids, stream_completion,
                   complete_batch, beam_complete
    fill-mask      tasks.fill_mask: check_masked_lm, mask_ids, fill_mask
    embed          tasks.embed: check_encoder, sentence_max_len, embed, most_similar
    classify       tasks.classify: check_text_classifier, classify, classify_texts, Prediction
    classify-image tasks.classify_image: classify_images
    caption        tasks.caption: caption_files, caption_images, greedy_ids

A ``check_*`` function refuses, in one line naming the directory, a model that cannot do the task.
Decoding settings (a directory's generation config, unless an option overrides it) are
``tasks.decoding``; ``generation_plan`` and ``translate_options`` turn them into what generate and
translate decode with.  The command line, the server and the explain report call these; none of
them re-implements a task.
"""

from .caption import caption_files, caption_images, greedy_ids
from .classify import Prediction, check_classifier, check_text_classifier, classify, classify_texts, predict
from .classify_image import classify_images
from .decoding import DECODING_OPTIONS, decoding_defaults
from .embed import check_encoder, embed, most_similar, sentence_max_len
from .fill_mask import check_masked_lm, fill_mask, mask_ids
from .generate import (GenerationPlan, beam_complete, check_generator, complete_batch, generation_plan, prompt_ids,
                       stream_completion)
from .translate import check_translator, score, translate, translate_nbest, translate_options

__all__ = ["caption_files", "caption_images", "greedy_ids", "Prediction", "check_classifier", "check_text_classifier",
           "classify", "classify_texts", "predict", "classify_images", "DECODING_OPTIONS", "decoding_defaults",
           "check_encoder", "embed", "most_similar", "sentence_max_len", "check_masked_lm", "fill_mask", "mask_ids",
           "GenerationPlan", "beam_complete", "check_generator", "complete_batch", "generation_plan", "prompt_ids",
           "stream_completion", "check_translator", "score", "translate", "translate_nbest", "translate_options"]

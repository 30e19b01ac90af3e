"""Chat templates: a conversation rendered as the text a decoder reads, and which of its tokens are trained on.

A Hugging Face directory states its own template (``chat_template`` in ``tokenizer_config.json``, or
``chat_template.jinja``); it is rendered as it is, in jinja2's sandbox, with the variables
``transformers`` gives it (``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
``raise_exception``).  A directory without one (our own models, GPT-2) gets :data:`DEFAULT_CHAT_TEMPLATE`,
and a model fine-tuned here keeps the template it was trained with (``chat_template`` in its
``generation.json``), so generation, DPO and RL read prompts exactly as fine-tuning wrote them.

A ``{"prompt", "response"}`` row is the conversation ``[user: prompt, assistant: response]``.

Which tokens are targets (:func:`encode_example`): the text is rendered up to each assistant turn
with the generation prompt (``messages[:i]``), then through it (``messages[:i+1]``); the difference
is the assistant's turn.  Each piece is tokenized on its own, so the prompt's ids are exactly those
:func:`encode_prompt` gives at inference::

    render(messages[:1], gen)   "User: What is 38 + 57?\\nAssistant: "   -> ids, not targets
    render(messages[:2]) - ^    "95\\n"                                  -> ids, targets
    end of the turn             EOS (unless the template wrote one)     -> a target: the model learns to stop

One BOS at most: added where the tokenizer's own framing adds one, unless the template wrote it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..errors import CheckpointError, InputError

ROLES = ("system", "user", "assistant")

# Ours: plain words a character or BPE vocabulary trained on ordinary text can spell.
#   system: its text, then a blank line
#   user:   "User: <text>\n"
#   assistant: "Assistant: <text>\n" (the end-of-sequence token follows, added by the tokenizer, not the text)
#   add_generation_prompt: "Assistant: " (what the model answers after)
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}{{ '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'User: ' }}{{ message['content'] }}{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' }}{{ message['content'] }}{{ '\\n' }}"
    "{%- else -%}{{ raise_exception('unknown role ' ~ message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant: ' }}{%- endif -%}"
)


def chat_template(model_dir: str | Path) -> str:
    """The chat template of ``model_dir``: a Hugging Face directory's own (``tokenizer_config.json``'s
    ``chat_template``, or ``chat_template.jinja``), the one a fine-tuned model was trained with
    (``generation.json``), else :data:`DEFAULT_CHAT_TEMPLATE`."""
    path = Path(model_dir)
    config = _json(path / "tokenizer_config.json")
    template = config.get("chat_template")
    if isinstance(template, list):           # several named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template:
        return template
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    template = _json(path / "generation.json").get("chat_template")
    return template if isinstance(template, str) and template else DEFAULT_CHAT_TEMPLATE


def _json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


@lru_cache(maxsize=8)
def _compiled(template: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)   # as transformers renders them
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(template)
    except TemplateError as e:
        raise CheckpointError(f"the chat template does not parse: {e}") from None


def _raise(message: str):
    raise InputError(f"the chat template refuses this conversation: {message}")


def render(template: str, messages: Sequence[dict[str, str]], add_generation_prompt: bool, *,
           bos_token: str | None = None, eos_token: str | None = None) -> str:
    """``messages`` rendered by ``template`` (jinja2, sandboxed); ``add_generation_prompt``: followed by
    what opens the assistant's answer."""
    from jinja2 import TemplateError

    try:
        return _compiled(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                          bos_token=bos_token or "", eos_token=eos_token or "")
    except TemplateError as e:
        raise InputError(f"the chat template cannot render this conversation: {e}") from None


def conversation(row: dict[str, Any]) -> list[dict[str, str]]:
    """A row's messages: its ``messages``, or ``[user: prompt, assistant: response]``; a prompt alone
    (a list of messages or a string) is the conversation before the answer."""
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row:
        prompt = row["prompt"]
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if "response" in row:
            messages.append({"role": "assistant", "content": row["response"]})
    else:
        raise InputError(f"a row needs 'messages' or 'prompt' (and 'response'); it has {sorted(row)}")
    for message in messages:
        if message.get("role") not in ROLES:
            raise InputError(f"unknown role {message.get('role')!r}; each message's role is one of {list(ROLES)}")
    return messages


class _Pieces:
    """The token ids of a text rendered piece by piece, and which are targets."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.targets: list[bool] = []

    def add(self, text: str, target: bool) -> None:
        ids = self.tokenizer.encode(text) if text else []      # special tokens written as text become their ids
        if not self.ids:
            ids = _framed(self.tokenizer, ids)
        self.ids += ids
        self.targets += [target] * len(ids)


def _framed(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` with the BOS the tokenizer's framing adds (a checkpoint's post-processor), unless already there."""
    framing = tokenizer.encode_prompt("") if tokenizer.frames_prompts else []
    bos = tokenizer.bos_id
    if bos is not None and framing[:1] == [bos] and ids[:1] != [bos]:
        return [bos] + ids
    return ids


def _special(tokenizer) -> dict[str, str | None]:
    def text(idx):
        return tokenizer.id_to_token(idx) if idx is not None else None
    return {"bos_token": text(tokenizer.bos_id), "eos_token": text(tokenizer.eos_id)}


def _encoded(tokenizer, messages: list[dict[str, str]], template: str, add_generation_prompt: bool) -> _Pieces:
    """``messages`` tokenized turn by turn: the text before each assistant turn, the turn (targets, then
    EOS), and what follows the last one (the generation prompt, if asked)."""
    special = _special(tokenizer)
    pieces, done = _Pieces(tokenizer), ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(template, messages[:i], True, **special)
        through = render(template, messages[:i + 1], False, **special)
        if not before.startswith(done) or not through.startswith(before):
            raise InputError("the chat template renders the start of this conversation differently from the whole "
                             "of it; the assistant's tokens cannot be told apart")
        pieces.add(before[len(done):], False)
        start = len(pieces.ids)
        pieces.add(through[len(before):], True)
        if len(pieces.ids) == start or not message["content"].strip():
            raise InputError(f"assistant message {i + 1} is empty after tokenisation; give the text to learn")
        if not set(pieces.ids[start:]) & set(tokenizer.eos_ids):
            pieces.ids.append(tokenizer.eos_id)
            pieces.targets.append(True)
        done = through
    rest = render(template, messages, add_generation_prompt, **special)
    if not rest.startswith(done):
        raise InputError("the chat template renders the start of this conversation differently from the whole "
                         "of it; the assistant's tokens cannot be told apart")
    pieces.add(rest[len(done):], False)
    return pieces


def encode_example(tokenizer, row: dict[str, Any], template: str, *,
                   train_on_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """The ids of a training row and which of them are targets: each assistant turn's tokens and the
    end-of-sequence token after it (appended if the template did not write one; a target even when
    the pad token is the same id); every token but the first with ``train_on_prompt``.  One BOS at
    most.  An assistant turn with no tokens is refused."""
    messages = conversation(row)
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError("the conversation has no assistant message to learn from")
    pieces = _encoded(tokenizer, messages, template, False)
    ids, targets = pieces.ids, pieces.targets
    if train_on_prompt:
        targets = [True] * len(ids)
    if targets:
        targets[0] = False                   # the first token is read, never predicted
    return ids, targets


def encode_prompt(tokenizer, prompt: str | list[dict[str, str]], template: str) -> list[int]:
    """The ids of ``prompt`` (a user's text, or the messages before the answer) as the model reads
    them before answering: exactly :func:`encode_example`'s ids before the answer's first token."""
    return _encoded(tokenizer, conversation({"prompt": prompt}), template, True).ids


__all__ = ["DEFAULT_CHAT_TEMPLATE", "ROLES", "chat_template", "render", "conversation", "encode_example",
           "encode_prompt"]

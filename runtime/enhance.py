"""Prompt enhancers (algorithms.md section 8): rewrite the prompts a stage generates from. Each is a pure
function of (prompt, seed), so the same prompt reads the same in every process and every run, and is
cached. Whatever scores the result (rewards, the checker, the evaluation) reads the ORIGINAL prompt.

- identity: the prompt as it is;
- template: a sandboxed jinja2 template of `prompt` and `seed` (no access to Python internals; an error
  names the template's line);
- vocabulary: a caption of the stage's data that holds every word of the prompt, drawn by (prompt, seed);
- module: a user function (prompt, seed) -> prompt.
"""
from __future__ import annotations

import hashlib
import random
import traceback

from ..schemas.targets import load_target, search_path


class EnhancerError(ValueError):
    """A prompt enhancer failed on a prompt (the prompt and, for a template, its line are named)."""


class Enhancer:
    def __init__(self, block, rewrite):
        self.block, self.rewrite, self.cache = block, rewrite, {}

    def __call__(self, prompts: list[str], seed: int) -> list[str]:
        out = []
        for prompt in prompts:
            key = (prompt, seed)
            if key not in self.cache:
                self.cache[key] = self.rewrite(prompt, seed)
            out.append(self.cache[key])
        return out


def build_enhancer(block, captions=None, spec_dir: str | None = None) -> Enhancer:
    """The stage's enhancer; `captions()` gives the data's captions (only the vocabulary enhancer reads them)."""
    if block.kind == "identity":
        return Enhancer(block, lambda prompt, seed: prompt)
    if block.kind == "template":
        return Enhancer(block, template_rewrite(block.template))
    if block.kind == "vocabulary":
        return Enhancer(block, vocabulary_rewrite(captions(block.captions)))
    function = load_target(block.target, search_path(spec_dir))

    def call(prompt: str, seed: int) -> str:
        out = function(prompt, seed)
        if not isinstance(out, str):
            raise EnhancerError(f"prompt enhancer {block.target} returned {type(out).__name__} for {prompt!r}, not a string")
        return out

    return Enhancer(block, call)


def template_rewrite(text: str):
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    template = SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(text)

    def render(prompt: str, seed: int) -> str:
        try:
            return template.render(prompt=prompt, seed=seed)
        except Exception as exc:  # noqa: BLE001 - the template's own failure, reported with its line
            line = next((number for frame, number in traceback.walk_tb(exc.__traceback__)
                         if frame.f_code.co_filename == "<template>"), None)
            where = f" (line {line})" if line is not None else ""
            raise EnhancerError(f"prompt_enhancer template{where} failed on {prompt!r}: {type(exc).__name__}: "
                                f"{exc}") from None

    return render


def vocabulary_rewrite(captions: list[str]):
    """A caption holding every word of the prompt (as a multiset), drawn by a hash of (prompt, seed); the
    prompt itself when no caption holds them all."""
    bags = [(caption, caption.lower().split()) for caption in dict.fromkeys(captions)]

    def rewrite(prompt: str, seed: int) -> str:
        words = prompt.lower().split()
        matching = [caption for caption, bag in bags if all(bag.count(w) >= words.count(w) for w in set(words))]
        if not matching:
            return prompt
        digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
        return random.Random(digest).choice(matching)

    return rewrite

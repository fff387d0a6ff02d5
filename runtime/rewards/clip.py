"""clip_score: the cosine similarity of CLIP's image and text embeddings, from a local transformers
CLIPModel folder (frozen). Differentiable: the images are resized and normalised in torch, with the
folder's preprocessor settings (OpenAI's mean and std when it has none)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from . import Reward, register_reward
from .builtin import images

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@register_reward("clip_score")
class ClipScore(Reward):
    def __init__(self, block, spec_dir=None):
        from transformers import AutoTokenizer, CLIPModel

        super().__init__(block, spec_dir)
        self.model = CLIPModel.from_pretrained(block.path).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(block.path)
        self.size = self.model.config.vision_config.image_size
        settings = Path(block.path) / "preprocessor_config.json"
        found = json.loads(settings.read_text()) if settings.is_file() else {}
        self.mean = torch.tensor(found.get("image_mean", OPENAI_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(found.get("image_std", OPENAI_STD)).view(1, 3, 1, 1)
        self.max_tokens = self.model.config.text_config.max_position_embeddings

    def score(self, items, prompts):
        x = (images(items, self.kind).float().clamp(-1, 1) + 1) / 2
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        self.model.to(x.device)
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(x.device)
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=x)
        return (out.image_embeds * out.text_embeds).sum(dim=-1)  # both come L2-normalised

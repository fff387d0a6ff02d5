"""Which modules LoRA can adapt in each family, so a bad `lora.targets` fails at validation, not at step 0.

ADAPTABLE holds the Linear and Conv2d module names of each family's tiny preset with block indices
written as '#' (larger presets repeat the same names). tests/test_presets.py rebuilds the table from
the real diffusers models and fails when it drifts.
"""
from __future__ import annotations

import re

ADAPTABLE: dict[str, tuple[str, ...]] = {
    "dit": (
        "pos_embed.proj",
        "proj_out_1",
        "proj_out_2",
        "transformer_blocks.#.attn1.to_k",
        "transformer_blocks.#.attn1.to_out.#",
        "transformer_blocks.#.attn1.to_q",
        "transformer_blocks.#.attn1.to_v",
        "transformer_blocks.#.ff.net.#",
        "transformer_blocks.#.ff.net.#.proj",
        "transformer_blocks.#.norm1.emb.timestep_embedder.linear_1",
        "transformer_blocks.#.norm1.emb.timestep_embedder.linear_2",
        "transformer_blocks.#.norm1.linear",
    ),
    "mmdit": (
        "context_embedder",
        "norm_out.linear",
        "pos_embed.proj",
        "proj_out",
        "time_text_embed.text_embedder.linear_1",
        "time_text_embed.text_embedder.linear_2",
        "time_text_embed.timestep_embedder.linear_1",
        "time_text_embed.timestep_embedder.linear_2",
        "transformer_blocks.#.attn.add_k_proj",
        "transformer_blocks.#.attn.add_q_proj",
        "transformer_blocks.#.attn.add_v_proj",
        "transformer_blocks.#.attn.to_add_out",
        "transformer_blocks.#.attn.to_k",
        "transformer_blocks.#.attn.to_out.#",
        "transformer_blocks.#.attn.to_q",
        "transformer_blocks.#.attn.to_v",
        "transformer_blocks.#.ff.net.#",
        "transformer_blocks.#.ff.net.#.proj",
        "transformer_blocks.#.ff_context.net.#",
        "transformer_blocks.#.ff_context.net.#.proj",
        "transformer_blocks.#.norm1.linear",
        "transformer_blocks.#.norm1_context.linear",
    ),
    "flux": (
        "context_embedder",
        "norm_out.linear",
        "proj_out",
        "single_transformer_blocks.#.attn.to_k",
        "single_transformer_blocks.#.attn.to_q",
        "single_transformer_blocks.#.attn.to_v",
        "single_transformer_blocks.#.norm.linear",
        "single_transformer_blocks.#.proj_mlp",
        "single_transformer_blocks.#.proj_out",
        "time_text_embed.text_embedder.linear_1",
        "time_text_embed.text_embedder.linear_2",
        "time_text_embed.timestep_embedder.linear_1",
        "time_text_embed.timestep_embedder.linear_2",
        "transformer_blocks.#.attn.add_k_proj",
        "transformer_blocks.#.attn.add_q_proj",
        "transformer_blocks.#.attn.add_v_proj",
        "transformer_blocks.#.attn.to_add_out",
        "transformer_blocks.#.attn.to_k",
        "transformer_blocks.#.attn.to_out.#",
        "transformer_blocks.#.attn.to_q",
        "transformer_blocks.#.attn.to_v",
        "transformer_blocks.#.ff.net.#",
        "transformer_blocks.#.ff.net.#.proj",
        "transformer_blocks.#.ff_context.net.#",
        "transformer_blocks.#.ff_context.net.#.proj",
        "transformer_blocks.#.norm1.linear",
        "transformer_blocks.#.norm1_context.linear",
        "x_embedder",
    ),
    "unet": (
        "add_embedding.linear_1",
        "add_embedding.linear_2",
        "conv_in",
        "conv_out",
        "down_blocks.#.attentions.#.proj_in",
        "down_blocks.#.attentions.#.proj_out",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn1.to_k",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn1.to_out.#",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn1.to_q",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn1.to_v",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn2.to_k",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn2.to_out.#",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn2.to_q",
        "down_blocks.#.attentions.#.transformer_blocks.#.attn2.to_v",
        "down_blocks.#.attentions.#.transformer_blocks.#.ff.net.#",
        "down_blocks.#.attentions.#.transformer_blocks.#.ff.net.#.proj",
        "down_blocks.#.downsamplers.#.conv",
        "down_blocks.#.resnets.#.conv1",
        "down_blocks.#.resnets.#.conv2",
        "down_blocks.#.resnets.#.conv_shortcut",
        "down_blocks.#.resnets.#.time_emb_proj",
        "mid_block.attentions.#.proj_in",
        "mid_block.attentions.#.proj_out",
        "mid_block.attentions.#.transformer_blocks.#.attn1.to_k",
        "mid_block.attentions.#.transformer_blocks.#.attn1.to_out.#",
        "mid_block.attentions.#.transformer_blocks.#.attn1.to_q",
        "mid_block.attentions.#.transformer_blocks.#.attn1.to_v",
        "mid_block.attentions.#.transformer_blocks.#.attn2.to_k",
        "mid_block.attentions.#.transformer_blocks.#.attn2.to_out.#",
        "mid_block.attentions.#.transformer_blocks.#.attn2.to_q",
        "mid_block.attentions.#.transformer_blocks.#.attn2.to_v",
        "mid_block.attentions.#.transformer_blocks.#.ff.net.#",
        "mid_block.attentions.#.transformer_blocks.#.ff.net.#.proj",
        "mid_block.resnets.#.conv1",
        "mid_block.resnets.#.conv2",
        "mid_block.resnets.#.time_emb_proj",
        "time_embedding.linear_1",
        "time_embedding.linear_2",
        "up_blocks.#.attentions.#.proj_in",
        "up_blocks.#.attentions.#.proj_out",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn1.to_k",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn1.to_out.#",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn1.to_q",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn1.to_v",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn2.to_k",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn2.to_out.#",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn2.to_q",
        "up_blocks.#.attentions.#.transformer_blocks.#.attn2.to_v",
        "up_blocks.#.attentions.#.transformer_blocks.#.ff.net.#",
        "up_blocks.#.attentions.#.transformer_blocks.#.ff.net.#.proj",
        "up_blocks.#.resnets.#.conv1",
        "up_blocks.#.resnets.#.conv2",
        "up_blocks.#.resnets.#.conv_shortcut",
        "up_blocks.#.resnets.#.time_emb_proj",
        "up_blocks.#.upsamplers.#.conv",
    ),
    "pixart": (
        "adaln_single.emb.timestep_embedder.linear_1",
        "adaln_single.emb.timestep_embedder.linear_2",
        "adaln_single.linear",
        "caption_projection.linear_1",
        "caption_projection.linear_2",
        "pos_embed.proj",
        "proj_out",
        "transformer_blocks.#.attn1.to_k",
        "transformer_blocks.#.attn1.to_out.#",
        "transformer_blocks.#.attn1.to_q",
        "transformer_blocks.#.attn1.to_v",
        "transformer_blocks.#.attn2.to_k",
        "transformer_blocks.#.attn2.to_out.#",
        "transformer_blocks.#.attn2.to_q",
        "transformer_blocks.#.attn2.to_v",
        "transformer_blocks.#.ff.net.#",
        "transformer_blocks.#.ff.net.#.proj",
    ),
    "mlp": (
        "net.#",
    ),

}

_INDEX = re.compile(r"\.\d+(?=\.|$)")
_REGEX_CHARS = set("*+?()[]|\\^$")


def normalise(name: str) -> str:
    return _INDEX.sub(".#", name)


def target_matches(family: str, target: str) -> bool:
    """peft's rule: a plain target matches a module whose name equals it or ends with '.' + it;
    a target with regex characters must match a whole module name."""
    names = ADAPTABLE[family]
    if set(target) & _REGEX_CHARS:
        try:
            pattern = re.compile(target)
        except (re.error, OverflowError, RecursionError):
            return False
        # '#' stands for any block index; try it as 0 so patterns over indices still match.
        return any(_fullmatch(pattern, target, n.replace("#", "0")) for n in names)
    wanted = normalise(target)
    return any(n == wanted or n.endswith("." + wanted) for n in names)


class SlowPattern(ValueError):
    """A regular expression that backtracks catastrophically on module names."""


def _fullmatch(pattern: re.Pattern, target: str, name: str) -> bool:
    """re.fullmatch with a time limit where the `regex` package is there (it comes with transformers):
    a pattern like (.*.*)*X must not hang validation."""
    try:
        import regex
    except ImportError:
        return bool(pattern.fullmatch(name))
    try:
        return regex.fullmatch(target, name, timeout=0.2) is not None
    except TimeoutError:
        raise SlowPattern(target) from None
    except (regex.error, OverflowError, RecursionError):
        return False


def leaf_names(family: str) -> list[str]:
    """Short names to suggest: the last one or two segments of each module name."""
    leaves = set()
    for name in ADAPTABLE[family]:
        parts = name.split(".")
        leaf = ".".join(parts[-2:]) if parts[-1] == "#" else parts[-1]
        leaves.add(leaf.replace("#", "0"))
    return sorted(leaves)

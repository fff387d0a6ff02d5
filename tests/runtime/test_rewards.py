"""Rewards (runtime/rewards): one interface, batched, checked (a failure or a non-finite score names the
item), cached by (item hash, reward identity); each builtin scores what it says."""
import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from flowspec.runtime.data.shapes import make_scene, render
from flowspec.runtime.eval.checker import check
from flowspec.runtime.rewards import Reward, RewardError, Scorer, build_reward
from flowspec.schemas.rewards import Reward as RewardBlock

BLOCK = TypeAdapter(RewardBlock)


def reward(**block):
    return build_reward(BLOCK.validate_python(block))


def as_items(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def scenes(n: int, complexity=(1, 3)):
    found = [make_scene(7, i, complexity) for i in range(n)]
    return torch.cat([as_items(render(s, 32, 32)) for s in found]), [s.caption for s in found]


def test_shapes_checker_is_the_fraction_of_the_captions_checks_passed():
    items, captions = scenes(6)
    others = captions[1:] + captions[:1]
    scores = reward(kind="shapes_checker").score(items, others)
    for image, caption, score in zip(items, others, scores.tolist()):
        checks = check(((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy(), caption).checks
        assert score == pytest.approx(sum(checks.values()) / len(checks))
    assert reward(kind="shapes_checker").score(items, captions).tolist() == [1.0] * 6  # its own captions


def test_shapes_color_rewards_the_named_colour_and_is_differentiable():
    scene = next(s for i in range(50) if (s := make_scene(3, i, (1, 1))).caption.split()[1] == "red")
    items = as_items(render(scene, 32, 32)).requires_grad_(True)
    colour = reward(kind="shapes_color")
    right, wrong = colour.score(items.expand(2, -1, -1, -1), [scene.caption, scene.caption.replace("red", "blue")])
    assert right > 0.8 and wrong < 0.05  # edge pixels blend the colour with the background
    right.backward()
    assert items.grad.abs().sum() > 0
    blank = torch.ones(1, 3, 32, 32)
    assert colour.score(blank, ["a red circle"]).item() < 0.05  # no colour at all: nothing to agree with
    with pytest.raises(ValueError, match="names none of the colours"):
        colour.score(blank, ["a circle"])


def test_jpeg_rewards_are_ddpos_file_sizes_with_opposite_signs():
    flat = torch.zeros(1, 3, 32, 32)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    items = torch.cat([flat, noise])
    small, large = reward(kind="jpeg_incompressibility").score(items, ["", ""]).tolist()
    assert large > small > 0
    assert reward(kind="jpeg_compressibility").score(items, ["", ""]).tolist() == [-small, -large]
    assert reward(kind="jpeg_incompressibility", quality=10).score(noise, [""]).item() < large


def test_clip_score_from_a_local_folder_is_the_cosine_of_clips_embeddings(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from tests.runtime.test_models import write_word_tokenizer

    eos = write_word_tokenizer(tmp_path)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                max_position_embeddings=16, eos_token_id=eos, pad_token_id=0, bos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(tmp_path))
    clip = reward(kind="clip_score", path=str(tmp_path))
    items, captions = scenes(3)
    items.requires_grad_(True)
    scores = clip.score(items, captions)
    by_hand = []
    for image, caption in zip(items.detach(), captions):  # CLIP's own forward on CLIP's own preprocessing
        x = torch.nn.functional.interpolate((image[None] + 1) / 2, size=(32, 32), mode="bicubic", antialias=True)
        x = (x - clip.mean) / clip.std
        tokens = clip.tokenizer([caption], return_tensors="pt")
        out = clip.model(**tokens, pixel_values=x)
        by_hand.append(torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item())
    assert scores.tolist() == pytest.approx(by_hand, abs=1e-5)
    scores.sum().backward()
    assert items.grad.abs().sum() > 0 and clip.differentiable


class Planted(Reward):
    """A reward that misbehaves on cue: on prompts 'raise', 'nan', or always with the wrong shape."""

    def __init__(self, shape_bug=False):
        self.kind, self.differentiable, self.shape_bug, self.calls = "planted", False, shape_bug, 0

    def identity(self):
        return "planted"

    def score(self, items, prompts):
        self.calls += len(items)
        if "raise" in prompts:
            raise KeyError("no such thing")
        out = items.flatten(1).sum(dim=1)
        out[[p == "nan" for p in prompts]] = float("nan")
        return out[:, None] if self.shape_bug else out


def test_a_failure_or_a_non_finite_score_stops_with_the_item_named():
    items = torch.arange(10.0).view(5, 2)
    ok = ["a", "b", "c", "d", "e"]
    with pytest.raises(RewardError, match=r"failed on item 3 \(prompt 'raise'\): KeyError"):
        Scorer(Planted(), batch_size=2)(items, ["a", "b", "c", "raise", "e"])
    with pytest.raises(RewardError, match=r"gave nan on item 4 \(prompt 'nan'\)"):
        Scorer(Planted(), batch_size=2)(items, ["a", "b", "c", "d", "nan"])
    with pytest.raises(RewardError, match=r"returned shape \(2, 1\) for 2 items"):
        Scorer(Planted(shape_bug=True), batch_size=2)(items, ok)
    with pytest.raises(RewardError, match="not differentiable"):
        Scorer(Planted())(items, ok, grad=True)


def test_scores_are_cached_by_item_and_prompt_and_equal_fresh_ones():
    planted = Planted()
    scorer = Scorer(planted, batch_size=3)
    items = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    first = scorer(items, list("abcde"))
    assert torch.equal(first, items.sum(dim=1)) and planted.calls == 5
    again = scorer(torch.cat([items[:3], items[:1]]), ["a", "b", "c", "z"])  # the last: same item, other prompt
    assert torch.equal(again[:3], first[:3]) and planted.calls == 6 and (scorer.hits, scorer.misses) == (3, 6)


def test_a_differentiable_score_keeps_its_graph_and_is_never_cached():
    region = Scorer(reward(kind="toy2d_region", centers=[[0.0, 0.0]], radius=1.0))
    x = torch.tensor([[3.0, 4.0], [0.1, 0.2]], requires_grad=True)
    out = region(x, ["", ""], grad=True)
    out.sum().backward()
    assert out.tolist() == pytest.approx([-4.0, 0.0])
    assert x.grad[0].tolist() == pytest.approx([-0.6, -0.8]) and x.grad[1].tolist() == [0.0, 0.0]
    assert region.misses == 0


def test_a_module_reward_is_called_with_items_and_prompts(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def length(items, prompts):\n    return [float(len(p)) for p in prompts]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    block = BLOCK.validate_python({"kind": "module", "target": "my_rewards:length"}, context={"spec_dir": str(tmp_path)})
    scorer = Scorer(build_reward(block, str(tmp_path)))
    assert scorer(torch.zeros(2, 2), ["ab", "abcd"]).tolist() == [2.0, 4.0]
    with pytest.raises(Exception, match="has no 'missing'"):
        BLOCK.validate_python({"kind": "module", "target": "my_rewards:missing"}, context={"spec_dir": str(tmp_path)})


REWARD_SPEC = """\
flowspec: 1
name: prefs
model: {kind: mlp, preset: tiny}
data: {source: {kind: toy2d, distribution: {kind: gaussian_mixture, means: [[-1, 0], [1, 0]], stds: [0.2, 0.2]}}}
train: {global_batch: 8}
stages:
  - {name: pretrain, kind: pretrain, steps: 10}
  - name: grpo
    kind: flow_grpo
    from: pretrain
    steps: 10
    group_size: 4
    reward: {kind: module, target: "region_reward:score"}
"""


def spec_errors(folder, *sets):
    from flowspec.compiler import SpecError, compile_spec

    try:
        compile_spec(str(folder / "spec.yaml"), None, list(sets))
    except SpecError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def test_rewards_are_checked_at_their_line_in_validate(tmp_path):
    (tmp_path / "spec.yaml").write_text(REWARD_SPEC)
    line = REWARD_SPEC.splitlines().index('    reward: {kind: module, target: "region_reward:score"}') + 1
    missing = spec_errors(tmp_path)
    assert len(missing) == 1 and missing[0].startswith(f"{tmp_path / 'spec.yaml'}:{line}:")
    assert "stages.grpo.reward.target: cannot import module 'region_reward'" in missing[0]
    (tmp_path / "region_reward.py").write_text("score = 3\n")
    assert "'region_reward:score' is not a function of (items, prompts): it is int" in spec_errors(tmp_path)[0]
    (tmp_path / "region_reward.py").write_text("def score(items, prompts):\n    return items[:, 0]\n")
    import sys

    sys.modules.pop("region_reward", None)
    assert spec_errors(tmp_path) == []
    images_only = spec_errors(tmp_path, "stages.grpo.reward={kind: jpeg_compressibility}")
    assert len(images_only) == 1 and "jpeg_compressibility scores images; this stage's data is toy2d" in images_only[0]
    points_only = spec_errors(tmp_path, "stages.grpo.reward={kind: toy2d_region, centers: [[1, 0]]}",
                              "data.source={kind: shapes}", "model.kind=unet")
    assert any("toy2d_region scores 2-D points; this stage's data is shapes" in e for e in points_only)


def test_the_score_cache_keeps_the_newest_items_only(monkeypatch):
    import flowspec.runtime.rewards as rewards

    monkeypatch.setattr(rewards, "CACHE_ITEMS", 3)
    planted = Planted()
    scorer = Scorer(planted)
    items = torch.arange(10.0).view(5, 2)
    scorer(items, list("abcde"))
    assert len(scorer.cache) == 3
    scorer(items[3:], list("de"))  # the newest are still there
    assert planted.calls == 5
    scorer(items[:1], ["a"])  # the oldest was dropped: scored again
    assert planted.calls == 6

"""Fix-ups for the schema walker of spec_strategies.py: documented edits that make most generated
spec documents pass the compiler's semantic checks, and the `raw_specs` / `specs` strategies."""
from __future__ import annotations

import functools
import typing
from typing import Any, Callable

from flowspec.schemas import Spec
from flowspec.schemas.data import MAX_COMPLEXITY, SHAPES_CLASSES
from flowspec.schemas.lora_targets import leaf_names
from flowspec.schemas.presets import MODEL_PRESETS, VAE_PRESETS
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from .spec_strategies import (
    KIND,
    Tagged,
    all_dicts,
    blocks,
    names,
    tagged_blocks,
    tagged_of,
)

# ------------------------------------------------------------------------------------ fix-ups
# Each fix-up edits a generated document in place (drawing what it needs) so that more documents pass
# the semantic checks. They are coarse on purpose: a spec they miss is still a fine test case (it must
# fail with a SpecError, never anything else). In order:
#   1 data_matches_family          toy2d data iff the mlp family; the mlp family keeps its pixel latent; no
#                                  module source (its class would have to import)
#   2 mixtures_are_planned         no webdataset or module component in a mixture
#   3 model_config_follows_latent  config overrides keep preset values; input channels follow the latent
#   4 class_labels_from_data       a class-conditional model reads labelled data, a label row per class
#   5 stage_graph                  unique names; from/teacher/reference name earlier stages
#   6 steps_and_curricula          steps >= MIN_STEPS, phases at 0, 10, 20.., resolutions x SAFE_RESOLUTION
#   7 batches_divide               device counts, global/micro batches and groups that divide
#   8 lora_targets_exist           LoRA targets are module names of the family
#   9 rewards_fit                  ReFL rewards differentiable; every reward scores the data; plugins import
#  10 prompts_name_the_identifier  a DreamBooth instance prompt contains its identifier
#  11 enhancers_where_generated    prompt enhancers only on stages that generate images
Fixup = Callable[[Callable, dict], None]
FIXUPS: list[Fixup] = []

SAFE_RESOLUTION = 32  # a multiple of VAE factor x patch of every preset (largest: VAE 8 x UNet-sdxl 4)
MIN_STEPS = 100
PHASE_GAP = 10
GLOBAL_BATCHES = (48, 96)  # divisible by every MICRO_BATCHES x device count and every GROUP_SIZES
MICRO_BATCHES = (1, 2, 3)
DEVICE_COUNTS = (1, 2, 4)
GROUP_SIZES = (2, 3, 4, 6, 8, 12, 16, 24)
TOY_SOURCE, TOY_FAMILY = "toy2d", "mlp"
SHAPES_REWARDS = ("shapes_checker", "shapes_color")  # rewards that score against shapes captions
POINT_REWARDS = ("toy2d_region",)  # rewards that score 2-D points (the others score images; a plugin either)
PLUGIN = "operator:add"  # a function that imports anywhere: plugins are imported at validate time
PLUGIN_SOURCE = "module"  # a data source class of the user's: none imports anywhere, so it is redrawn
STREAMED_SOURCE = "webdataset"  # no item counts: a mixture cannot plan its epochs
LABELLED_SOURCES = ("shapes", "imagefolder")  # sources that give class labels


def fixup(fn: Fixup) -> Fixup:
    FIXUPS.append(fn)
    return fn


def _stages(doc: dict) -> list[dict]:
    return [s for s in doc.get("stages", []) if isinstance(s, dict)]


@functools.cache
def _union_at(model: type[BaseModel], field: str) -> Tagged:
    info = model.model_fields[field]
    return tagged_of(info.annotation, tuple(info.metadata))


@functools.cache
def _stage_union() -> Tagged:
    return tagged_of(typing.get_args(Spec.model_fields["stages"].annotation)[0])


@functools.cache
def _source_union() -> Tagged:
    from flowspec.schemas.data import Data

    return _union_at(Data, "source")


@fixup
def data_matches_family(draw, doc: dict) -> None:
    """1. Data fits the model family: toy2d sources iff the mlp family (a source of the wrong kind is
    redrawn from the source union); DreamBooth subjects are images; the mlp family keeps its default
    (pixel) latent, as its field says."""
    union = _source_union()
    toy = doc["model"].get(KIND) == TOY_FAMILY
    image_tags = [t for t in union.tags if t not in (TOY_SOURCE, PLUGIN_SOURCE)]
    for holder in _source_holders(doc):
        kind = holder["source"].get(KIND, union.default)
        if (kind == TOY_SOURCE) != toy or kind == PLUGIN_SOURCE:
            tag = TOY_SOURCE if toy else draw(st.sampled_from(image_tags))
            holder["source"] = draw(tagged_blocks(union, only=tag, with_kind=True))
    for stage in _stages(doc):
        if isinstance(stage.get("instance_data"), dict) and stage["instance_data"].get(KIND) in (TOY_SOURCE, PLUGIN_SOURCE):
            stage["instance_data"] = draw(tagged_blocks(union, only=draw(st.sampled_from(image_tags)), with_kind=True))
    if toy:
        doc["model"].pop("latent", None)


def _source_holders(doc: dict) -> list[dict]:
    """The root data block and each stage data block that writes its own source."""
    return [doc["data"], *(s["data"] for s in _stages(doc) if isinstance(s.get("data"), dict) and "source" in s["data"])]


@fixup
def mixtures_are_planned(draw, doc: dict) -> None:
    """2. A mixture's components are sources with item counts: a STREAMED_SOURCE component is redrawn."""
    from flowspec.schemas.data import Component

    union = _union_at(Component, "source")
    others = [t for t in union.tags if t not in (STREAMED_SOURCE, PLUGIN_SOURCE)]
    for holder in _source_holders(doc):
        for component in holder["source"].get("components", []):
            if component["source"].get(KIND, union.default) in (STREAMED_SOURCE, PLUGIN_SOURCE):
                component["source"] = draw(tagged_blocks(union, only=draw(st.sampled_from(others)), with_kind=True))


@functools.cache
def _model_adapter() -> TypeAdapter:
    from flowspec.schemas.model import Model

    return TypeAdapter(Model)


@fixup
def model_config_follows_latent(draw, doc: dict) -> None:
    """3. `model.config` overrides of keys the preset defines keep the preset's value (the keys are
    still written), and the input (and output) channels follow the latent space: the VAE's latent
    channels, 3 for pixels, 2 for 2-D points, times what the family packs into one input."""
    model = doc["model"]
    member = _union_at(Spec, "model").members[model[KIND]]
    preset = MODEL_PRESETS[model[KIND]][model.get("preset", member.model_fields["preset"].default)]
    for key in model.get("config", {}):
        if key in preset:
            model["config"][key] = list(preset[key]) if isinstance(preset[key], tuple) else preset[key]
    try:
        built = _model_adapter().validate_python(model)
    except Exception:  # noqa: BLE001 - an invalid model block stays as drawn (a SpecError later)
        return
    if built.latent.kind == "vae":
        channels = VAE_PRESETS[built.latent.preset]["latent_channels"]
    else:
        channels = 2 if model[KIND] == TOY_FAMILY else 3
    resolved = built.resolved_config()
    key = "in_channels" if "in_channels" in resolved else "in_dim"
    packing = resolved[key] // built.latent_channels_expected()
    config = model.setdefault("config", {})
    config[key] = channels * packing
    if "out_channels" in resolved:
        config["out_channels"] = channels * packing


@fixup
def class_labels_from_data(draw, doc: dict) -> None:
    """4. A class-conditional model (class_count() is not None) trains on LABELLED_SOURCES (another source
    is redrawn among them) and its label table has a row for each class of the shapes data."""
    try:
        built = _model_adapter().validate_python(doc["model"])
    except Exception:  # noqa: BLE001 - an invalid model block stays as drawn (a SpecError later)
        return
    if built.class_count() is None:
        return
    union = _source_union()
    for holder in _source_holders(doc):
        if holder["source"].get(KIND, union.default) not in LABELLED_SOURCES:
            holder["source"] = draw(tagged_blocks(union, only=draw(st.sampled_from(LABELLED_SOURCES)), with_kind=True))
    doc["model"].setdefault("config", {})["num_embeds_ada_norm"] = len(SHAPES_CLASSES)


def _unique_names(items: list) -> None:
    seen: set = set()
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            while item["name"] in seen:
                item["name"] = f"{item['name']}_{i}"
            seen.add(item["name"])


@fixup
def stage_graph(draw, doc: dict) -> None:
    """5. Names are unique in every list of named blocks (stages, mixture components: an index is
    appended to a repeat); `from` of a later stage names an earlier stage (one time in three a local
    path); the first stage starts from a local path unless it is a pretrain stage (then drawn);
    `teacher` / `reference`, where written, name earlier stages (dropped in the first stage)."""
    for node in all_dicts(doc):
        for value in node.values():
            if isinstance(value, list):
                _unique_names(value)
    earlier: list[str] = []
    for stage in _stages(doc):
        path = f"./weights/{draw(names())}"
        if earlier:
            stage["from"] = draw(st.sampled_from([*earlier, *earlier, path]))
        elif stage.get(KIND) != "pretrain" or draw(st.booleans()):
            stage["from"] = path
        else:
            stage.pop("from", None)
        for key in ("teacher", "reference"):
            if key in stage:
                if earlier:
                    stage[key] = draw(st.sampled_from(earlier))
                else:
                    stage.pop(key)
        earlier.append(stage["name"])


@fixup
def steps_and_curricula(draw, doc: dict) -> None:
    """6. Stages run at least MIN_STEPS steps; curriculum phases start at 0, PHASE_GAP, 2 x PHASE_GAP...
    (well before any stage ends); resolutions are SAFE_RESOLUTION or twice it; complexity bands are
    sorted into the levels 1..MAX_COMPLEXITY."""
    for stage in _stages(doc):
        stage["steps"] += MIN_STEPS
    for node in all_dicts(doc):
        phases = node.get("curriculum")
        if not isinstance(phases, list):
            continue
        for j, phase in enumerate(phases):
            phase["at_step"] = j * PHASE_GAP
            if "resolution" in phase:
                phase["resolution"] = SAFE_RESOLUTION * (1 + phase["resolution"] % 2)
            if "complexity" in phase:
                phase["complexity"] = sorted(1 + c % MAX_COMPLEXITY for c in phase["complexity"])


@fixup
def batches_divide(draw, doc: dict) -> None:
    """7. Batch arithmetic works out: executors run on DEVICE_COUNTS devices (slurm: 1-2 nodes of 0-2
    GPUs); the root global batch is always written and every global batch is one of GLOBAL_BATCHES;
    micro batches are MICRO_BATCHES; GRPO groups are GROUP_SIZES; `accumulation` is left derived."""
    for node in all_dicts(doc):
        if KIND in node and isinstance(node.get("devices"), int):
            node["devices"] = draw(st.sampled_from(DEVICE_COUNTS))
        if KIND in node and isinstance(node.get("nodes"), int):
            node["nodes"] = draw(st.sampled_from(DEVICE_COUNTS[:2]))
        if KIND in node and isinstance(node.get("gpus_per_node"), int):
            node["gpus_per_node"] = draw(st.sampled_from((0, 1, 2)))
        if KIND in node and isinstance(node.get("group_size"), int):
            node["group_size"] = draw(st.sampled_from(GROUP_SIZES))
        if "global_batch" in node:
            node["global_batch"] = draw(st.sampled_from(GLOBAL_BATCHES))
        if node.get("micro_batch") is not None:
            node["micro_batch"] = draw(st.sampled_from(MICRO_BATCHES))
        node.pop("accumulation", None)  # only train blocks have one
    doc.setdefault("train", {})["global_batch"] = draw(st.sampled_from(GLOBAL_BATCHES))


@fixup
def lora_targets_exist(draw, doc: dict) -> None:
    """8. LoRA targets (when a list) are module names of the model family."""
    leaves = leaf_names(doc["model"][KIND])
    for stage in _stages(doc):
        lora = stage.get("lora")
        if isinstance(lora, dict) and isinstance(lora.get("targets"), list):
            lora["targets"] = draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=2, unique=True))


def _differentiable(model: type[BaseModel]) -> bool:
    """A reward that is differentiable as a class, or can be told so (`differentiable: true`)."""
    return "differentiable" in model.model_fields or getattr(model, "differentiable", False) is True


@fixup
def rewards_fit(draw, doc: dict) -> None:
    """9. Rewards fit their stage: a ReFL stage (the kind with `grad_steps`) gets a differentiable
    reward (redrawn among the kinds that are, `differentiable: true` where it is a key) and a gradient
    step range inside its rollout; every reward (the stage's, its gold's, its generated pairs') scores the
    stage's data: SHAPES_REWARDS need `shapes` data, POINT_REWARDS need toy2d and image rewards images;
    a plugin names a function that imports (PLUGIN)."""
    for stage in _stages(doc):
        model = _stage_union().members[stage[KIND]]
        source = (stage.get("data") or {}).get("source") or doc["data"]["source"]
        kind = source.get(KIND, _source_union().default)
        refl = "grad_steps" in model.model_fields
        for owner, field, holder in _reward_places(model, stage):
            _fit_reward(draw, owner, field, holder, kind, refl and holder is stage)
        if refl:
            rollout = stage.get("sampling_steps", model.model_fields["sampling_steps"].default)
            stage["grad_steps"] = sorted(g % rollout for g in stage.get("grad_steps", model.model_fields["grad_steps"].default))
            stage["backprop_steps"] = min(stage.get("backprop_steps", 1), stage["grad_steps"][0] + 1)
        enhancer = stage.get("prompt_enhancer")
        if isinstance(enhancer, dict) and enhancer.get(KIND) == "module":
            enhancer["target"] = PLUGIN


def _reward_places(model: type[BaseModel], stage: dict):
    """(model, field, block) of each reward a stage holds: its own, its gold's, its generated pairs'."""
    if "reward" in model.model_fields:
        yield model, "reward", stage
    for field in ("gold", "pairs"):
        block = stage.get(field)
        if field in model.model_fields and isinstance(block, dict):
            inner = next((m for m in _members(model.model_fields[field].annotation)
                          if "reward" in m.model_fields and (field == "gold" or block.get(KIND, "generated") == "generated")),
                         None)
            if inner is not None and "reward" in block:
                yield inner, "reward", block


def _members(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (Optional, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _members(arg)]


def _fit_reward(draw, model: type[BaseModel], field: str, holder: dict, source: str, differentiable: bool) -> None:
    union = _union_at(model, field)
    fits = [t for t, m in union.members.items()
            if (source == "shapes" or t not in SHAPES_REWARDS) and (t == "module" or (t in POINT_REWARDS) == (source == TOY_SOURCE))
            and (not differentiable or _differentiable(m))]
    if holder[field].get(KIND, union.default) not in fits:
        holder[field] = draw(tagged_blocks(union, only=draw(st.sampled_from(fits)), with_kind=True))
    block = holder[field]
    if block.get(KIND) == "module":
        block["target"] = PLUGIN
    if differentiable and "differentiable" in union.members[block[KIND]].model_fields:
        block["differentiable"] = True


@fixup
def prompts_name_the_identifier(draw, doc: dict) -> None:
    """10. A DreamBooth instance prompt contains the stage's identifier (its validator's rule)."""
    for stage in _stages(doc):
        model = _stage_union().members[stage[KIND]]
        if "identifier" in model.model_fields:
            identifier = stage.get("identifier", model.model_fields["identifier"].default)
            stage["instance_prompt"] = f"a photo of {identifier} {stage.get('instance_prompt', '')}".strip()


@fixup
def enhancers_where_generated(draw, doc: dict) -> None:
    """11. A prompt_enhancer stays only on a stage whose kind generates images from prompts (`generates`)."""
    for stage in _stages(doc):
        if not _stage_union().members[stage[KIND]].generates:
            stage.pop("prompt_enhancer", None)


def apply_fixups(draw, doc: dict) -> dict:
    for fn in FIXUPS:
        fn(draw, doc)
    return doc


@st.composite
def raw_specs(draw) -> dict[str, Any]:
    """Documents shaped by the schema alone (most fail a semantic check)."""
    return draw(blocks(Spec))


@st.composite
def specs(draw) -> dict[str, Any]:
    """Documents from the schema with FIXUPS applied: most compile."""
    return apply_fixups(draw, draw(blocks(Spec)))

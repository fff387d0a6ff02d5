"""Semantic checks of the model against the data, the curriculum, LoRA, REPA, shift and rewards."""
from __future__ import annotations

from typing import Iterator

from ..schemas import Spec
from ..schemas.buckets import bucket_sides
from ..schemas.data import SHAPES_CLASSES
from ..schemas.lora_targets import SlowPattern, leaf_names, target_matches
from .checks import Finding, check
from .errors import did_you_mean

IMAGE_CHANNELS = 3


def latent_factor(spec: Spec) -> int:
    latent = spec.model.latent
    return latent.factor() if latent.kind == "vae" else 1


def latent_channels(spec: Spec) -> int:
    latent = spec.model.latent
    if latent.kind == "vae":
        return latent.channels()
    return 2 if spec.data.source.kind == "toy2d" else IMAGE_CHANNELS


@check
def model_matches_data(spec: Spec) -> Iterator[Finding]:
    model = spec.model
    for i, stage in enumerate(spec.stages):
        toy = stage.data.source.kind == "toy2d"
        if toy != (model.kind == "mlp"):
            want = "the mlp family" if toy else "an image family (dit, mmdit, flux, unet, pixart)"
            yield Finding(("stages", i, "data", "source", "kind"),
                          f"{stage.data.source.kind} data needs {want}, but model.kind is {model.kind}")
            return
    if model.kind == "mlp" and model.latent.kind != "pixel":
        yield Finding(("model", "latent", "kind"), "the mlp family works on raw 2-D points: latent must be pixel")
        return
    channels, expected = latent_channels(spec), model.latent_channels_expected()
    if channels != expected:
        key = "in_dim" if model.kind == "mlp" else "in_channels"
        yield Finding(("model", "latent"), f"the latent space has {channels} channels but the {model.kind} model "
                      f"expects {expected} (model.config.{key}{' = 4 x channels for flux' if model.kind == 'flux' else ''})")
    if model.kind == "dit" and model.conditioning == "text" and model.text_encoder is None:
        yield Finding(("model", "text_encoder"), "text conditioning needs a text_encoder")


@check
def text_encoder_widths(spec: Spec) -> Iterator[Finding]:
    encoder = spec.model.text_encoder
    if encoder is None:
        return
    width = getattr(encoder, "width", None)
    if encoder.kind not in ("builtin", "minilm") or width is None:
        return  # local CLIP/T5 folders are read at plan time
    wrong = [(key, expected) for expected, key in zip(spec.model.text_widths(), spec.model.text_width_keys())
             if expected is not None and key is not None and expected != width]
    if wrong:
        fixes = ", ".join(f"model.config.{key}: {width}" + (" + 6 x addition_time_embed_dim" if key.startswith("projection") else "")
                          for key, _ in wrong)
        expects = " and ".join(f"{key} = {expected}" for key, expected in wrong)
        yield Finding(("model", "text_encoder"), f"{encoder.kind} text encoder gives {width}-d states but the model "
                      f"has {expects} (set {fixes})")


@check
def resolutions(spec: Spec) -> Iterator[Finding]:
    if spec.model.kind == "mlp":
        return
    factor, patch = latent_factor(spec), spec.model.patch_factor()
    multiple = factor * patch
    config = spec.model.resolved_config()
    for i, stage in enumerate(spec.stages):
        phases = stage.data.curriculum
        for j, phase in enumerate(phases):
            path = ("stages", i, "data", "curriculum", j)
            if j == 0 and phase.at_step != 0:
                yield Finding((*path, "at_step"), "the first curriculum phase must start at step 0")
            if j and phase.at_step <= phases[j - 1].at_step:
                yield Finding((*path, "at_step"), f"phase starts must increase (previous starts at {phases[j - 1].at_step})")
            if phase.at_step >= stage.steps:
                yield Finding((*path, "at_step"), f"starts at step {phase.at_step}, after the stage's last step ({stage.steps})")
            if phase.resolution % multiple:
                why = f"VAE factor {factor} x {spec.model.kind} patch {patch}" if spec.model.latent.kind == "vae" \
                    else f"pixel space, {spec.model.kind} patch {patch}"
                yield Finding((*path, "resolution"), f"{phase.resolution} px is not a multiple of {multiple} ({why})")
                continue
            sides = [bucket_sides(phase.resolution, r, multiple) for r in phase.aspect_ratios]
            if spec.model.kind == "dit" and any(h != w for h, w in sides):
                yield Finding((*path, "aspect_ratios"), "diffusers' DiTTransformer2DModel only takes square inputs: "
                              "use aspect_ratios: [1.0], or the pixart family (a DiT with cross-attention, any aspect)")
            longest = max(max(hw) for hw in sides)
            max_pos = config.get("pos_embed_max_size")
            if spec.model.kind == "mmdit" and max_pos and longest // multiple > max_pos:
                yield Finding((*path, "resolution"), f"the longest bucket side ({longest} px) is {longest // multiple} "
                              f"patches, more than pos_embed_max_size {max_pos}: raise model.config.pos_embed_max_size")


@check
def lora_targets(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        if stage.lora is None or stage.lora.targets == "all-linear":
            continue
        for j, target in enumerate(stage.lora.targets):
            try:
                matched = target_matches(spec.model.kind, target)
            except SlowPattern:
                yield Finding(("stages", i, "lora", "targets", j), f"the regular expression '{target}' backtracks "
                              "catastrophically (it took too long to match short module names): simplify it")
                continue
            if not matched:
                leaves = leaf_names(spec.model.kind)
                yield Finding(("stages", i, "lora", "targets", j), f"no {spec.model.kind} module matches '{target}'"
                              f"{did_you_mean(target, leaves)} (e.g. {', '.join(leaves[:8])})")


@check
def repa(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        for j, extra in enumerate(getattr(stage, "aux_losses", ())):
            path = ("stages", i, "aux_losses", j)
            if spec.model.kind in ("unet", "mlp"):
                yield Finding((*path, "kind"), f"REPA aligns transformer blocks; the {spec.model.kind} family has none")
            elif extra.depth >= spec.model.depth():
                yield Finding((*path, "depth"), f"depth {extra.depth} is not below the model depth {spec.model.depth()}"
                              " (REPA aligns an early block, about 1/4 to 1/3 of the depth)")


@check
def shifts(spec: Spec) -> Iterator[Finding]:
    for i, stage in enumerate(spec.stages):
        shift = stage.timesteps.shift
        path = ("stages", i, "timesteps", "shift")
        if spec.model.kind == "mlp":
            if shift.kind in ("resolution", "dynamic"):
                yield Finding((*path, "kind"), f"a {shift.kind} shift needs images; 2-D data has no resolution")
            continue
        resolutions = sorted({p.resolution for p in stage.data.curriculum})
        if shift.kind == "fixed" and len(resolutions) > 1:
            yield Finding((*path, "kind"), f"one fixed alpha across resolutions {resolutions}: a `resolution` shift "
                          "recomputes alpha = sqrt(pixels / base pixels) at each phase", "warning")
        if shift.kind == "dynamic":
            cell = latent_factor(spec) * 2  # Flux counts tokens after 2x2 packing
            for res in resolutions:
                tokens = (res // cell) ** 2
                if not shift.base_seq_len <= tokens <= shift.max_seq_len:
                    yield Finding((*path, "base_seq_len"), f"{res} px gives {tokens} tokens, outside "
                                  f"[{shift.base_seq_len}, {shift.max_seq_len}]: mu is extrapolated", "warning")


@check
def class_labels(spec: Spec) -> Iterator[Finding]:
    """A class-conditional model gets labels from its data, and has a row for each of the data's classes."""
    model = spec.model
    if model.kind == "mlp" and model.resolved_config().get("num_classes"):
        yield Finding(("model", "config", "num_classes"), "2-D toy data has no class labels: a class embedding "
                      "would never be used (set num_classes: 0)")
    count = model.class_count()
    if count is None:
        return
    for i, stage in enumerate(spec.stages):
        source = stage.data.source
        if source.kind not in ("shapes", "imagefolder"):
            yield Finding(("stages", i, "data", "source", "kind"), f"a class-conditional {model.kind} needs class "
                          f"labels, which a {source.kind} source does not give: use shapes, an image folder with one "
                          "subfolder per class, or conditioning: text")
        elif source.kind == "shapes" and len(SHAPES_CLASSES) > count:
            key = ("model", "config", "num_embeds_ada_norm") if "num_embeds_ada_norm" in model.config.model_fields_set \
                else ("model", "preset")
            yield Finding(key, f"the shapes data has {len(SHAPES_CLASSES)} classes but the {model.kind} model's "
                          f"label table has {count}: set model.config.num_embeds_ada_norm: {len(SHAPES_CLASSES)}")

@check
def latent_source(spec: Spec) -> Iterator[Finding]:
    """model.latent.from names an autoencoder stage that runs before every stage using the latent space, and no
    denoiser stage loads an autoencoder stage's weights as its own."""
    latent, names = spec.model.latent, [s.name for s in spec.stages]
    trains = {s.name: s.trains for s in spec.stages}
    source = latent.from_ if latent.kind == "vae" else None
    if source is not None and latent.path is not None:
        yield Finding(("model", "latent", "path"), "give `path` (a trained VAE folder) or `from` (an autoencoder "
                      "stage that trains one), not both")
    if source is not None:
        encoders = [n for n in names if trains[n] == "vae"]
        users = [i for i, s in enumerate(spec.stages) if trains[s.name] != "vae"]
        if source not in names:
            yield Finding(("model", "latent", "from"), f"unknown stage '{source}'{did_you_mean(source, names)} "
                          f"(autoencoder stages: {', '.join(encoders) or 'none'})")
        elif trains[source] != "vae":
            yield Finding(("model", "latent", "from"), f"'{source}' is a {spec.stages[names.index(source)].kind} "
                          "stage: model.latent.from names an autoencoder stage")
        elif users and users[0] < names.index(source):
            yield Finding(("model", "latent", "from"), f"stage '{names[users[0]]}' uses the latent space before "
                          f"'{source}' trains it: move the autoencoder stage first")
    for i, stage in enumerate(spec.stages):
        if trains[stage.name] == "vae":
            continue
        for field, ref in stage.written_refs().items():
            if trains.get(ref) == "vae":
                yield Finding(("stages", i, field), f"'{ref}' trains the VAE, not a denoiser: a {stage.kind} stage "
                              "reads a denoiser stage (the VAE reaches it through model.latent.from)")

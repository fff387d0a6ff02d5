"""DreamBooth's ops: `instance_data` (the subject's images, captioned with the instance prompt) and
`generate_prior` (class images sampled once by the frozen starting model, kept in a content-keyed cache:
a second run, or a resumed one, generates nothing; another class prompt or starting model generates anew)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from ...compiler import Issue, Location, SpecError
from ..data.sources import METADATA, DataError, listing
from ..data.stream import BatchStream
from ..models.lora import fingerprint
from ..sampling import SampleRequest, generate, latent_multiple
from . import op
from .context import StageContext

PRIOR_CACHE = "dreambooth_prior"


class CaptionedFeed:
    """The batches of `feed` with the instance prompt as caption: for every image, or (`own`) only for
    those without a caption of their own."""

    def __init__(self, feed, caption: str, own: bool = False):
        self.feed, self.caption, self.own = feed, caption, own

    def batch(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        captions = [c if self.own and c else self.caption for c in batch.captions]
        return dataclasses.replace(batch, captions=captions)


def instance_source(source):
    """The instance images' source and whether they keep their own captions: an imagefolder's captions
    (metadata.jsonl or NAME.txt sidecars) when it has any; the instance prompt otherwise, and always for
    the procedural sources, whose captions know nothing of the subject."""
    if source.kind != "imagefolder" or source.captions == "none":
        return source, False
    if source.captions == "auto":
        root = Path(source.path).expanduser()
        if root.is_dir() and not (root / METADATA).is_file() and not any(root.rglob("*.txt")):
            return source.model_copy(update={"captions": "none"}), False
    return source, True


def lacking_identifier(folder, identifier: str) -> list[str]:
    """The images whose own caption does not name the subject (the identifier as a whole word)."""
    word = re.compile(rf"(?<!\w){re.escape(identifier)}(?!\w)")
    return [r.key for r in folder.records if not word.search(r.caption)]


def instance_stream(stage, stage_plan, seed: int, micro: int, accumulation: int, multiple: int, rank: int = 0,
                    world: int = 1) -> tuple[BatchStream, bool, int]:
    """The subject's batch stream, whether its images keep their own captions, and how many there are; a
    missing or empty folder, an unreadable image, a caption without the identifier: a positioned error.
    `flowspec plan` and `run` check this before anything trains."""
    source, own = instance_source(stage.instance_data)
    try:
        stream = BatchStream(stage.data.model_copy(update={"source": source}), seed, micro, accumulation, multiple,
                             rank, world)
        found = sum(part["kept"] for phase in stream.report() for part in phase["components"])
    except DataError as exc:
        raise instance_error(stage_plan, str(exc)) from None
    for folder in stream.sources.values() if own else ():
        lacking = lacking_identifier(folder, stage.identifier)
        if lacking:
            raise instance_error(stage_plan, f"{len(lacking)} instance caption(s) in {folder.root} do not contain "
                                 f"the identifier '{stage.identifier}': {listing(lacking)} (captions: none gives "
                                 "every image the instance prompt)")
    return stream, own, found


def instance_error(stage_plan, message: str) -> SpecError:
    """A problem with the subject's images, positioned at the stage's instance_data line."""
    where = next((o.loc for o in stage_plan.ops if o.op == "instance_data"), stage_plan.loc)
    return SpecError([Issue(Location.parse(where), f"stages.{stage_plan.name}.instance_data", message)])


@op("instance_data")
def instance_data(ctx: StageContext, params: dict) -> None:
    stage = ctx.stage
    micro = stage.train.global_batch // (ctx.accumulation * ctx.dist.world)
    stream, own, found = instance_stream(stage, ctx.stage_plan, ctx.seed, micro, ctx.accumulation,
                                         latent_multiple(ctx.bundle), ctx.dist.rank, ctx.dist.world)
    ctx.instance_feed = CaptionedFeed(stream, stage.instance_prompt, own)
    if ctx.dist.main:
        print(f"[{ctx.label}] {described(stage, own, found)}", flush=True)


def described(stage, own: bool, found: int) -> str:
    """The subject's images in a line, as the plan and the run log give them."""
    told = "with their own captions" if own else f"captioned {stage.instance_prompt!r}"
    return f"instance data: {found} image(s) of {stage.instance_data.kind}, {told}"


@op("generate_prior")
def generate_prior(ctx: StageContext, params: dict) -> None:
    stage, prior = ctx.stage, ctx.stage.prior
    request = SampleRequest(prompts=(prior.class_prompt,), per_prompt=prior.num_images, seed=ctx.seed,
                            num_steps=prior.sampling_steps, cfg_scale=stage.train.samples.cfg_scale,
                            solver=stage.train.samples.solver, resolution=stage.data.curriculum[-1].resolution)
    # An adapter attached before this op is still zero (B = 0): the frozen start is what samples.
    base = ctx.base_hash or fingerprint(ctx.bundle)
    identity = {"base": base, "request": dataclasses.asdict(request),
                "timesteps": stage.timesteps.model_dump(mode="json")}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(stage.data.cache.dir) / PRIOR_CACHE / f"{key}.npy"
    if path.exists():
        images, how = np.load(path), "cached"
    else:
        from .train import isolated  # a cache hit and a miss must leave the training's random state alike

        with torch.no_grad():
            images, how = isolated(generate)(ctx.bundle, stage.timesteps, request), "generated"
        if ctx.dist.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, images)
            os.replace(tmp, path)
    ctx.prior_images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if ctx.dist.main:
        print(f"[{ctx.label}] prior: {len(images)} class image(s) of {prior.class_prompt!r} {how} ({path})", flush=True)

"""DreamBooth's ops: `instance_data` (the subject's images, captioned with the instance prompt) and
`generate_prior` (class images sampled once by the frozen starting model, kept in a content-keyed cache:
a second run, or a resumed one, generates nothing; another class prompt or starting model generates anew)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data.stream import BatchStream
from ..models.lora import fingerprint
from ..sampling import SampleRequest, generate, latent_multiple
from . import op
from .context import StageContext

PRIOR_CACHE = "dreambooth_prior"


class CaptionedFeed:
    """Every batch of `feed` with one caption: the instance prompt."""

    def __init__(self, feed, caption: str):
        self.feed, self.caption = feed, caption

    def batch(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        return dataclasses.replace(batch, captions=[self.caption] * len(batch.x))


@op("instance_data")
def instance_data(ctx: StageContext, params: dict) -> None:
    stage = ctx.stage
    data = stage.data.model_copy(update={"source": stage.instance_data})
    micro = stage.train.global_batch // (ctx.accumulation * ctx.dist.world)
    stream = BatchStream(data, ctx.seed, micro, ctx.accumulation, latent_multiple(ctx.bundle), ctx.dist.rank,
                         ctx.dist.world)
    ctx.instance_feed = CaptionedFeed(stream, stage.instance_prompt)
    if ctx.dist.main:
        found = sum(part["kept"] for phase in stream.report() for part in phase["components"])
        print(f"[{ctx.label}] instance data: {found} image(s) of {stage.instance_data.kind}, captioned "
              f"{stage.instance_prompt!r}", flush=True)


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

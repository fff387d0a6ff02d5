"""Op `data`: the stage's batch stream (curriculum, buckets, mixture), its report, and encoder caches."""
from __future__ import annotations

import json

from ...compiler import Issue, Location, SpecError
from ..data.loader import PrefetchingStream
from ..data.sources import DataError, listing
from ..data.stream import BatchStream
from ..sampling import latent_multiple
from ...compiler.render import filter_counts
from . import op, spec_dir
from .context import StageContext, data_error, split_batch


@op("data")
def data(ctx: StageContext, params: dict) -> None:
    stage = ctx.stage
    micro, ctx.accumulation = split_batch(stage, ctx.dist.world, ctx.stage_plan.loc)
    if ctx.bundle is None:  # an autoencoder stage: its VAE's downsampling alone
        multiple = ctx.spec.model.latent.factor()
    else:
        multiple = latent_multiple(ctx.bundle) if ctx.spec.model.kind != "mlp" else 1
    ctx.stream = BatchStream(stage.data, ctx.seed, micro, ctx.accumulation, multiple, ctx.dist.rank, ctx.dist.world,
                             spec_dir(ctx.plan))
    if ctx.dist.main:
        print(f"[{ctx.label}] batch {stage.train.global_batch} = micro-batch {micro} x {ctx.dist.world} process(es) x "
              f"{ctx.accumulation} accumulation step(s)", flush=True)
        log_data_report(ctx, ctx.stream.report())
    if ctx.spec.model.class_count() is not None:
        ctx.classes = checked_classes(stage, ctx.stage_plan, ctx.spec.model.class_count())
    loader = stage.data.loader
    feed = ctx.stream if loader.num_workers == 0 else PrefetchingStream(
        ctx.stream, ctx.accumulation, stage.steps, loader.num_workers, loader.prefetch_factor)
    ctx.feed = NamingFeed(feed, ctx.label)
    attach_caches(ctx)


def checked_classes(stage, stage_plan, count: int):
    """The data's classes, checked against the model's label table (`count` rows) and the prompts the stage
    samples; `flowspec plan` runs the same check."""
    from ..data.classes import source_classes

    try:
        classes = source_classes(stage.data.source)
    except DataError as exc:
        raise data_error(stage_plan, str(exc)) from None
    if len(classes.names) > count:
        raise data_error(stage_plan, f"the data has {len(classes.names)} classes ({listing(list(classes.names))}) "
                         f"but the model's label table has {count}: set model.config.num_embeds_ada_norm: "
                         f"{len(classes.names)}")
    try:
        classes.labels(stage.train.samples.prompts)
    except ValueError as exc:
        where = next(op.loc for op in stage_plan.ops if op.op == "sample")
        raise SpecError([Issue(Location.parse(where), f"stages.{stage.name}.train.samples.prompts", str(exc))]) from None
    return classes


class NamingFeed:
    """Batches as the objective reads them; a bad image replaced in one (data.on_bad_sample: skip) is named
    in the run log the first time it is met (each rank names what it loads)."""

    def __init__(self, feed, label: str):
        self.feed, self.label, self.named = feed, label, set()

    def batch(self, step: int, micro: int):
        batch = self.feed.batch(step, micro)
        for entry in batch.skipped:
            if entry["file"] not in self.named:
                self.named.add(entry["file"])
                print(f"[{self.label}] step {step + 1}: skipped {entry['file']} ({entry['reason']}); another image "
                      "of its bucket stands in", flush=True)
        return batch


def attach_caches(ctx: StageContext) -> None:
    """Content-keyed caches of frozen encoders' outputs (data.cache), shared by stages and runs."""
    from ..data.cache import ContentCache
    from ..models.latent import VAECodec
    from ..models.text import PretrainedTextEncoder

    settings, bundle = ctx.stage.data.cache, ctx.bundle
    if bundle is None:
        return
    if settings.latents and isinstance(bundle.codec, VAECodec):
        bundle.codec.cache = ContentCache(settings.dir, "latents")
        ctx.caches.append(bundle.codec.cache)
    if settings.text and isinstance(bundle.text_encoder, PretrainedTextEncoder):
        bundle.text_encoder.cache = ContentCache(settings.dir, "text")
        ctx.caches.append(bundle.text_encoder.cache)


def log_data_report(ctx: StageContext, report: list[dict]) -> None:
    """What the data pipeline will feed each phase: nothing is dropped, repeated or skipped silently."""
    if not report:
        return
    (ctx.run_dir / "data_report.json").write_text(json.dumps(report, indent=2))
    for phase in report:
        for part in phase.get("components", []):
            print(f"[{ctx.label}] phase {phase['phase']}: {part['name']} {part['kept']} of {part['found']} "
                  f"images in buckets {', '.join(phase['buckets'])}: {part['batches_per_epoch']} batches/epoch, "
                  f"{part['repeated']} repeated, {part['dropped']} dropped{_skipped(part)}", flush=True)
            if part.get("by_filter"):
                print(f"[{ctx.label}] phase {phase['phase']}: {part['name']} filters: {filter_counts(part)}", flush=True)


def _skipped(counts: dict) -> str:
    if not counts.get("skipped"):
        return ""
    files = listing([f"{f['file']} ({f['reason']})" for f in counts["skipped_files"]])
    return f", {counts['skipped']} bad file(s) skipped: {files}"


def log_final_report(ctx: StageContext) -> None:
    """The data report once training is over: a streamed source is counted while it is read, and bad images
    are found as they are decoded (counts of this process; data-loader workers report theirs through it)."""
    if ctx.stage.data.source.kind == "toy2d":
        return
    report = ctx.stream.report()
    (ctx.run_dir / "data_report.json").write_text(json.dumps(report, indent=2))
    if ctx.stage.data.source.kind != "webdataset":
        for phase in report:
            for part in phase["components"]:
                if part.get("skipped"):
                    print(f"[{ctx.label}] phase {phase['phase']}: {part['name']}{_skipped(part)}", flush=True)
        return
    ctx.results["data"] = report
    for phase in report:
        print(f"[{ctx.label}] phase {phase['phase']}: webdataset read {phase['read']}, kept {phase['kept']}, "
              f"filtered {phase['filtered']}, missing image {phase['missing_image']}, missing caption "
              f"{phase['missing_caption']}; {phase['repeated']} repeated, {phase['dropped']} dropped"
              f"{_skipped(phase)}", flush=True)
        if phase.get("by_filter"):
            read = {**phase, "found": phase["read"] - phase["missing_image"] - phase["missing_caption"]}
            print(f"[{ctx.label}] phase {phase['phase']}: webdataset filters: {filter_counts(read)}", flush=True)

"""Throughput of the data pipeline, cold and cached, against what a training step consumes.

    python benchmarks/data_throughput.py [--source shapes|folder] [--batches 24] [--workers 2]

Pipeline = the batch stream (render or decode, resize to cover the bucket, crop) plus the VAE
encoding of the latents. "cold" encodes every image; "cached" reads the posteriors back from the
content-keyed latent cache (same items, second pass). The training step is forward + backward +
AdamW of the denoiser on the same micro-batches. All numbers are samples per second on this machine.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowspec.compiler import compile_spec
from flowspec.runtime.data.cache import ContentCache
from flowspec.runtime.data.loader import PrefetchingStream
from flowspec.runtime.data.stream import BatchStream
from flowspec.runtime.models.bundle import build_bundle
from flowspec.runtime.models.latent import generator_noise, untrained
from flowspec.runtime.sampling import latent_multiple
from flowspec.runtime.objectives.flow_matching import FlowMatching
from flowspec.runtime.ops.context import StageContext
from flowspec.runtime.train.loop import LoopConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def photo_folder(folder: Path, count: int = 256) -> None:
    """Camera-sized JPEGs of smooth random colour fields (decoding cost like real photos)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        height, width = [(480, 640), (640, 480), (512, 512), (384, 768)][i % 4]
        small = rng.integers(0, 255, (height // 32, width // 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(folder / f"p{i:04d}.jpg", quality=90)
        (folder / f"p{i:04d}.txt").write_text(f"a photo number {i}")


def rate(samples: int, seconds: float) -> str:
    return f"{samples / seconds:8.1f} samples/s"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=str(ROOT / "specs/sdxl_like.yaml"))
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--source", choices=["shapes", "folder"], default="shapes")
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = [f"data.cache.dir={tmp}/cache",
                "data.curriculum=[{at_step: 0, resolution: 64, aspect_ratios: [0.75, 1.0, 1.333]}]"]
        if args.source == "folder":
            photo_folder(Path(tmp) / "photos")
            sets.append(f"data.source={{kind: imagefolder, path: {tmp}/photos}}")
        plan = compile_spec(args.spec, args.profile, sets)
        # the first denoiser stage (after the spec's autoencoder stage, if any), with a random VAE of its shape
        first = next(s for s in plan.stages if s.kind != "autoencoder")
        spec, stage, seed = plan.spec, plan.spec_stage(first.name), first.seed
        bundle = build_bundle(untrained(spec.model), seed)
        micro = stage.train.micro_batch or stage.train.global_batch
        stream = BatchStream(stage.data, seed, micro, 1, latent_multiple(bundle))
        codec = bundle.codec
        codec.cache = ContentCache(stage.data.cache.dir, "latents")
        gen = torch.Generator().manual_seed(0)
        n = args.batches * micro

        start = time.perf_counter()
        batches = [stream.batch(step, 0) for step in range(args.batches)]
        load = time.perf_counter() - start
        start = time.perf_counter()
        for batch in batches:
            codec.encode(batch.x, generator_noise(gen), batch.keys)
        encode_cold = time.perf_counter() - start
        codec.cache.flush()
        start = time.perf_counter()
        for batch in batches:
            codec.encode(batch.x, generator_noise(gen), batch.keys)
        encode_cached = time.perf_counter() - start

        feed = PrefetchingStream(BatchStream(stage.data, seed, micro, 1, latent_multiple(bundle)), 1, args.batches,
                                 args.workers, 2)
        start = time.perf_counter()
        for step in range(args.batches):
            feed.batch(step, 0)
        load_workers = time.perf_counter() - start

        class Fixed:  # the step's compute alone: the same (already loaded) micro-batch every time
            def batch(self, step, micro):
                return batches[0]

        objective = FlowMatching(StageContext(stage=stage, seed=0, device=torch.device("cpu"), bundle=bundle,
                                              feed=Fixed()))
        config = LoopConfig(steps=10**9, accumulation=1, seed=0, run_dir=Path(tmp), label="bench",
                            device=torch.device("cpu"))
        trainer = Trainer(config, bundle.trainable_modules(), objective, stage.train, stage.optimizer)
        trainer.train_step()  # warm-up
        times = []
        for _ in range(min(args.batches, 8)):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
        step = statistics.median(times)

    print(f"source {args.source}, micro-batch {micro}, {args.batches} batches, buckets at 64 px, torch threads "
          f"{torch.get_num_threads()}")
    print(f"  load (render/decode + resize + crop), 1 process : {rate(n, load)}")
    print(f"  load with {args.workers} data-loader workers             : {rate(n, load_workers)}")
    print(f"  VAE encode, cold                               : {rate(n, encode_cold)}")
    print(f"  VAE encode, cached                             : {rate(n, encode_cached)}")
    print(f"  pipeline cold (load + encode)                  : {rate(n, load + encode_cold)}")
    print(f"  pipeline cached (load + cached latents)        : {rate(n, load + encode_cached)}")
    print(f"  training step consumes                         : {rate(micro, step)} "
          "(forward + backward + AdamW, latents from the cache)")


if __name__ == "__main__":
    main()

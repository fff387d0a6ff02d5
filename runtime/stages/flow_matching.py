"""Pre-training and fine-tuning: the flow-matching objective on the stage's data and curriculum."""
from __future__ import annotations

import json

from ..core import LinearPath, TimestepDistribution, condition_dropout_mask, flow_matching_loss
from ..core.randomness import SliceRandom
from ..data.loader import PrefetchingStream
from ..data.stream import BatchStream
from ..models.conditioning import make_condition
from ..sampling import SampleRequest, generate, latent_multiple
from .base import StageRunner
from .evaluation import evaluate_shapes, evaluate_toy2d, loss_plot, write_report


class FlowMatchingObjective:
    """L = E_t,eps [ w(t) |v(x_t, t, c) - (eps - x0)|^2 ], the condition dropped with probability cfg_dropout."""

    def __init__(self, bundle, stream: BatchStream, timesteps_block, cfg_dropout: float, device, seed: int, repa=None):
        self.bundle, self.stream, self.device, self.seed, self.repa = bundle, stream, device, seed, repa
        self.repa_cache = None
        self.timesteps = TimestepDistribution.from_spec(timesteps_block)
        self.cfg_dropout = cfg_dropout
        self.path = LinearPath()
        self.multiple = latent_multiple(bundle) if bundle.denoiser.spec.kind != "mlp" else 1

    def __call__(self, step: int, micro: int):
        batch = self.stream.batch(step, micro)
        n = len(batch.x)
        # Draws depend on an item's place in the global batch, not on ranks x accumulation.
        rand = SliceRandom(self.seed, step, batch.offset, n, batch.total or n)
        x0 = self.bundle.codec.encode(batch.x.to(self.device), lambda shape: rand.randn("posterior", shape), batch.keys)
        eps = rand.randn("noise", x0.shape).to(self.device)
        seq_len = max(batch.height // self.multiple, 1) * max(batch.width // self.multiple, 1)
        draw = rand.draw("t", lambda total, g: self.timesteps.draw(total, g, batch.height, batch.width, seq_len))
        t, weight = rand.rows(draw.t).to(self.device), rand.rows(draw.weight).to(self.device)
        drop = rand.rows(rand.draw("dropout", lambda total, g: condition_dropout_mask(total, self.cfg_dropout, g)))
        sample = self.path.sample(x0, eps, t)
        size = (batch.height, batch.width) if batch.height else None
        cond = make_condition(self.bundle, batch.captions, batch.class_labels, size, drop)
        v = self.bundle.denoiser.velocity(sample.x_t, t, cond)
        loss = flow_matching_loss(v.float(), sample.velocity.float(), weight)
        metrics = {"phase": batch.phase, "resolution": batch.height}
        if self.repa is not None:
            # REPA reads the block output of the forward above and aligns it with the clean image's features.
            metrics["fm_loss"] = loss.item()
            clean, (lh, lw) = batch.x.to(self.device), x0.shape[-2:]
            target = grid = None
            if self.repa_cache is not None and batch.keys is not None:
                target, grid = self.repa.cached_targets(clean, batch.keys, lh, lw, self.repa_cache)
            loss = loss + self.repa(clean, lh, lw, target=target, target_grid=grid)
            metrics["repa_loss"] = self.repa.last_value
        return loss, metrics


class FlowMatchingStage(StageRunner):
    kinds = ("pretrain", "finetune")

    def objective(self):
        train = self.stage.train
        micro, accumulation = self.split_batch()
        multiple = latent_multiple(self.bundle) if self.spec.model.kind != "mlp" else 1
        self.stream = BatchStream(self.stage.data, self.stage_plan.seed, micro, accumulation, multiple,
                                  self.dist.rank, self.dist.world)
        if self.dist.main:
            self.log_data_report(self.stream.report())
        loader = self.stage.data.loader
        feed = self.stream if loader.num_workers == 0 else PrefetchingStream(
            self.stream, accumulation, self.stage.steps, loader.num_workers, loader.prefetch_factor)
        objective = FlowMatchingObjective(self.bundle, feed, self.stage.timesteps, train.cfg_dropout, self.device,
                                          self.stage_plan.seed, self.build_repa())
        if objective.repa is not None and self.stage.data.cache.repa_targets:
            from ..data.cache import ContentCache

            objective.repa_cache = ContentCache(self.stage.data.cache.dir, "repa")
            self.caches.append(objective.repa_cache)
        return objective, accumulation

    def build_repa(self):
        losses = getattr(self.stage, "aux_losses", [])
        if not losses:
            return None
        from ..models.repa import RepaLoss

        config = self.spec.model.resolved_config()
        width = config["num_attention_heads"] * config["attention_head_dim"]
        self.repa = RepaLoss(losses[0], self.bundle.denoiser, width).to(self.device)
        return self.repa

    def extra_modules(self) -> dict:
        return {"repa_projector": self.repa} if getattr(self, "repa", None) is not None else {}

    @property
    def toy(self) -> bool:
        return self.spec.model.kind == "mlp"

    def request(self, prompts, per_prompt: int, seed: int) -> SampleRequest:
        samples, phase = self.stage.train.samples, self.stage.data.curriculum[-1]
        labels = None
        if self.spec.model.kind == "dit" and self.spec.model.conditioning == "class":
            labels = tuple(range(len(prompts)))
        return SampleRequest(prompts=tuple(prompts), per_prompt=per_prompt, seed=seed, num_steps=samples.num_steps,
                             solver=samples.solver, cfg_scale=samples.cfg_scale, resolution=phase.resolution,
                             class_labels=labels)

    def sample_grid(self, step: int) -> None:
        from ..report.plots import image_grid, scatter_plot

        samples = self.stage.train.samples
        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        with self.weights_for_export():
            out = generate(self.bundle, self.stage.timesteps, self.request(samples.prompts, samples.per_prompt, samples.seed))
        path = folder / f"step-{step:08d}.png"
        if self.toy:
            data = self.stream.toy.batch(10**9, len(out)).numpy()
            scatter_plot({"data": data, "samples": out}, path, title=f"step {step}")
        else:
            image_grid(list(out), rows=len(samples.prompts), cols=samples.per_prompt, path=path,
                       row_labels=list(samples.prompts))
        self.log_image("samples", path, step)

    def evaluate(self) -> dict:
        results = {}
        if self.stage.data.source.kind == "webdataset":
            # Streamed data is counted while it is read (in this process; workers count their own).
            results["data"] = self.stream.report()
            (self.run_dir / "data_report.json").write_text(json.dumps(results["data"], indent=2))
            for phase in results["data"]:
                print(f"[{self.label}] phase {phase['phase']}: webdataset read {phase['read']}, kept {phase['kept']}, "
                      f"filtered {phase['filtered']}, missing image {phase['missing_image']}, missing caption "
                      f"{phase['missing_caption']}; {phase['repeated']} repeated, {phase['dropped']} dropped", flush=True)
        if self.toy:
            return {**results, **evaluate_toy2d(self)}
        if self.stage.data.source.kind == "shapes":
            return {**results, **evaluate_shapes(self)}
        return results

    def report(self, summary: dict) -> None:
        loss_plot(self.run_dir)
        write_report(self.run_dir, summary)

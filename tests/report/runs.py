"""Hand-made run folders for the report tests: what `flowspec run` leaves, written in a few milliseconds."""
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

PRETRAIN_OLD, PRETRAIN, SFT, LCM = "0123456789ab" * 2, "aaaabbbbcccc" * 2, "ddddeeeeffff" * 2, "999988887777" * 2
DISTILL_MD = """# Distillation report: lcm (consistency_distill)

| model | steps | NFE | checker_accuracy |
|---|---|---|---|
| student | 4 | 4 | 0.641 |
| teacher | 20 | 40 | 0.609 |
"""


def png(path: Path, colour, size=(24, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def stage(run: Path, name: str, digest: str, kind: str, started: float, steps: int = 40, upstream=None,
          done: bool = True, loss_scale: float = 1.0, grad_norm: bool = False, **files) -> Path:
    """One stage folder; `started` (seconds since the epoch) is its spec.json's time, which orders stages.
    Its grad norm changes (and gets a figure of its own) only with `grad_norm`: each figure costs 0.2-0.3 s."""
    folder = run / f"{name}-{digest[:12]}"
    folder.mkdir(parents=True)
    identity = {"hash": digest, "seed": 1, "model": {"kind": "mlp"}, "upstream": upstream or {},
                "stage": {"name": name, "kind": kind, "steps": steps, "optimizer": {"lr": 0.003}}}
    (folder / "spec.json").write_text(json.dumps(identity))
    os.utime(folder / "spec.json", (started, started))
    last = steps if done else steps // 2
    records = [{"step": s, "loss": loss_scale * (2.0 / s ** 0.3), "grad_norm": 1.0 + (1.0 / s if grad_norm else 0),
                "lr": 0.003, "it_per_s": 50.0} for s in range(5, last + 1, 5)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for step, colour in ((steps // 2, (200, 30, 30)), (steps, (30, 30, 200))):
        if step <= last:
            png(folder / "samples" / f"step-{step:08d}.png", colour)
    if done:
        results = {"stage": name, "kind": kind, "hash": digest, "steps": steps, "seconds": 12.5,
                   "eval": {"sliced_wasserstein": 0.25 * loss_scale, "data_floor": {"sliced_wasserstein": 0.15}}}
        (folder / "results.json").write_text(json.dumps(results))
        (folder / "eval.json").write_text(json.dumps(results["eval"]))
        (folder / "resolved.json").write_text(json.dumps({"model": {"kind": "mlp"}, "stage": identity["stage"]}))
        (folder / "DONE").write_text(json.dumps(results))
        png(folder / "eval_scatter.png", (30, 160, 30))
        png(folder / "loss.png", (250, 250, 250))  # drawn by the stage (summary.py); the report reuses it
    for relative, text in files.items():
        (folder / relative).write_text(text)
    return folder


def make_run(root: Path, name: str = "toy", loss_scale: float = 1.0, grad_norm: bool = True) -> Path:
    """A run of three finished stages (pretrain -> sft -> lcm, lcm with a distillation table) beside an
    unfinished pretrain folder of another spec version, started last but read by none of them."""
    run = root / name
    stage(run, "pretrain", PRETRAIN, "pretrain", 1_000_000, loss_scale=loss_scale, grad_norm=grad_norm)
    stage(run, "sft", SFT, "finetune", 1_000_100, steps=20, upstream={"from": PRETRAIN}, loss_scale=loss_scale)
    stage(run, "lcm", LCM, "consistency_distill", 1_000_200, steps=20, upstream={"from": SFT, "teacher": SFT},
          loss_scale=loss_scale, **{"distill_report.md": DISTILL_MD})
    stage(run, "pretrain", PRETRAIN_OLD, "pretrain", 1_000_300, steps=10, done=False)
    return run


def make_sweep(root: Path) -> Path:
    """A sweep folder whose manifest lists two hand-made runs (one by a relative, one by an absolute path)
    and one run that never started."""
    sweep = root / "toy-sweep"
    sweep.mkdir(parents=True)
    first, second = make_run(root, "toy-lr1", 1.0, False), make_run(root, "toy-lr2", 0.5, False)
    manifest = {"spec": "specs/toy2d.yaml", "axes": {"optimizer.lr": ["1e-3", "3e-3", "1e-2"]},
                "runs": [{"name": "toy-lr1", "folder": "../toy-lr1", "overrides": {"optimizer.lr": "1e-3"}},
                         {"name": "toy-lr2", "folder": str(second), "overrides": {"optimizer.lr": "3e-3"}},
                         {"name": "toy-lr3", "folder": "../toy-lr3", "overrides": {"optimizer.lr": "1e-2"}}]}
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    assert first.exists()
    return sweep

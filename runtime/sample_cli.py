"""`flowspec sample`: load a finished stage and write a sample grid (PNG) or samples (.npy)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from ..compiler.lower import DONE_MARKER
from ..schemas.spec import Spec
from ..schemas.stages import Stage

RESOLVED = "resolved.json"  # the full resolved model and stage spec, written when a stage finishes


def find_stage_dir(path: Path) -> Path:
    if (path / DONE_MARKER).exists():
        return path
    finished = [d for d in path.glob("*/") if (d / DONE_MARKER).exists()] if path.is_dir() else []
    if not finished:
        raise FileNotFoundError(f"{path}: no finished stage here (a stage folder holds {DONE_MARKER})")
    return max(finished, key=lambda d: (d / DONE_MARKER).stat().st_mtime)


def load_stage(stage_dir: Path, device):
    from .models.bundle import build_bundle, load_exported

    resolved = json.loads((stage_dir / RESOLVED).read_text())
    model = TypeAdapter(Spec.model_fields["model"].annotation).validate_python(resolved["model"])
    # A custom stage's objective class is not needed to sample from what it trained.
    stage = TypeAdapter(Stage).validate_python(resolved["stage"], context={"import_targets": False})
    bundle = build_bundle(model, seed=0, device=device)
    load_exported(bundle, stage_dir / "model")
    return model, stage, bundle


def sample_command(args) -> int:
    from .data.classes import ClassNames
    from .distributed import SINGLE
    from .report.plots import image_grid
    from .sampling import SampleRequest, generate

    try:
        stage_dir = find_stage_dir(Path(args.path))
    except FileNotFoundError as exc:
        print(f"flowspec sample: {exc}", file=sys.stderr)
        return 2
    model, stage, bundle = load_stage(stage_dir, SINGLE.device())
    samples = stage.train.samples
    toy = model.kind == "mlp"
    prompts = tuple(args.prompt) or (("",) if toy else tuple(samples.prompts))
    labels = None
    classes = ClassNames.load(stage_dir / "model")
    if classes is not None:
        try:
            labels = classes.labels(prompts)
        except ValueError as exc:
            print(f"flowspec sample: {exc}", file=sys.stderr)
            return 2
    request = SampleRequest(prompts=prompts, per_prompt=args.n, seed=args.seed, num_steps=args.steps or samples.num_steps,
                            solver=args.solver or samples.solver, resolution=stage.data.curriculum[-1].resolution,
                            cfg_scale=samples.cfg_scale if args.cfg_scale is None else args.cfg_scale, class_labels=labels)
    out = generate(bundle, stage.timesteps, request)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".npy" or toy:
        np.save(target.with_suffix(".npy"), out)
        target = target.with_suffix(".npy")
    else:
        image_grid(list(out), rows=len(prompts), cols=args.n, path=target, row_labels=list(prompts))
    print(f"wrote {target} ({len(out)} samples from {stage_dir}, {replace(request, prompts=prompts[:3])})")
    return 0

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
    try:
        apply_adapters(bundle, [adapter_arg(value) for value in args.lora])
    except (FileNotFoundError, ValueError) as exc:
        print(f"flowspec sample: {exc}", file=sys.stderr)
        return 2
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


def adapter_arg(value: str) -> tuple[Path, float]:
    """`--lora PATH[:SCALE]`: a LoRA stage folder, its model/ folder or its model/lora/ folder, and a scale
    (default 1)."""
    path, sep, scale = value.rpartition(":")
    try:
        factor = float(scale) if sep else 1.0
    except ValueError:
        path, factor = value, 1.0
    folder = Path(path if sep and path else value)
    for candidate in (folder / "model", folder, folder.parent):
        if (candidate / "lora").is_dir():
            return candidate, factor
    raise FileNotFoundError(f"--lora {value}: no LoRA adapter there (a LoRA stage's folder, its model/ or model/lora/)")


def apply_adapters(bundle, adapters: list[tuple[Path, float]]) -> None:
    """Merge each adapter, scaled, into the loaded weights; scale 0 leaves them untouched (bitwise). An
    adapter trained on another base is applied all the same (that is often the point), with a warning."""
    from .models.lora import apply_lora, fingerprint, read_base

    here = fingerprint(bundle) if adapters else None
    for folder, scale in adapters:
        base = read_base(folder)
        if base is not None and base["base_hash"] != here:
            print(f"flowspec sample: warning: {folder} was trained on base {base['base_hash']}; the weights it is "
                  f"applied to hash to {here}", file=sys.stderr)
        if scale != 0:
            apply_lora(bundle, folder, scale=scale)

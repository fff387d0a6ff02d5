"""`flowspec sample`: load a finished stage, or a diffusers folder with the spec that describes its model, and
write a sample grid (PNG) or samples (.npy)."""
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
    for candidate in (path, path.parent):  # a stage folder, or its exported model/ folder
        if (candidate / DONE_MARKER).exists():
            return candidate
    finished = [d for d in path.glob("*/") if (d / DONE_MARKER).exists()] if path.is_dir() else []
    if not finished:
        hint = (": a diffusers folder needs --spec SPEC (the spec whose model section describes it)"
                if diffusers_folder(path) else f" (a stage folder holds {DONE_MARKER})")
        raise FileNotFoundError(f"{path}: no finished stage here{hint}")
    return max(finished, key=lambda d: (d / DONE_MARKER).stat().st_mtime)


def diffusers_folder(path: Path) -> bool:
    """A model saved with diffusers' `save_pretrained` (its own folder or a pipeline's subfolder), or a
    folder flowspec exported (denoiser/ inside)."""
    return any((path / sub / "config.json").is_file() for sub in ("", "denoiser", "transformer", "unet"))


def load_stage(stage_dir: Path, device):
    from .models.bundle import build_bundle, load_exported

    resolved = json.loads((stage_dir / RESOLVED).read_text())
    model = TypeAdapter(Spec.model_fields["model"].annotation).validate_python(resolved["model"])
    # A custom stage's objective class is not needed to sample from what it trained.
    stage = TypeAdapter(Stage).validate_python(resolved["stage"], context={"import_targets": False})
    bundle = build_bundle(model, seed=0, device=device)
    load_exported(bundle, stage_dir / "model")
    return model, stage, bundle


def load_folder(folder: Path, spec_path: str, stage_name: str | None, device):
    """A diffusers folder sampled with the model section of a spec and the sampler settings of one of its
    stages (the last one by default): the folder's weights replace whatever the spec would start from."""
    from ..compiler import compile_spec
    from .models.bundle import build_bundle, load_backbone, load_exported

    if not diffusers_folder(folder):
        raise FileNotFoundError(f"{folder}: not a diffusers folder (no config.json in it, nor in its denoiser/, "
                                "transformer/ or unet/ subfolder)")
    plan = compile_spec(spec_path, None, [])
    spec = plan.spec
    stages = {s.name: s for s in spec.stages}
    if stage_name is not None and stage_name not in stages:
        raise ValueError(f"--stage {stage_name}: {spec_path} has no such stage (stages: {', '.join(stages)})")
    stage = stages[stage_name or spec.stages[-1].name]
    model = plan.model_spec()  # a latent space an autoencoder stage trains: its exported VAE
    model = model.model_copy(update={"init": model.init.model_copy(update={"path": None})})
    bundle = build_bundle(model, seed=0, device=device)
    if (folder / "denoiser").is_dir():
        load_exported(bundle, folder)
    else:
        sub = next((s for s in ("transformer", "unet") if not (folder / "config.json").is_file()
                    and (folder / s / "config.json").is_file()), None)
        load_backbone(bundle.denoiser.net, model, folder, sub)
    return model, stage, bundle


def sample_command(args) -> int:
    from .data.classes import ClassNames
    from .distributed import SINGLE
    from .report.plots import image_grid
    from .sampling import SampleRequest, generate

    try:
        if args.spec:
            stage_dir = Path(args.path)
            model, stage, bundle = load_folder(stage_dir, args.spec, args.stage, SINGLE.device())
        else:
            stage_dir = find_stage_dir(Path(args.path))
            model, stage, bundle = load_stage(stage_dir, SINGLE.device())
        apply_adapters(bundle, [adapter_arg(value) for value in args.lora])
    except (FileNotFoundError, ValueError) as exc:
        print(f"flowspec sample: {exc}", file=sys.stderr)
        return 2
    samples = stage.train.samples
    toy = model.kind == "mlp"
    prompts = tuple(args.prompt) or (("",) if toy else tuple(samples.prompts))
    labels = None
    classes = ClassNames.load(stage_dir / "model") or ClassNames.load(stage_dir)
    if classes is not None:
        try:
            labels = classes.labels(prompts)
        except ValueError as exc:
            print(f"flowspec sample: {exc}", file=sys.stderr)
            return 2
    given = prompts
    if stage.prompt_enhancer is not None and not args.no_enhance:
        given = enhanced(stage, bundle, prompts, args.seed)
        print(f"prompt enhancer {stage.prompt_enhancer.kind}: {prompts[0]!r} -> {given[0]!r}")
    student = stage.sampling()  # a distilled student: its own grid, no guidance
    cfg_scale = student.get("cfg_scale", samples.cfg_scale) if args.cfg_scale is None else args.cfg_scale
    request = SampleRequest(prompts=tuple(given), per_prompt=args.n, seed=args.seed, num_steps=args.steps or samples.num_steps,
                            solver=args.solver or samples.solver, resolution=stage.data.curriculum[-1].resolution,
                            cfg_scale=cfg_scale, class_labels=labels, grid=student.get("grid", "default"))
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


def enhanced(stage, bundle, prompts, seed: int) -> tuple[str, ...]:
    """The stage's prompt enhancer on the prompts, as the stage applied it (its vocabulary learned from the
    captions of its data, with the stage's seed when the spec names one, else 0)."""
    from .enhance import build_enhancer
    from .ops.enhance import stream_captions

    enhancer = build_enhancer(stage.prompt_enhancer, lambda n: stream_captions(stage, bundle, stage.seed or 0, n))
    return tuple(enhancer(list(prompts), seed))


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

"""train.sharding: fsdp (torch's FSDP2 on gloo processes) against one unsharded process with the same global batch."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from .helpers import IMAGE, TOY, flowspec, kill_after_checkpoint, stage_dir, weights, write_spec

ONE_STAGE_TOY = TOY.replace("  - {name: finetune, kind: finetune, from: pretrain, steps: 20, optimizer: {lr: 1.0e-3}}\n", "")
# Accumulation (4 micro-batches on one process, 2 on two) and a sample grid mid-training (drawn from whole weights).
TOY_SHARDED = ONE_STAGE_TOY.replace("  cfg_dropout: 0.0\n", "  cfg_dropout: 0.0\n  micro_batch: 16\n  sharding: fsdp\n") \
    .replace("samples: {every: 1000,", "samples: {every: 20,")
UNSHARDED = "train.sharding=none"


def losses(stage) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage / "metrics.jsonl").read_text().splitlines()]


def run(folder, text: str, *args: str):
    folder.mkdir()
    write_spec(folder, text)
    out = flowspec("run", "spec.yaml", *args, cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def assert_close(one, two) -> None:
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and len(a) > 0
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < 2e-4, worst  # the DDP test's bound: float32 reassociation of the gradient sums


def assert_bitwise(one, two) -> None:
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow  # a training run or two: the default run stays under 20 minutes
def test_two_sharded_processes_give_the_weights_of_one_unsharded(tmp_path):
    run(tmp_path / "one", TOY_SHARDED, "--set", UNSHARDED)
    out = run(tmp_path / "two", TOY_SHARDED, "--nproc", "2")
    one, two = stage_dir(tmp_path / "one", "toy", "pretrain"), stage_dir(tmp_path / "two", "toy", "pretrain")
    assert "x 2 processes" in out.stdout
    assert_close(one, two)
    assert losses(one) == pytest.approx(losses(two), rel=1e-4, abs=1e-6)
    assert (two / "samples" / "step-00000020.png").exists()  # drawn by rank 0 from the gathered weights


DPO_STAGE = """\
  - name: dpo
    kind: diffusion_dpo
    from: pretrain
    steps: 12
    beta: 50
    pairs: {kind: generated, num_pairs: 128, sampling_steps: 8, reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}}
    optimizer: {lr: 3.0e-3}
    train: {log_every: 1, sharding: fsdp, offload_frozen: OFFLOAD}
"""


REFLOW_STAGE = """\
  - name: reflow
    kind: reflow
    from: pretrain
    steps: 12
    num_pairs: 128
    teacher_steps: 8
    train: {samples: {num_steps: 2}, sharding: fsdp, offload_frozen: OFFLOAD}
"""


# Progressive distillation in two rounds: the second round's teacher is a snapshot of the student (shards too).
PROGRESSIVE_STAGE = """\
  - name: prog
    kind: progressive_distill
    from: pretrain
    steps: 12
    teacher_steps: 8
    rounds: 2
    train: {checkpoint: {every: 8}, samples: {num_steps: 2}, sharding: fsdp, offload_frozen: OFFLOAD}
"""
# Consistency distillation: its EMA target is a snapshot of the student too.
CONSISTENCY_STAGE = """\
  - name: lcm
    kind: consistency_distill
    from: pretrain
    steps: 12
    num_timesteps: 10
    skip: 100
    ema_decay: 0.9
    train: {samples: {solver: consistency, num_steps: 2}, sharding: fsdp, offload_frozen: OFFLOAD}
"""
# The preference kinds that sample from the policy: reward feedback through the last steps, and Flow-GRPO with
# its rollouts, its old policy (2 inner epochs) and its reference (a frozen copy: kl_beta > 0, no LoRA).
REWARD_FEEDBACK_STAGE = """\
  - {name: rf, kind: reward_feedback, from: pretrain, steps: 10, sampling_steps: 8, grad_steps: [5, 7],
     pretrain_loss_weight: 0.5, reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3},
     train: {log_every: 1, sharding: fsdp, offload_frozen: OFFLOAD}}
"""
GRPO_STAGE = """\
  - {name: grpo, kind: flow_grpo, from: pretrain, steps: 10, group_size: 16, sampling_steps: 8, eval_steps: 8,
     cfg_scale: 1.0, kl_beta: 0.01, inner_epochs: 2, reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3},
     train: {log_every: 1, micro_batch: 8, sharding: fsdp, offload_frozen: OFFLOAD}}
"""
# ADD: its discriminator (heads on a frozen feature network) stays whole on every rank, its gradients averaged;
# the R1 penalty (on by default) differentiates through it twice.
ADD_STAGE = """\
  - {name: add, kind: adversarial_distill, from: pretrain, steps: 10, train: {log_every: 1, checkpoint: {every: 10},
     sharding: fsdp, offload_frozen: OFFLOAD}}
"""
# DMD: its fake score (a trained copy of the start, with a GAN head) is sharded like the student.
DMD_STAGE = """\
  - {name: dmd, kind: distribution_matching, from: pretrain, steps: 10, fake_updates: 2, gan_weight: 0.01,
     student_timesteps: [1.0, 0.5], train: {log_every: 1, checkpoint: {every: 10}, sharding: fsdp,
     offload_frozen: OFFLOAD}}
"""
SECOND = {"rf": (REWARD_FEEDBACK_STAGE, None), "add": (ADD_STAGE, "teacher"), "dmd": (DMD_STAGE, "teacher"), "grpo": (GRPO_STAGE, "reference"), "dpo": (DPO_STAGE, "reference"), "reflow": (REFLOW_STAGE, "teacher"), "prog": (PROGRESSIVE_STAGE, "teacher"),
          "lcm": (CONSISTENCY_STAGE, "teacher")}


def second_stage(tmp_path, stage: str, offload: bool) -> tuple:
    """A pretrain and `stage`, run on one unsharded process (folder `one`), and a copy of that folder where
    `stage` is yet to run (`two`)."""
    text = ONE_STAGE_TOY + SECOND[stage][0].replace("OFFLOAD", str(offload).lower())
    run(tmp_path / "one", text, "--set", f"stages.{stage}.train.sharding=none",
        "--set", f"stages.{stage}.train.offload_frozen=false")
    shutil.copytree(tmp_path / "one", tmp_path / "two")  # the same pretrain and pairs; the stage trains again
    shutil.rmtree(stage_dir(tmp_path / "two", "toy", stage))
    return stage_dir(tmp_path / "one", "toy", stage), tmp_path / "two"


@pytest.mark.slow  # two runs of a pretrain and a second stage, one on two processes: about a minute
@pytest.mark.parametrize("stage,offload", [pytest.param("dpo", False, marks=pytest.mark.extended),
                                           pytest.param("dpo", True, marks=pytest.mark.extended),
                                           pytest.param("reflow", True, marks=pytest.mark.extended),
                                           pytest.param("prog", False, marks=pytest.mark.extended), ("lcm", True)])
def test_a_stage_with_its_frozen_copy_sharded_gives_the_weights_of_one_unsharded_process(tmp_path, stage, offload):
    """DPO's reference or a distillation stage's teacher is sharded beside the trained model (its shards in CPU
    memory under offload_frozen), the student's snapshots (progressive's round teacher, consistency's target)
    hold shards: DPO's first loss is still log 2 (policy = reference), the weights are those of one unsharded
    process, and the teacher, gathered after training, samples in the distillation report as before."""
    one, folder = second_stage(tmp_path, stage, offload)
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    role = SECOND[stage][1]
    said = f"[{stage}] {role}: sharded over 2 processes" + (", its shards in CPU memory" if offload else "") + "\n"
    assert said in out.stdout
    two = stage_dir(folder, "toy", stage)
    if stage == "dpo":
        assert losses(two)[0] == pytest.approx(math.log(2), abs=1e-6)
    else:
        rows = [json.loads((s / "distill_report.json").read_text())["rows"] for s in (one, two)]
        teachers = [[{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in found if r["model"] == "teacher"]
                    for found in rows]
        assert teachers[0] and teachers[0] == teachers[1]
    assert_close(one, two)
    assert losses(one) == pytest.approx(losses(two), rel=1e-4, abs=1e-6)


@pytest.mark.slow  # two runs of a pretrain and a second stage, one on two processes
@pytest.mark.parametrize("stage", [pytest.param("rf", marks=pytest.mark.extended), "grpo",
                                   pytest.param("add", marks=pytest.mark.extended),
                                   pytest.param("dmd", marks=pytest.mark.extended)])
def test_the_kinds_that_sample_the_policy_or_train_a_second_model_give_the_weights_of_one_process(tmp_path, stage):
    """Reward feedback and Flow-GRPO sample from the sharded policy (every rank gathers each block in turn);
    Flow-GRPO's reference (a frozen copy of the start) and ADD's and DMD's teachers are sharded with their shards
    in CPU memory; ADD's replicated discriminator and DMD's sharded fake score (and its GAN head) end as on one
    process, checkpointed in the same layout."""
    one, folder = second_stage(tmp_path, stage, offload=stage != "rf")
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "x 2 processes" in out.stdout
    if SECOND[stage][1]:
        assert f"[{stage}] {SECOND[stage][1]}: sharded over 2 processes, its shards in CPU memory\n" in out.stdout
    two = stage_dir(folder, "toy", stage)
    assert_close(one, two)
    assert losses(one) == pytest.approx(losses(two), rel=1e-4, abs=1e-6)
    if stage in ("add", "dmd"):
        saved = [torch.load(s / "checkpoints" / "step-00000010.pt", weights_only=False) for s in (one, two)]
        heads = [c["modules"]["discriminator" if stage == "add" else "fake_score"] for c in saved]
        assert heads[0].keys() == heads[1].keys() and heads[0]
        assert max((heads[0][k] - heads[1][k]).abs().max().item() for k in heads[0]) < 2e-4
        moments = [c["optimizer"]["state"] for c in saved]  # the optimizer's state in one order, its moments alike
        assert moments[0].keys() == moments[1].keys()
        assert all(torch.allclose(moments[0][i][k], moments[1][i][k], atol=1e-6) for i in moments[0] for k in moments[0][i])


@pytest.mark.slow  # two runs of a pretrain and a stopped reward-feedback stage, one on two processes
@pytest.mark.extended  # a sharded reward-feedback stage's weights are checked by the kinds' test (grpo's sampling too)
def test_a_sharded_stage_with_gold_keeps_the_history_and_the_best_weights_of_one_process(tmp_path):
    """Gold evaluates the whole EMA weights on every rank (the first time before FSDP's first forward) and
    keeps the best whole; the stage stops where one process stops and exports the same weights."""
    from safetensors.torch import load_file

    from .test_gold import HACK, history

    SECOND["hack"] = (HACK.replace("    optimizer: {lr: 3.0e-3}\n", "    optimizer: {lr: 3.0e-3}\n"
                                   "    train: {sharding: fsdp, offload_frozen: OFFLOAD}\n"), None)
    try:
        one, folder = second_stage(tmp_path, "hack", offload=False)
    finally:
        del SECOND["hack"]
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    two = stage_dir(folder, "toy", "hack")
    steps, golds = ([[h[k] for h in history(s)] for s in (one, two)] for k in ("step", "gold"))
    assert steps[0] == steps[1] and len(steps[0]) >= 3 and golds[1] == pytest.approx(golds[0], rel=1e-5)
    best = [load_file(str(s / "gold_best.safetensors")) for s in (one, two)]
    assert best[0].keys() == best[1].keys() and max((best[0][k] - best[1][k]).abs().max().item() for k in best[0]) < 2e-4
    assert_close(one, two)


@pytest.mark.slow  # three runs, two of them on two processes
@pytest.mark.extended
def test_a_sharded_progressive_stage_killed_in_its_second_round_resumes_bitwise(tmp_path):
    """The round teacher (a snapshot of the student's shards) is gathered into the checkpoint and sharded again."""
    _, plain = second_stage(tmp_path, "prog", False)
    killed = tmp_path / "killed"
    shutil.copytree(plain, killed)
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=plain)
    assert out.returncode == 0, out.stdout + out.stderr
    kill_group_after_checkpoint(killed, 8, "--nproc", "2", glob="runs/toy/prog-*")  # round 2 starts at step 6
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=killed)
    assert out.returncode == 0 and "resumed from step 8" in out.stdout, out.stdout + out.stderr
    assert_bitwise(stage_dir(plain, "toy", "prog"), stage_dir(killed, "toy", "prog"))


def start_group(folder, *args: str) -> subprocess.Popen:
    """A run whose worker processes can be killed together (the launcher and its ranks share a session)."""
    return subprocess.Popen([sys.executable, "-m", "flowspec.cli", "run", "spec.yaml", *args], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_group_after_checkpoint(folder, step: int, *args: str, glob: str = "runs/toy/pretrain-*") -> None:
    proc = start_group(folder, *args)
    real_kill = os.kill
    try:  # kill_after_checkpoint SIGKILLs one pid: make it the whole session here
        os.kill = lambda pid, sig: os.killpg(pid, sig)
        kill_after_checkpoint(proc, glob, folder, step)
    finally:
        os.kill = real_kill


@pytest.mark.slow  # two 2-process runs: 40-80 s
def test_a_sharded_run_killed_after_a_checkpoint_resumes_bitwise(tmp_path):
    plain = tmp_path / "plain"
    run(plain, TOY_SHARDED, "--nproc", "2")
    killed = tmp_path / "killed"
    killed.mkdir()
    write_spec(killed, TOY_SHARDED)
    kill_group_after_checkpoint(killed, 30, "--nproc", "2")
    out = flowspec("run", "spec.yaml", "--nproc", "2", cwd=killed)
    assert out.returncode == 0 and "resumed from step" in out.stdout, out.stdout + out.stderr
    assert_bitwise(stage_dir(plain, "toy", "pretrain"), stage_dir(killed, "toy", "pretrain"))


@pytest.mark.slow  # 4 processes on the 2 cores of CI: 80 s
@pytest.mark.parametrize("then", ["fsdp", pytest.param("none", marks=pytest.mark.extended)])
def test_a_run_started_on_four_sharded_processes_resumes_on_two(tmp_path, then):
    """Gathered checkpoints: any number of processes, sharded or not (sharding is outside the stage's hash)."""
    run(tmp_path / "one", TOY_SHARDED, "--set", UNSHARDED)
    moved = tmp_path / "moved"
    moved.mkdir()
    write_spec(moved, TOY_SHARDED)
    kill_group_after_checkpoint(moved, 30, "--nproc", "4")
    out = flowspec("run", "spec.yaml", "--nproc", "2", "--set", f"train.sharding={then}", cwd=moved)
    assert out.returncode == 0 and "resumed from step" in out.stdout, out.stdout + out.stderr
    assert_close(stage_dir(tmp_path / "one", "toy", "pretrain"), stage_dir(moved, "toy", "pretrain"))


LORA = IMAGE + "  - {name: tune, kind: finetune, from: pretrain, steps: 10, lora: {rank: 2}, train: {sharding: fsdp}}\n"


@pytest.mark.slow
def test_lora_on_sharded_processes_gives_the_adapters_of_one_unsharded_process(tmp_path):
    """The tiny MMDiT (its transformer blocks sharded one by one, the text encoder too) with LoRA adapters."""
    run(tmp_path / "one", LORA, "--set", "stages.tune.train.sharding=none")
    run(tmp_path / "two", LORA, "--nproc", "2")
    assert_close(stage_dir(tmp_path / "one", "img", "tune"), stage_dir(tmp_path / "two", "img", "tune"))


@pytest.mark.slow  # a training run or two: the default run stays under 20 minutes
def test_sharding_on_one_process_is_warned_and_trains_unsharded(tmp_path):
    out = run(tmp_path / "one", TOY_SHARDED, "--set", "stages.pretrain.steps=10")
    assert "train.sharding fsdp on one process shards nothing; training unsharded" in out.stdout


def test_sharding_with_compile_is_refused_at_the_key(tmp_path):
    text = ONE_STAGE_TOY + ("  - {name: fast, kind: pretrain, from: pretrain, steps: 12, train: {sharding: fsdp, "
                            "compile: true}}\n")
    write_spec(tmp_path, text)
    out = flowspec("validate", "spec.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert "stages.fast.train.sharding: sharding fsdp with train.compile is not supported yet" in out.stdout + out.stderr


DPO_LORA = ", lora: {rank: 2, targets: all-linear}"


@pytest.mark.parametrize("extra,refused", [("kl_beta: 0.01", False), ("kl_beta: 0.0", True),
                                            ("kl_beta: 0.01, lora: {rank: 2, targets: all-linear}", True)])
def test_flow_grpo_holds_a_frozen_reference_only_for_its_kl_and_without_lora(tmp_path, extra, refused):
    from flowspec.compiler import SpecError, compile_spec

    stage = GRPO_STAGE.replace("kl_beta: 0.01", extra).replace("OFFLOAD", "true")
    path = str(write_spec(tmp_path, ONE_STAGE_TOY + stage))
    if not refused:
        compile_spec(path)
        return
    with pytest.raises(SpecError) as caught:
        compile_spec(path)
    assert "stages.grpo.train.offload_frozen: offload_frozen: the flow_grpo stage holds no frozen module" in str(caught.value)


@pytest.mark.parametrize("train,lora,said", [
    ("{sharding: fsdp, offload_frozen: true}", DPO_LORA, "offload_frozen: the diffusion_dpo stage holds no "
     "frozen module to offload: no frozen copy of the model (under lora its reference is the start with the adapter "
     "switched off), no pretrained text encoder, no VAE (pixel space); remove it"),
    ("{offload_frozen: true}", ", reference: pretrain" + DPO_LORA, "offload_frozen: the "
     "diffusion_dpo stage holds no frozen module"),
])
def test_offload_frozen_without_a_frozen_module_is_refused_at_the_key(tmp_path, train, lora, said):
    from flowspec.compiler import SpecError, compile_spec

    stage = (f"  - {{name: dpo, kind: diffusion_dpo, from: pretrain, steps: 20, beta: 50, train: {train}{lora}, "
             "pairs: {kind: generated, num_pairs: 8, reward: {kind: toy2d_region, centers: [[1, 0]], radius: 0.3}}}\n")
    with pytest.raises(SpecError) as caught:
        compile_spec(str(write_spec(tmp_path, ONE_STAGE_TOY + stage)))
    assert f"stages.dpo.train.offload_frozen: {said}" in str(caught.value)
    # With a copy of its own (a reference other than the start) the same stage is accepted, sharded or not.
    other = stage.replace("reference: pretrain, ", "").replace("from: pretrain,", "from: pretrain, reference: first,")
    first = "  - {name: first, kind: finetune, from: pretrain, steps: 10}\n"
    compile_spec(str(write_spec(tmp_path, ONE_STAGE_TOY + first + other)))


def test_optimizer_state_keeps_its_order_through_names():
    from flowspec.runtime.train.sharding import by_index, by_name

    model = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(2, 1)})
    optimizer = torch.optim.AdamW([{"params": model["a"].parameters()}, {"params": model["b"].parameters(), "lr": 0.1}])
    model["b"](model["a"](torch.ones(1, 3))).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    named = by_name(state, optimizer, model)
    assert named["param_groups"][1]["params"] == ["b.weight", "b.bias"]
    assert torch.equal(named["state"]["a.bias"]["exp_avg"], state["state"][1]["exp_avg"])
    back = by_index(named)
    assert back["param_groups"] == state["param_groups"]
    assert all(torch.equal(back["state"][i]["exp_avg_sq"], state["state"][i]["exp_avg_sq"]) for i in state["state"])


def test_the_blocks_sharded_one_by_one_are_the_transformer_blocks():
    from diffusers import SD3Transformer2DModel

    from flowspec.runtime.train.sharding import blocks, meta_copy

    net = SD3Transformer2DModel(sample_size=16, patch_size=4, in_channels=3, num_layers=2, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                pooled_projection_dim=16, out_channels=3)
    assert blocks(nn.ModuleDict({"net": net})) == list(net.transformer_blocks)
    skeleton = meta_copy(net)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert all(p.device.type == "cpu" for p in net.parameters())  # the original keeps its weights

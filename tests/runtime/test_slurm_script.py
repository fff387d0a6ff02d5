"""The sbatch script a stage's executor block becomes (no cluster needed: submitit writes the text)."""
import submitit
from pydantic import TypeAdapter

from flowspec.runtime.executors.slurm import job_parameters, refusal
from flowspec.schemas.executor import Executor, Slurm


def sbatch_text(block: Slurm, tmp_path) -> str:
    executor = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm")
    params = job_parameters(block, "pretrain", "demo")
    params["slurm_additional_parameters"]["dependency"] = "afterok:41"
    executor.update_parameters(**params)
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")


def test_every_key_of_the_block_reaches_sbatch(tmp_path):
    block = TypeAdapter(Executor).validate_python({
        "kind": "slurm", "partition": "gpu", "account": "proj", "qos": "high", "nodes": 2, "gpus_per_node": 4,
        "cpus_per_task": 6, "mem_gb": 1.5, "timeout_min": 90, "constraint": "h100", "signal_delay_s": 75,
        "setup": ["module load cuda"], "sbatch": {"exclude": "node01"}})
    text = sbatch_text(block, tmp_path)
    for flag in ("--partition=gpu", "--account=proj", "--qos=high", "--nodes=2", "--ntasks-per-node=4",
                 "--gpus-per-node=4", "--cpus-per-task=6", "--mem=1536M", "--time=90", "--constraint=h100",
                 "--signal=USR2@75", "--exclude=node01", "--dependency=afterok:41", "--kill-on-invalid-dep=yes",
                 "--job-name=demo.pretrain"):
        assert f"#SBATCH {flag}\n" in text, flag
    assert "module load cuda\n" in text
    assert "srun --unbuffered --output" in text and "--kill-on-bad-exit=1" in text.split("srun ", 1)[1]


def test_a_cpu_block_asks_for_no_gpus_and_one_task(tmp_path):
    text = sbatch_text(Slurm(gpus_per_node=0, cpus_per_task=2), tmp_path)
    assert "gpus" not in text and "#SBATCH --ntasks-per-node=1\n" in text and "--partition" not in text


def test_sbatch_refusals_become_positioned_errors_with_what_was_asked():
    from flowspec.compiler.plan import StagePlan

    stage = StagePlan(name="pretrain", kind="pretrain", from_=None, upstream={}, steps=1, seed=0, hash="0" * 64,
                      run_dir="runs/demo/pretrain-0", loc="spec.yaml:12:5", ops=())
    issue = refusal(stage, Slurm(partition="gpu", gpus_per_node=9),
                    "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: "
                    "Invalid partition name specified", ["warmup"])
    text = str(issue)
    assert text.startswith("spec.yaml:12:5: stages.pretrain.executor: SLURM refused the job for stage 'pretrain': ")
    assert "invalid partition specified: gpu; Batch job submission failed: Invalid partition name specified" in text
    assert "partition=gpu" in text and "gpus_per_node=9" in text and "warmup were cancelled" in text

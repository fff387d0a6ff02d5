"""The shipped specs' preference stages run under their smoke profiles on a CPU: sdxl_like's Diffusion-DPO
(a VAE-latent UNet, pairs generated and ranked by the shapes checker), sd3_like's Flow-GRPO (an MMDiT
with LoRA, the checker's reward) and quickstart_preference's Flow-GRPO (the quick-start UNet, in pixels)."""
import json
import shutil

import pytest

from .helpers import flowspec, stage_dir

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("spec,name,stage", [  # the first two stages run in the headline chains too
    pytest.param("sdxl_like", "sdxl_like", "dpo", marks=pytest.mark.extended), pytest.param("sd3_like", "sd3_like", "grpo", marks=pytest.mark.extended),
                                             ("quickstart_preference", "quickstart", "grpo")])
def test_the_smoke_profiles_run_their_preference_stages(tmp_path, spec, name, stage, smoke_vae):
    shutil.copy(ROOT / "specs" / f"{spec}.yaml", tmp_path / "spec.yaml")
    if spec != "quickstart_preference":  # in a latent space its autoencoder stage trains (done once per session)
        smoke_vae(tmp_path, spec)
    out = flowspec("run", "spec.yaml", "--profile", "smoke", "--stage", stage, "--yes", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    scores = json.loads((stage_dir(tmp_path, name, stage) / "eval.json").read_text())
    assert scores["reward"]["items"] == scores["reward_start"]["items"] == 64
    assert "checker_accuracy" in scores

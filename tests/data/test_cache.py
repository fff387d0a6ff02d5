"""Content-keyed caches: a key changes whenever any input changes, entries survive processes, nothing stale."""
import torch
from hypothesis import given, strategies as st

from flowspec.runtime.data.cache import ContentCache, content_key, module_fingerprint
from flowspec.runtime.models.latent import generator_noise

BASE = dict(image=b"\x89PNG...", encoder="vae:abc", weights="w1", bucket=(32, 48), crop="center", dtype="float32")


@given(st.sampled_from(sorted(BASE)), st.data())
def test_changing_any_ingredient_changes_the_key(field, data):
    changed = dict(BASE)
    alternatives = {"image": b"\x89PNG..!", "encoder": "vae:abd", "weights": "w2", "bucket": (48, 32),
                    "crop": "random:3,4", "dtype": "bfloat16"}
    changed[field] = alternatives[field]
    assert content_key(**changed) != content_key(**BASE)
    assert content_key(**dict(BASE)) == content_key(**BASE)


def test_weights_fingerprint_tracks_every_parameter():
    a = torch.nn.Linear(3, 2)
    first = module_fingerprint(a, {"kind": "vae"})
    with torch.no_grad():
        a.bias[0] += 1e-6
    assert module_fingerprint(a, {"kind": "vae"}) != first
    assert module_fingerprint(a, {"kind": "other"}) != module_fingerprint(a, {"kind": "vae"})


def test_entries_round_trip_across_instances_and_count_hits(tmp_path):
    cache = ContentCache(tmp_path, "latents", flush_every=2)
    value = {"mean": torch.randn(4, 8, 8), "std": torch.rand(4, 8, 8)}
    key = content_key(**BASE)
    assert cache.get(key) is None and cache.stats()["misses"] == 1
    cache.put(key, value)
    cache.put(content_key(**{**BASE, "weights": "w9"}), value)  # second entry triggers a flush
    assert list((tmp_path / "latents").glob("shard-*.safetensors"))
    fresh = ContentCache(tmp_path, "latents")
    got = fresh.get(key)
    assert got is not None and all(torch.equal(got[k], value[k]) for k in value)
    assert fresh.get(content_key(**{**BASE, "crop": "random"})) is None
    assert fresh.stats() == {"hits": 1, "misses": 1, "entries": 2}


def test_unflushed_entries_are_not_visible_to_other_processes_and_no_temp_files_remain(tmp_path):
    cache = ContentCache(tmp_path, "text", flush_every=100)
    cache.put("k1", {"x": torch.ones(2)})
    assert ContentCache(tmp_path, "text").get("k1") is None
    cache.flush()
    assert ContentCache(tmp_path, "text").get("k1") is not None
    assert not list((tmp_path / "text").glob("*.tmp"))


def test_cached_latents_equal_fresh_ones_and_hit_on_the_second_pass(tmp_path):
    from flowspec.runtime.models.build import build_vae
    from flowspec.runtime.models.latent import VAECodec
    from flowspec.schemas.model import VAE

    torch.manual_seed(0)
    codec = VAECodec(build_vae(VAE(preset="tiny")))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    plain = codec.encode(x, generator_noise(torch.Generator().manual_seed(1)))
    codec.cache = ContentCache(tmp_path, "latents")
    keys = ["img-a@16x16", "img-b@16x16", "img-c@16x16"]
    first = codec.encode(x, generator_noise(torch.Generator().manual_seed(1)), keys)
    # served from the cache:
    second = codec.encode(torch.zeros_like(x), generator_noise(torch.Generator().manual_seed(1)), keys)
    assert torch.allclose(first, plain, atol=1e-6) and torch.equal(first, second)
    assert codec.cache.stats()["hits"] == 3 and codec.cache.stats()["misses"] == 3
    with torch.no_grad():
        codec.vae.decoder.conv_out.bias.add_(1.0)  # other weights: a new fingerprint, no stale hit
    codec._fingerprint = None
    codec.encode(x, generator_noise(torch.Generator().manual_seed(1)), keys)
    assert codec.cache.stats()["misses"] == 6


def test_cached_text_embeddings_equal_fresh_ones(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    from flowspec.runtime.models.text import PretrainedTextEncoder

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]))
    encoder = PretrainedTextEncoder(BertModel(BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32)),
                                    BertTokenizer(str(tmp_path / "vocab.txt")), max_tokens=6, pooled="mean")
    captions = ["a red circle", "a circle"]
    plain = encoder(captions)
    encoder.cache = ContentCache(tmp_path / "c", "text")
    cached = [encoder(captions), encoder(captions)]
    for got in cached:
        assert torch.allclose(got.states, plain.states) and torch.equal(got.mask, plain.mask)
        assert torch.allclose(got.pooled, plain.pooled)
    assert encoder.cache.stats()["hits"] == 2

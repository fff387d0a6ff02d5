"""Content-keyed caches: a key changes whenever any input changes, entries survive processes, nothing stale."""
import torch
from hypothesis import given, strategies as st

from flowspec.runtime.data.cache import ContentCache, content_key, module_fingerprint

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

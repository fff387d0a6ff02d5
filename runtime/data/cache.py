"""On-disk caches of encoder outputs (VAE latents, frozen text embeddings, REPA targets).

An entry's key is a hash of everything its value depends on: the input's content (image bytes or
the procedural recipe, caption text), the encoder's identity and a hash of its weights, the bucket
size and crop, the dtype. Change any of them and the key changes: a stale entry cannot be read, by
construction. Entries are written in safetensors shards, one new shard per flush and per process
(temp file + rename), so concurrent writers never touch the same file and a killed writer leaves
no half-written shard.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CACHE_VERSION = 1  # bump when the layout or the meaning of a cached value changes


def content_key(**parts: Any) -> str:
    """sha256 of the parts in canonical JSON (bytes are hashed first)."""
    def norm(value):
        if isinstance(value, bytes):
            return {"sha256": hashlib.sha256(value).hexdigest()}
        if isinstance(value, dict):
            return {k: norm(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        return value

    text = json.dumps({"v": CACHE_VERSION, **norm(parts)}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _stable(value: Any) -> Any:
    """Drop bookkeeping keys ('_'-prefixed: diffusers' _use_default_values is in set order, which
    changes from process to process) so equal encoders give equal fingerprints everywhere."""
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_stable(v) for v in value)
    return value


def module_fingerprint(module: torch.nn.Module, identity: Any) -> str:
    """An encoder's identity plus a hash of every weight, so retrained or swapped weights never hit."""
    digest = hashlib.sha256(json.dumps(_stable(identity), sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ContentCache:
    """get/put of small tensor dicts by content key, backed by safetensors shards under root/namespace."""

    def __init__(self, root: str | Path, namespace: str, flush_every: int = 256):
        self.folder = Path(root) / namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._index: dict[str, Path] = {}
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = self.misses = 0
        self.refresh()

    def refresh(self) -> None:
        """Index every finished shard (headers only; the tensors stay on disk, memory-mapped on read)."""
        for shard in sorted(self.folder.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():
                    self._index.setdefault(name.split("/", 1)[0], shard)

    def __contains__(self, key: str) -> bool:
        return key in self._index or key in self._pending

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if key in self._pending:
            self.hits += 1
            return self._pending[key]
        shard = self._index.get(key)
        if shard is None:
            self.misses += 1
            return None
        self.hits += 1
        with safe_open(str(shard), framework="pt") as handle:
            names = [n for n in handle.keys() if n.startswith(key + "/")]
            return {n.split("/", 1)[1]: handle.get_tensor(n) for n in names}

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if key in self:
            return
        # own, contiguous storage: safetensors refuses views and shared memory
        self._pending[key] = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
                              for k, v in tensors.items()}
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        flat = {f"{key}/{name}": tensor for key, tensors in self._pending.items() for name, tensor in tensors.items()}
        shard = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = shard.with_suffix(".tmp")
        save_file(flat, str(tmp))
        os.replace(tmp, shard)
        for key in self._pending:
            self._index[key] = shard
        self._pending.clear()

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._index) + len(self._pending)}

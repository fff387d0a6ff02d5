"""Reflow's coupling cache (runtime/data/coupling.py): chunks are shared out over ranks, written whole, and a
rerun after an interruption makes only the missing ones, giving the same pairs."""
import torch

from flowspec.runtime.data.coupling import CHUNK, make_coupling


def solver(calls: list):
    def solve(prompts, index):
        calls.append(index)
        noise = torch.full((len(prompts), 2), float(index))
        return noise, noise + 1
    return solve


def test_ranks_share_the_chunks_and_each_reads_them_all(tmp_path):
    prompts = [f"p{i}" for i in range(3 * CHUNK + 5)]  # 4 chunks
    made = {0: [], 1: []}
    _own_share(tmp_path, prompts, made[1])  # rank 1 makes its share, then waits at the barrier
    make_coupling(tmp_path, prompts, solver(made[0]), rank=0, world=2, log=lambda _: None)
    assert made == {0: [0, 2], 1: [1, 3]}
    coupling = make_coupling(tmp_path, prompts, solver([]), log=lambda _: None)
    assert len(coupling) == len(prompts) and coupling.captions == prompts
    assert torch.equal(coupling.noise[:, 0], torch.arange(len(prompts)).div(CHUNK, rounding_mode="floor").float())


def _own_share(folder, prompts, calls):
    """Rank 1 of 2 up to its barrier (the reading after it needs rank 0's chunks)."""
    class Stop(Exception):
        pass

    def barrier():
        raise Stop

    try:
        make_coupling(folder, prompts, solver(calls), rank=1, world=2, barrier=barrier, log=lambda _: None)
    except Stop:
        pass


def test_a_rerun_makes_only_the_missing_chunks_and_gives_the_same_pairs(tmp_path):
    prompts = [f"p{i}" for i in range(2 * CHUNK + 1)]
    first = make_coupling(tmp_path, prompts, solver([]), log=lambda _: None)
    (tmp_path / "chunk-00001.pt").unlink()  # interrupted before this chunk was written
    (tmp_path / "chunk-00002.pt.123.tmp").write_bytes(b"half a chunk")  # a write cut short is never read
    calls = []
    again = make_coupling(tmp_path, prompts, solver(calls), log=lambda _: None)
    assert calls == [1]
    assert torch.equal(first.noise, again.noise) and torch.equal(first.samples, again.samples)

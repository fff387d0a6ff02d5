"""A weight snapshot (runtime/train/snapshot.py) swapped in and out inside one autocast region: the forward
after it must see the live weights. torch's autocast caches the bf16 copy of a weight for the whole region
and does not notice an in-place copy into it, so a snapshot pass under autocast would leave its weights in the
cache for the live forward that follows (a progressive round's teacher, the consistency target, GRPO's old
policy: each trains the live model on the snapshot's outputs)."""
import torch
from torch import nn

from flowspec.runtime.train.snapshot import WeightSnapshot


def test_the_live_forward_after_a_snapshot_pass_sees_the_live_weights_under_autocast():
    torch.manual_seed(0)
    net = nn.Linear(8, 8)
    snapshot = WeightSnapshot({"net": net})
    with torch.no_grad():
        net.weight.add_(1.0)  # the live weights move away from the snapshot
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        live_first = net(x).float()  # caches the live weights' bf16 copy
        with snapshot.loaded():
            old = net(x).float()
        live = net(x).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with snapshot.loaded():  # the snapshot first: it must not leave its copy for the live forward
            net(x)
        live_after = net(x).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = net(x).float()
    assert torch.equal(live, expected) and torch.equal(live_first, expected) and torch.equal(live_after, expected)
    with torch.no_grad():
        net.weight.sub_(1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(old, net(x).float())  # the snapshot pass saw the snapshot's weights

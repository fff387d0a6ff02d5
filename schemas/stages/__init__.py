"""`stages:` the chain. One tagged model per kind, grouped by family:

    training.py       pretrain, finetune, dreambooth
    preference.py     reward_feedback, flow_grpo, diffusion_dpo
    distillation.py   progressive_distill, reflow, consistency_distill, adversarial_distill, distribution_matching
    autoencoder.py    autoencoder: the latent space's VAE
    custom.py         custom: a user's objective class

Each class declares what the compiler needs to know about its kind (base.py); the runtime module of
its objective is runtime/objectives/<objective>.py. Adding a kind: a class here, added to STAGE_CLASSES.
"""
from ..base import kind_tag, tagged
from .autoencoder import Autoencoder
from .base import INHERITED_BLOCKS, Note, OpSpec, StageBase
from .custom import Custom
from .distillation import (AdversarialDistill, ConsistencyDistill, Discriminator, DistillBase, DistributionMatching,
                           ProgressiveDistill, Reflow)
from .preference import DiffusionDPO, DPOPairs, FlowGRPO, JsonlPairs, Pairs, RewardFeedback
from .training import AuxLoss, DreamBooth, Finetune, FlowMatchingStage, Prior, Pretrain, Repa

STAGE_CLASSES = (Autoencoder, Pretrain, Finetune, DreamBooth, RewardFeedback, FlowGRPO, DiffusionDPO,
                 ProgressiveDistill, Reflow, ConsistencyDistill, AdversarialDistill, DistributionMatching, Custom)
Stage = tagged(*STAGE_CLASSES)
STAGE_KINDS = tuple(kind_tag(cls) for cls in STAGE_CLASSES)

__all__ = ["INHERITED_BLOCKS", "STAGE_CLASSES", "STAGE_KINDS", "AdversarialDistill", "Autoencoder", "AuxLoss", "ConsistencyDistill",
           "Custom", "DPOPairs", "DiffusionDPO", "Discriminator", "DistillBase", "DistributionMatching", "DreamBooth", "Finetune",
           "FlowGRPO", "FlowMatchingStage", "JsonlPairs", "Note", "OpSpec", "Pairs", "Pretrain", "Prior",
           "ProgressiveDistill", "Reflow", "Repa", "RewardFeedback", "Stage", "StageBase"]

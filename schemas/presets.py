"""Size presets of every model family and VAE, as plain data (no torch).

Each preset is the full constructor config of the diffusers class (or of flowspec's MLP). A spec picks
one by name and may override single keys under `model.config`; tests/test_presets.py builds every tiny
preset with diffusers and checks the key lists below against the real constructors.
"""
from __future__ import annotations

from typing import Any

# Which class backs each family; the runtime imports it, the schema only names it.
FAMILY_CLASSES: dict[str, str] = {
    "dit": "DiTTransformer2DModel",
    "mmdit": "SD3Transformer2DModel",
    "flux": "FluxTransformer2DModel",
    "unet": "UNet2DConditionModel",
    "pixart": "PixArtTransformer2DModel",
    "mlp": "flowspec.runtime.models.mlp.VelocityMLP",
}

_UNET_TINY_TIME_EMBED = 8
_UNET_SDXL_TIME_EMBED = 256

MODEL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dit": {
        "tiny": dict(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
                     num_layers=2, sample_size=8, patch_size=2,
                     num_embeds_ada_norm=18),  # the embedded shapes source's classes (6 colours x 3 shapes)
        "small": dict(num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=4,
                      num_layers=12, sample_size=32, patch_size=2, num_embeds_ada_norm=1000),
        "base": dict(num_attention_heads=12, attention_head_dim=64, in_channels=4, out_channels=4,
                     num_layers=12, sample_size=32, patch_size=2, num_embeds_ada_norm=1000),
        # DiT-XL/2 (Peebles & Xie 2023), 675M parameters.
        "xl": dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=4,
                   num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000),
    },
    "mmdit": {
        "tiny": dict(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                     attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                     caption_projection_dim=64, pooled_projection_dim=64, pos_embed_max_size=32),
        "small": dict(sample_size=32, patch_size=2, in_channels=4, out_channels=4, num_layers=8,
                      attention_head_dim=64, num_attention_heads=6, joint_attention_dim=384,
                      caption_projection_dim=384, pooled_projection_dim=384, pos_embed_max_size=64),
        # Shaped like SD3-medium (2B): 24 joint blocks, width 1536, 16-channel latents.
        "sd3_medium": dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                           attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                           caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192),
    },
    "flux": {
        # Flux packs 2x2 latent patches into tokens, so in_channels = 4 x latent channels.
        "tiny": dict(patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=2,
                     attention_head_dim=16, num_attention_heads=4, joint_attention_dim=64,
                     pooled_projection_dim=64, guidance_embeds=False, axes_dims_rope=(4, 6, 6)),
        # Shaped like FLUX.1-dev (12B).
        "dev": dict(patch_size=1, in_channels=64, out_channels=64, num_layers=19, num_single_layers=38,
                    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
    },
    "unet": {
        "tiny": dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                     attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
                     addition_embed_type="text_time", addition_time_embed_dim=_UNET_TINY_TIME_EMBED,
                     projection_class_embeddings_input_dim=64 + 6 * _UNET_TINY_TIME_EMBED,
                     use_linear_projection=True),
        # Shaped like the SDXL base UNet (2.6B).
        "sdxl": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                     block_out_channels=(320, 640, 1280),
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                     cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                     transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time",
                     addition_time_embed_dim=_UNET_SDXL_TIME_EMBED,
                     projection_class_embeddings_input_dim=1280 + 6 * _UNET_SDXL_TIME_EMBED,
                     use_linear_projection=True),
    },
    "pixart": {
        "tiny": dict(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
                     num_layers=2, cross_attention_dim=64, sample_size=16, patch_size=2,
                     caption_channels=64, use_additional_conditions=False),
        # Shaped like PixArt-alpha XL/2 (0.6B); out_channels 8 = learned variance, the adapter keeps 4.
        "alpha": dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                      num_layers=28, cross_attention_dim=1152, sample_size=128, patch_size=2,
                      caption_channels=4096, use_additional_conditions=True),
    },
    "mlp": {
        "tiny": dict(in_dim=2, hidden_dim=64, num_layers=3, time_embed_dim=32, num_classes=0),
        "small": dict(in_dim=2, hidden_dim=256, num_layers=4, time_embed_dim=64, num_classes=0),
    },
}

# Constructor keywords of each class (tests/test_presets.py compares them with inspect.signature).
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "dit": frozenset("""num_attention_heads attention_head_dim in_channels out_channels num_layers dropout
        norm_num_groups attention_bias sample_size patch_size activation_fn num_embeds_ada_norm
        upcast_attention norm_type norm_elementwise_affine norm_eps""".split()),
    "mmdit": frozenset("""sample_size patch_size in_channels num_layers attention_head_dim num_attention_heads
        joint_attention_dim caption_projection_dim pooled_projection_dim out_channels pos_embed_max_size
        dual_attention_layers qk_norm""".split()),
    "flux": frozenset("""patch_size in_channels out_channels num_layers num_single_layers attention_head_dim
        num_attention_heads joint_attention_dim pooled_projection_dim guidance_embeds axes_dims_rope""".split()),
    "unet": frozenset("""sample_size in_channels out_channels center_input_sample flip_sin_to_cos freq_shift
        down_block_types mid_block_type up_block_types only_cross_attention block_out_channels
        layers_per_block downsample_padding mid_block_scale_factor dropout act_fn norm_num_groups norm_eps
        cross_attention_dim transformer_layers_per_block reverse_transformer_layers_per_block encoder_hid_dim
        encoder_hid_dim_type attention_head_dim num_attention_heads dual_cross_attention use_linear_projection
        class_embed_type addition_embed_type addition_time_embed_dim num_class_embeds upcast_attention
        resnet_time_scale_shift resnet_skip_time_act resnet_out_scale_factor time_embedding_type
        time_embedding_dim time_embedding_act_fn timestep_post_act time_cond_proj_dim conv_in_kernel
        conv_out_kernel projection_class_embeddings_input_dim attention_type class_embeddings_concat
        mid_block_only_cross_attention cross_attention_norm addition_embed_type_num_heads""".split()),
    "pixart": frozenset("""num_attention_heads attention_head_dim in_channels out_channels num_layers dropout
        norm_num_groups cross_attention_dim attention_bias sample_size patch_size activation_fn
        num_embeds_ada_norm upcast_attention norm_type norm_elementwise_affine norm_eps interpolation_scale
        use_additional_conditions caption_channels attention_type""".split()),
    "mlp": frozenset("in_dim hidden_dim num_layers time_embed_dim num_classes".split()),
}

VAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(block_out_channels=(32, 64), latent_channels=4, layers_per_block=1,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 norm_num_groups=32, sample_size=32, scaling_factor=1.0),
    "small": dict(block_out_channels=(32, 64, 64), latent_channels=4, layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  norm_num_groups=32, sample_size=64, scaling_factor=1.0),
    # The SD / SDXL autoencoder shape (83M), 8x downsampling, 4 channels.
    "sdxl": dict(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                 norm_num_groups=32, sample_size=1024, scaling_factor=0.13025),
    # The SD3 / Flux autoencoder shape: 16 channels, with a shift.
    "sd3": dict(block_out_channels=(128, 256, 512, 512), latent_channels=16, layers_per_block=2,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                norm_num_groups=32, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
                use_quant_conv=False, use_post_quant_conv=False),
}


def vae_factor(vae_config: dict[str, Any]) -> int:
    """Pixels per latent cell: each encoder block but the last halves the side."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)

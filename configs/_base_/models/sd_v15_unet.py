# Stable Diffusion v1.5 UNet as a detection backbone (SDBackbone) and its FPN ("SD-FPN").
# Weights: a local diffusers folder (unet/, vae/, text_encoder/, tokenizer/), never a hub
# download. unet_cfg / vae_cfg are SD v1.5's architecture; they are only read when
# `pretrained` is a single-file (original LDM layout) checkpoint.
# Features with stride4='upsample': 320/320/640/1280/1280 channels at strides 4/8/16/32/64
# (the stride-4 level is the stride-8 level upsampled 2x), so Oriented R-CNN's default
# anchor strides [4, 8, 16, 32, 64] and RoI featmap_strides [4, 8, 16, 32] apply unchanged.
sd_v15_unet = dict(
    type='SDBackbone',
    pretrained='checkpoints/stable-diffusion-v1-5',
    unet_cfg=dict(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                          'CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                        'CrossAttnUpBlock2D')),
    vae_cfg=dict(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 4,
        up_block_types=('UpDecoderBlock2D', ) * 4,
        sample_size=512,
        scaling_factor=0.18215),
    timestep=1,
    test_noise_draws=1,
    # a fixed, label-free prompt encoded once by the local CLIP text encoder
    text_mode='prompt',
    prompt='an aerial image',
    stride4='upsample',
    gradient_checkpointing=True,
    autocast=None,  # 'bf16' on GPUs that have it
    lora_targets='attention')
# SD-FPN: mmdet FPN over the five SDBackbone levels
sd_v15_fpn = dict(type='mmdet.FPN', in_channels=[320, 320, 640, 1280, 1280],
                  out_channels=256, num_outs=5)
# SD's VAE expects images in [-1, 1]
sd_data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                            pad_size_divisor=64)

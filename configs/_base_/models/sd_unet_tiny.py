# A tiny random-weight Stable Diffusion (same block layout as SD v1.5, ~3M parameters) for
# tests and the toy data: VAE with 4 latent channels and 8x downsampling like SD, UNet
# with 4 levels. Features (SDBackbone, stride4='upsample'): channels 32/32/64/64/64 at
# strides 4/8/16/32/64. Used as `backbone={{_base_.sd_unet_tiny}}`; `sd_tiny_fpn_in` is the
# matching FPN in_channels.
sd_unet_tiny = dict(
    type='SDBackbone',
    pretrained=None,
    unet_cfg=dict(
        sample_size=32,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                          'CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                        'CrossAttnUpBlock2D')),
    vae_cfg=dict(
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        down_block_types=('DownEncoderBlock2D', ) * 4,
        up_block_types=('UpDecoderBlock2D', ) * 4,
        sample_size=256),
    timestep=1,
    text_mode='zeros',
    context_length=4,
    stride4='upsample')
sd_tiny_fpn_in = [32, 32, 64, 64, 64]

# (a) Full fine-tuning on DOTA: the Stable Diffusion v1.5 UNet of
# oriented_rcnn_sd_lora_dota.py without LoRA, every UNet weight trained (the VAE stays
# frozen, SDBackbone's default). Same data and schedule as the LoRA run; the pretrained
# UNet gets a tenth of the lr (1e-5) so fine-tuning does not wash out its features.
_base_ = './oriented_rcnn_sd_lora_dota.py'

model = dict(backbone=dict(_base_.sd_v15_unet, _delete_=True))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))

preflight_hint = (
    'Needs Stable Diffusion v1.5 in diffusers layout and split DOTA-v1.0 on local disk: '
    '--cfg-options model.backbone.pretrained=/path/sd-v1-5 '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')

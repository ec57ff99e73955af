# Detection benchmark, the balanced-data oracle (a reference, not a method): the LoRA
# row's recipe on as many training objects, class-balanced (target/train_balanced).
_base_ = './bias_det_lora.py'

train_dataloader = dict(dataset=dict(ann_file='train_balanced/annfiles/',
                                     data_prefix=dict(img_path='train_balanced/images/')))

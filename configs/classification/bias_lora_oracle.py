# The balanced-data oracle of the bias diagnostics: the LoRA row's recipe on as many
# training crops, class-balanced (target/train_balanced). Not a method: a reference.
_base_ = './bias_lora.py'

train_dataloader = dict(dataset=dict(folders=dict(train='train_balanced')))

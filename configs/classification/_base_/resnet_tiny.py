# A small mmpretrain ResNet-18 (16 base channels, 0.7 M parameters, 128-d features) for
# 32 px crops, global pooling and a linear head: one CPU run of the bias benchmark takes
# about a minute.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=15, in_channels=128,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

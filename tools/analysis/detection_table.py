"""The paper's detection table on the bias benchmark's scenes, over several seeds.

    python tools/analysis/detection_table.py [--rows ROW ...] [--seeds 0 1 2 3 4]
        [--work-dir work_dirs/detection_table] [--data-root data/bias_benchmark/target/]
        [--foundation data/bias_benchmark/foundation.pth] [--reduced] [--no-shared-stage1]
        [--cfg-options k=v ...]

Every (row, seed) is trained with the row's config (``configs/bias_detection/``, Oriented
R-CNN with the foundation in LoRABackbone) on mmengine's runner, as ``tools/train.py`` does
(``CheckedRunner``), then its last checkpoint is evaluated on the test scenes in a fresh
runner, as ``tools/test.py`` does (``GroupDOTAMetric``). Rows run one after another, each in
its own process (the seeds of a row in sequence inside it). A run whose
``<work-dir>/<row>/seed<s>/result.json`` exists is skipped, so an interrupted table is
resumed by running the same command again; a run left half-done is started again.

Printed (and written to ``<work-dir>/table.md`` and ``table.json``): mean +- sd over the
seeds of head / middle / tail / all mAP (%, ``dota/head_mAP`` ... ``dota/mAP`` x 100; the
results keep the metric's 0..1 values) and the trainable parameters, and the paired
differences (same seed) of LoRA + debLoRA against LoRA and against its lambda-0 control
(stage 2 without the feature loss), and of LoRA against the balanced-data oracle, with a
95 % t interval.

Shared stage 1 (default; ``--no-shared-stage1`` turns it off): the debLoRA rows do not
train stage 1 again. Each resumes the LoRA row's run of the same seed at the switch epoch
(``<work-dir>/lora/seed<s>/train/epoch_<switch>.pth``, which the LoRA row keeps for them: its
checkpoint interval becomes the switch epoch, read from the debLoRA config after the
options) and goes on with the switch and stage 2. Sound because up to the switch a debLoRA
row is the LoRA recipe with the same seed: its config is the LoRA config plus the hook,
which acts only at the switch (``DebLoRAFasterRCNN`` is Oriented R-CNN until it enters
stage 2); and the resume is exact (``CheckedRunner``'s ``RandomStateHook`` restores the
random state and the loader's seeds saved in the checkpoint). It removes stage-1 noise
from the paired differences against LoRA: both sides share one stage 1, so the difference
measures stage 2 alone. (A debLoRA run trained from scratch is not the LoRA run bit for
bit: the hook's checks before training draw random numbers before the weights are
initialised.) A debLoRA row whose LoRA run (result or checkpoint) is missing runs it first,
also when ``--rows`` does not name ``lora``. ``result.json`` records ``stage1_from``.

Trainable parameters: what the run updates; for the debLoRA rows the stage-1 set plus the
stage-2 adapter (``deblora``).

``--reduced``: tiny generated scenes (written under the work dir), a random-weight
foundation, 2 epochs (the debLoRA switch after 1) and 2 seeds: a check that every row runs
end to end and the table is assembled, in a few minutes; its numbers mean nothing.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, Tuple

from mmdeblora.utils import seed_table
from mmdeblora.utils.seed_table import TableProtocol

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', 'bias_detection')
DEBLORA = 'bias_det_lora_deblora.py'
# row -> (label in the table, config, extra --cfg-options)
ROWS: 'OrderedDict[str, Tuple[str, str, Dict[str, object]]]' = OrderedDict([
    ('lora', ('LoRA', 'bias_det_lora.py', {})),
    ('lora_reweight', ('LoRA + Reweight', 'bias_det_lora_reweight.py', {})),
    ('lora_ecm', ('LoRA + ECM', 'bias_det_lora_ecm.py', {})),
    ('lora_reslt', ('LoRA + ResLT', 'bias_det_lora_reslt.py', {})),
    ('lora_deblora', ('LoRA + debLoRA', DEBLORA, {})),
    ('lora_deblora_l0', ('LoRA + debLoRA, lambda 0 (control)', DEBLORA,
                         {'DebLoRAHook.loss_weight': 0.0})),
    ('oracle', ('LoRA, balanced training data (oracle, reference)',
                'bias_det_lora_oracle.py', {})),
])
DEFAULT_ROWS = list(ROWS)
PAIRS = [('lora_deblora', 'lora'), ('lora_deblora', 'lora_deblora_l0'), ('lora', 'oracle')]
SCORES = (('dota/head_mAP', 'Head'), ('dota/middle_mAP', 'Middle'),
          ('dota/tail_mAP', 'Tail'), ('dota/mAP', 'All'))
# the debLoRA rows (the rows whose config has a DebLoRAHook) resume the LoRA row's stage 1
SHARED_STAGE1 = {'lora_deblora': 'lora', 'lora_deblora_l0': 'lora'}
# 128 px scenes as the configs' img_scale (no resize), the default 20-30 px objects; 55
# training objects (6 in the largest class, 2 in the smallest) in about 6 scenes
REDUCED_DATA = dict(max_count=6, imbalance_ratio=3, val_per_class=1, test_per_class=2,
                    img_size=128, objects_per_image=10.0)
REDUCED_SEEDS = [0, 1]


def reduced_data(work_dir: str) -> str:
    """Tiny generated target scenes for ``--reduced`` (made once, reused)."""
    return seed_table.reduced_target(work_dir, REDUCED_DATA)


def reduced_options(cfg, args: argparse.Namespace) -> Dict[str, object]:
    """``--reduced``: 2 epochs (the debLoRA switch after 1), small batches, loaders and the
    metric in this process (2 cores), no validation during training (the table reads the
    test scenes)."""
    opts: Dict[str, object] = {'train_cfg.max_epochs': 2, 'train_dataloader.batch_size': 4,
                               'default_hooks.logger.interval': 1}
    for k in ('train_dataloader', 'test_dataloader'):
        opts.update({f'{k}.num_workers': 0, f'{k}.persistent_workers': False})
    # fewer proposals and RoIs: the cost of a random model's many boxes, not what is checked
    opts.update({'model.train_cfg.rpn_proposal.max_per_img': 100,
                 'model.train_cfg.rcnn.sampler.num': 64,
                 'model.test_cfg.rpn.max_per_img': 100, 'model.test_cfg.rcnn.max_per_img': 30})
    opts.update({'test_evaluator.nproc': 1,
                 'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None})
    opts.update(seed_table.reduced_hook_options(cfg))
    return opts


PROTOCOL = TableProtocol(
    name='detection', tool=__file__, doc=__doc__, cfg_dir=CFG_DIR, rows=ROWS,
    default_rows=tuple(DEFAULT_ROWS), pairs=tuple(PAIRS), scores=SCORES,
    tail='dota/tail_mAP', tail_text='tail mAP', unit='mAP (%, rotated boxes)', scale=100.0,
    reduced_options=reduced_options, reduced_data=reduced_data,
    reduced_seeds=tuple(REDUCED_SEEDS), shared_stage1=SHARED_STAGE1)
MARKER = PROTOCOL.marker


# the machinery (mmdeblora.utils.seed_table) bound to this table
(parse_args, run_options, build_cfg, prepare_run_dir, run_one, worker, summarize, markdown,
 main) = seed_table.bind(PROTOCOL)


if __name__ == '__main__':
    sys.exit(main())

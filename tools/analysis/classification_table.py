"""The paper's classification table on the bias benchmark, over several seeds.

    python tools/analysis/classification_table.py [--rows ROW ...] [--seeds 0 1 2 3 4]
        [--work-dir work_dirs/classification_table] [--data-root data/bias_benchmark/target/]
        [--foundation data/bias_benchmark/foundation.pth] [--reduced] [--cfg-options k=v ...]

Every (row, seed) is trained with the row's config (``configs/classification/``) on
mmengine's runner, as ``tools/train.py`` does (``CheckedRunner``), then its last checkpoint
is evaluated on the test split in a fresh runner, as ``tools/test.py`` does. Rows run one
after another, each in its own process (the seeds of a row in sequence inside it). A run
whose ``<work-dir>/<row>/seed<s>/result.json`` exists is skipped, so an interrupted table is
resumed by running the same command again; a run left half-done is started again.

Printed (and written to ``<work-dir>/table.md`` and ``table.json``): mean +- sd over the
seeds of head / middle / tail / all macro-F1 (%) and the trainable parameters, in the
paper's layout, and the paired differences (same seed) of LoRA + debLoRA against LoRA and
against its lambda-0 control (stage 2 without the feature loss) and of cLoRA + debLoRA
against cLoRA, with a 95 % t interval.

Trainable parameters: what the run updates; for the debLoRA rows the stage-1 set plus the
stage-2 adapter (``deblora``).

``--reduced``: tiny generated data (written under the work dir), a random-weight
foundation, 2 epochs (the debLoRA switch after 1) and 2 seeds: a check that every row runs
end to end and the table is assembled, in a few minutes; its numbers mean nothing.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, Tuple

from mmdeblora.utils import seed_table
# the machinery's own names, as this script had them (tests and notebooks use them)
from mmdeblora.utils.seed_table import (LORA_BACKBONES, TableProtocol, collect, fmt,  # noqa: F401
                                        last_reach, paired_interval, result_path, run_fingerprints,
                                        stage2_params)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG_DIR = osp.join(REPO, 'configs', 'classification')
# row -> (label in the table, config, extra --cfg-options)
ROWS: 'OrderedDict[str, Tuple[str, str, Dict[str, object]]]' = OrderedDict([
    ('zero_shot', ('Zero-shot', 'bias_zero_shot.py', {})),
    ('finetune', ('Fine-tune', 'bias_finetune.py', {})),
    ('clora', ('cLoRA', 'bias_clora.py', {})),
    ('clora_deblora', ('cLoRA + debLoRA', 'bias_clora_deblora.py', {})),
    ('lora', ('LoRA', 'bias_lora.py', {})),
    ('lora_reweight', ('LoRA + Reweight', 'bias_lora_reweight.py', {})),
    ('lora_logit_adjust', ('LoRA + logit adjustment', 'bias_lora_logit_adjust.py', {})),
    ('lora_logit_adjust_deblora', ('LoRA + logit adjustment + debLoRA',
                                   'bias_lora_logit_adjust_deblora.py', {})),
    ('lora_smote', ('LoRA + SMOTE', 'bias_lora_smote.py', {})),
    ('lora_dro_lt', ('LoRA + DRO-LT', 'bias_lora_dro_lt.py', {})),
    ('lora_dro_lt_official', ('LoRA + DRO-LT, official recipe', 'bias_lora_dro_lt_official.py',
                              {})),
    ('lora_reslt', ('LoRA + ResLT', 'bias_lora_reslt.py', {})),
    ('lora_deblora', ('LoRA + debLoRA', 'bias_lora_deblora.py', {})),
    ('lora_deblora_l0', ('LoRA + debLoRA, lambda 0 (control)', 'bias_lora_deblora.py',
                         {'DebLoRAHook.loss_weight': 0.0})),
    ('lora_deblora_pool', ('LoRA + debLoRA, unlabelled cluster pool',
                           'bias_lora_deblora_pool.py', {})),
    ('oracle', ('LoRA, balanced training data (oracle, reference)', 'bias_lora_oracle.py',
                {})),
])
# the oracle is a reference; the pool row needs a pool (train_balanced, the oracle's images)
DEFAULT_ROWS = [r for r in ROWS if r not in ('oracle', 'lora_deblora_pool')]
PAIRS = [('lora_deblora', 'lora'), ('lora_deblora', 'lora_deblora_l0'),
         ('lora_deblora_pool', 'lora'), ('lora_deblora_pool', 'lora_deblora_l0'),
         ('lora_deblora_pool', 'lora_deblora'),
         ('clora_deblora', 'clora'), ('lora_logit_adjust_deblora', 'lora_logit_adjust')]
SCORES = (('head_f1', 'Head'), ('middle_f1', 'Middle'), ('tail_f1', 'Tail'),
          ('macro_f1', 'All'))
REDUCED_DATA = dict(max_count=24, imbalance_ratio=8, val_per_class=3, test_per_class=3,
                    img_size=96, objects_per_image=6.0)
REDUCED_SEEDS = [0, 1]


def reduced_data(work_dir: str) -> str:
    """Tiny generated target domain for ``--reduced`` (made once, reused)."""
    return seed_table.reduced_target(work_dir, REDUCED_DATA)


def reduced_options(cfg, args: argparse.Namespace) -> Dict[str, object]:
    """``--reduced``: the crop cache in the work dir, 2 epochs (the debLoRA switch after 1),
    no validation during training (the table reads the test split)."""
    opts: Dict[str, object] = {f'{k}.dataset.cache_dir': osp.join(args.work_dir, 'crop_cache')
                               for k in seed_table.LOADERS}
    opts.update({'train_cfg.max_epochs': 2, 'train_dataloader.batch_size': 64,
                 'optim_wrapper.optimizer.lr': 0.01,
                 'default_hooks.logger.interval': 1,
                 'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None})
    opts.update(seed_table.reduced_hook_options(cfg))
    return opts


PROTOCOL = TableProtocol(
    name='classification', tool=__file__, doc=__doc__, cfg_dir=CFG_DIR, rows=ROWS,
    default_rows=tuple(DEFAULT_ROWS), pairs=tuple(PAIRS), scores=SCORES, tail='tail_f1',
    tail_text='tail macro-F1', unit='Macro-F1 (%)', reduced_options=reduced_options,
    reduced_data=reduced_data, reduced_seeds=tuple(REDUCED_SEEDS))
MARKER = PROTOCOL.marker


# the machinery (mmdeblora.utils.seed_table) bound to this table
(parse_args, run_options, build_cfg, prepare_run_dir, run_one, worker, summarize, markdown,
 main) = seed_table.bind(PROTOCOL)


if __name__ == '__main__':
    sys.exit(main())

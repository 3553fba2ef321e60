"""Every option of `facewatch train triplet`: its name (``--with-dashes`` and the original's
``--with_underscores``), type, default and help; the original ``train_tripletloss.py``'s, then
facewatch's. training/train_options.py builds the parser from them and checks their values.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.choices import MODEL_DEF_NAMES, RULES, STANDARDIZATIONS, count

# the original's five, updating as TensorFlow 1.x did, and torch's own Adam (the recipes')
OPTIMIZERS = ("ADAGRAD", "ADADELTA", "ADAM", "RMSPROP", "MOM", "ADAM_TORCH")
LOSSES = ("triplet", "center", "distill")


def _opt(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``--name-with-dashes`` and its original ``--name_with_underscores`` spelling; an
    on/off flag also gets its ``--no-`` form (to turn off what a recipe or a run turned on)."""
    if kwargs.get("action") == "store_true":
        kwargs = {**kwargs, "action": argparse.BooleanOptionalAction, "default": False}
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)


ORIGINAL_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "logs_base_dir",
        {
            "type": Path,
            "default": Path("~/logs/facenet"),
            "help": "event logs go under here (one run directory per run)",
        },
    ),
    (
        "models_base_dir",
        {
            "type": Path,
            "default": Path("~/models/facenet"),
            "help": "checkpoints go under here (one run directory per run)",
        },
    ),
    (
        "gpu_memory_fraction",
        {
            "type": float,
            "default": 1.0,
            "help": "accepted for compatibility and ignored (PyTorch allocates on demand); use --gpu",
        },
    ),
    (
        "pretrained_model",
        {
            "type": Path,
            "default": None,
            "help": "state dict or checkpoint to start from (facenet-pytorch .pt files load too), "
            "or an Inception-ResNet-v1 ONNX model that facewatch exported (its weights)",
        },
    ),
    (
        "data_dir",
        {
            "type": Path,
            "default": Path("~/datasets/casia/casia_maxpy_mtcnnalign_182_160"),
            "help": "aligned face crops, one folder per identity",
        },
    ),
    (
        "model_def",
        {
            "default": "models.inception_resnet_v1",
            "choices": sorted(MODEL_DEF_NAMES),
            "help": "network definition",
        },
    ),
    ("max_nrof_epochs", {"type": int, "default": 500, "help": "number of epochs to run"}),
    (
        "batch_size",
        {
            "type": int,
            "default": 90,
            "help": "images per training batch (a multiple of 3: whole triplets)",
        },
    ),
    ("image_size", {"type": int, "default": 160, "help": "network input size in pixels (square)"}),
    (
        "people_per_batch",
        {"type": int, "default": 45, "help": "people sampled for each triplet selection"},
    ),
    ("images_per_person", {"type": int, "default": 40, "help": "images sampled per person"}),
    ("epoch_size", {"type": int, "default": 1000, "help": "batches per epoch"}),
    ("alpha", {"type": float, "default": 0.2, "help": "triplet loss margin"}),
    ("embedding_size", {"type": int, "default": 128, "help": "dimensions of the embedding"}),
    (
        "random_crop",
        {
            "action": "store_true",
            "help": "random crops of image_size from larger training images (else centre crop)",
        },
    ),
    ("random_flip", {"action": "store_true", "help": "random horizontal flips of training images"}),
    (
        "keep_probability",
        {"type": float, "default": 1.0, "help": "dropout keep probability of the last layer"},
    ),
    (
        "weight_decay",
        {
            "type": float,
            "default": 0.0,
            "help": "L2 weight regularisation (on conv / linear weights)",
        },
    ),
    (
        "optimizer",
        {
            "type": str.upper,
            "default": "ADAGRAD",
            "choices": OPTIMIZERS,
            "help": "optimiser, with the original's settings, updating as its TensorFlow 1.x "
            "did (ADAM adds its epsilon 0.1 before the bias correction: its first ~1000 steps "
            "are smaller than torch's; RMSPROP's mean square starts at ones, epsilon 1.0 "
            "inside the root). ADAM_TORCH: torch.optim.Adam with the same settings (epsilon "
            "after the correction), which facewatch's distillation recipes were tuned with",
        },
    ),
    (
        "learning_rate",
        {
            "type": float,
            "default": 0.1,
            "help": "initial learning rate; 0 or negative: use --learning-rate-schedule-file",
        },
    ),
    (
        "learning_rate_decay_epochs",
        {"type": int, "default": 100, "help": "epochs between learning rate decays"},
    ),
    (
        "learning_rate_decay_factor",
        {"type": float, "default": 1.0, "help": "learning rate decay factor"},
    ),
    (
        "moving_average_decay",
        {
            "type": float,
            "default": 0.9999,
            "help": "exponential moving average decay of the weights (evaluation and export use the average; 0 disables)",
        },
    ),
    ("seed", {"type": int, "default": 666, "help": "random seed"}),
    (
        "learning_rate_schedule_file",
        {
            "type": Path,
            "default": Path("data/learning_rate_schedule.txt"),
            "help": "'epoch: learning_rate' lines (used when --learning-rate is negative; '-' "
            "stops); epochs count from 0 as in train_tripletloss.py, from 1 with --loss center "
            "as in the original's train_softmax.py",
        },
    ),
    ("lfw_pairs", {"type": Path, "default": Path("data/pairs.txt"), "help": "LFW pairs file"}),
    (
        "lfw_dir",
        {
            "type": str,
            "default": "",
            "help": "aligned LFW crops; when set, LFW is evaluated after every epoch",
        },
    ),
    (
        "lfw_nrof_folds",
        {
            "type": int,
            "default": None,
            "help": "LFW cross-validation folds (default: as many as the pairs file's header "
            "declares, else 10)",
        },
    ),
    ("lfw_batch_size", {"type": int, "default": 100, "help": "images per LFW evaluation batch"}),
)


def add_original_options(p: argparse.ArgumentParser) -> None:
    """The options of the original train_tripletloss.py (same names, meaning, defaults)."""
    for name, kwargs in ORIGINAL_OPTIONS:
        _opt(p, name, **kwargs)


FACEWATCH_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "config",
        {
            "type": Path,
            "default": None,
            "help": "YAML recipe giving option values (configs/training/*.yaml)",
        },
    ),
    (
        "run_name",
        {"default": "", "help": "run directory name (default: the start time, YYYYmmdd-HHMMSS)"},
    ),
    (
        "gpu",
        {
            "default": None,
            "help": "CUDA device index, or 'cpu' (default: CUDA 0 when present). Under --nproc-per-node or torchrun each process takes CUDA device LOCAL_RANK (CUDA_VISIBLE_DEVICES chooses which)",
        },
    ),
    (
        "nproc_per_node",
        {
            "type": count(1),
            "default": 1,
            "metavar": "N",
            "help": "train in N processes on this machine (DDP: one per CUDA GPU, or gloo on "
            "the CPU), started as torchrun would but on 127.0.0.1, with no host name lookup; "
            "several machines: torchrun (README)",
        },
    ),
    (
        "resume",
        {
            "default": None,
            "help": "checkpoint file, run directory, or 'auto' (newest run in --models-base-dir)",
        },
    ),
    ("amp", {"action": "store_true", "help": "mixed precision (CUDA only)"}),
    (
        "workers",
        {
            "type": int,
            "default": None,  # default_workers(), when the parser is built
            "help": "data loader worker processes (0: load in the main process); not kept by "
            "--resume (local to this machine)",
        },
    ),
    (
        "loss",
        {
            "default": "triplet",
            "choices": LOSSES,
            "help": "triplet (online selection), center (softmax + center loss) or distill (to --teacher)",
        },
    ),
    (
        "triplet_rule",
        {
            "default": "vggface",
            "choices": RULES,
            "help": "negative selection rule (see training/triplet.py)",
        },
    ),
    (
        "center_loss_factor",
        {"type": float, "default": 0.01, "help": "center loss weight for --loss center"},
    ),
    (
        "center_loss_alfa",
        {"type": float, "default": 0.95, "help": "center update rate for --loss center"},
    ),
    (
        "teacher",
        {
            "type": Path,
            "default": None,
            "help": "for --loss distill: an ONNX embedding model (with sidecar), run beside "
            "the student on each augmented batch (train on crops made for it: `align "
            "--template`), or a .npz of precomputed embeddings (`facewatch train embed`; "
            "see training/teacher.py)",
        },
    ),
    (
        "random_rotate",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: rotate each crop by up to this many degrees, on the "
            "training device, where teacher and student see the same warped crop (0: off)",
        },
    ),
    (
        "random_scale",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: scale each crop by a factor in [1 - F, 1 + F] (0: off)",
        },
    ),
    (
        "random_color",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: change brightness and contrast by up to F (a fraction) "
            "and make a crop grey with probability F / 2 (0: off)",
        },
    ),
    (
        "standardization",
        {
            "default": "fixed",
            "choices": STANDARDIZATIONS,
            "help": "the network's input: fixed: (x-127.5)/128, as facenet-pytorch's published "
            "weights were trained (not the original's); prewhiten: per-image mean/std, as the "
            "original train_tripletloss.py always does",
        },
    ),
    (
        "margin",
        {
            "type": int,
            "default": 32,
            "help": "margin the crops were aligned with (recorded for export)",
        },
    ),
    (
        "keep_checkpoints",
        {"type": int, "default": 3, "help": "epoch-NNNN.pt files kept (latest.pt is always kept)"},
    ),
    (
        "time_limit_min",
        {
            "type": float,
            "default": 0.0,
            "help": "stop after the first epoch that ends past this many minutes (0: no limit)",
        },
    ),
    (
        "lr_anneal",
        {
            "type": str,
            "default": "stairs",
            "choices": ("stairs", "cosine-time"),
            "help": "stairs: the rate decays by --learning-rate-decay-factor every "
            "--learning-rate-decay-epochs (the original's); cosine-time: it falls from the "
            "initial rate to 0 along a cosine over --time-limit-min, so that a run of unknown "
            "speed still ends annealed (a resumed run anneals again over its own limit)",
        },
    ),
    (
        "min_nrof_images_per_class",
        {"type": int, "default": 1, "help": "leave out identities with fewer images"},
    ),
)


def add_facewatch_options(p: argparse.ArgumentParser) -> None:
    for name, kwargs in FACEWATCH_OPTIONS:
        _opt(p, name, **kwargs)

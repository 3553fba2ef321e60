"""Values the training options accept, in a module without PyTorch: facewatch's command line
(every subcommand's parser, `facewatch run` too) is built at each start and must not load
torch for it (about 150 MB of memory in the daemon)."""

from __future__ import annotations

import argparse

STANDARDIZATIONS = ("fixed", "prewhiten")  # image standardisation before the network
MODEL_DEF_NAMES = ("inception_resnet_v1", "models.inception_resnet_v1")  # --model-def
MIN_INPUT_SIZE = 75  # Inception-ResNet-v1: smaller inputs vanish before Mixed_7a
RULES = ("vggface", "semihard")  # triplet selection rules


def count(least: int) -> object:
    """An argparse type: an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {least}")
        return value

    return parse

"""The settings of an instability analysis (`instability.py`): `InstabilityConfig`, checked before any work.

    config = InstabilityConfig(runs=["runs/lenet"], output_dir="instability", levels="0,3",
                               rewind_iterations="0,100,500").resolved()

Also the parsing of `levels` and `rewind_iterations`, and `copy_seed`: the data-order seed
of each trained copy, a function of (source seed, level, k, copy) only, so that a rerun
trains every copy on the stream it had; and `random_masks`, the random-pruning control's
masks (`masks='random'`).
"""

import dataclasses
import os

import numpy as np

from keras_lottery import training
from keras_lottery.experiments import analysis_results
from keras_lottery.experiments import interpolation
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import masks as masks_lib

STABLE_THRESHOLD = 0.02  # the paper's "stable": error barrier below 2%
DEFAULT_REWIND_ITERATIONS = "0,25,100,500,2000"
_SEED_TAG = 0x5EED1A  # keeps the copies' streams apart from other seed sequences of the same numbers
_RANDOM_MASK_TAG = 0x4A5C  # and the random masks' positions apart from the copies' streams
MASKS = ("imp", "random")


class InstabilityError(ValueError):
    """Bad instability-analysis input: a setting, a source run, or an instability.json of other settings."""


def parse_levels(levels):
    """'all', or the sorted distinct rounds of "0,3,6" (or a list of ints).

    Raises:
      InstabilityError: anything else.
    """
    return analysis_results.parse_levels(levels, InstabilityError)


def parse_masks(value):
    """The mask kinds of "imp", "random" or "imp,random" (or a list), in MASKS' order.

    Raises:
      InstabilityError: empty, or a kind that is not in MASKS.
    """
    parts = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value or ())
    parts = [part for part in parts if part]
    if not parts or any(part not in MASKS for part in parts):
        raise InstabilityError(f"masks must be 'imp' (the level's IMP masks), 'random' (as many weights per layer at "
                               f"random positions) or 'imp,random'; got {value!r}.")
    return [kind for kind in MASKS if kind in parts]


def parse_rewind_iterations(value):
    """The sorted distinct iterations k of "0,25,100" (or a list of ints), each >= 0.

    Raises:
      InstabilityError: empty, not integers, or negative.
    """
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        values = [check_int(int(part) if isinstance(part, str) else part, "k", 0) for part in parts
                  if str(part).strip()]
    except (TypeError, ValueError):
        values = []
    if not values:
        raise InstabilityError(f"rewind_iterations must be comma-separated iterations >= 0 such as "
                               f"'{DEFAULT_REWIND_ITERATIONS}'; got {value!r}.")
    return sorted(set(values))


def copy_seed(source_seed, level, k, copy):
    """The data-order (and augmentation) seed of copy `copy` of cell (level, k) of a source of `source_seed`."""
    state = np.random.SeedSequence([int(source_seed), int(level), int(k), int(copy), _SEED_TAG]).generate_state(1)
    return int(state[0])


def random_masks(imp_masks, source_seed, level):
    """Random-pruning control of `imp_masks`: each layer keeps as many weights, at random positions.

    Frankle et al.'s control keeps the layerwise sparsity of the IMP mask and draws which weights
    survive at random; the draw is a function of the source's seed and the level only, so a resumed
    analysis (and every k of one level) uses the same masks.
    """
    generator = np.random.default_rng(np.random.SeedSequence([int(source_seed), int(level), _RANDOM_MASK_TAG]))
    return {name: masks_lib.top_k_mask(generator.random(np.shape(mask)), int(np.sum(mask)))
            for name, mask in sorted(imp_masks.items())}


@dataclasses.dataclass
class InstabilityConfig:
    """The settings of an instability analysis (see the module docstring).

    Attributes:
      runs: IMP run folders, or folders holding them at any depth (a path or a list).
      output_dir: where instability.json and the copies' weights go.
      levels: 'all' (every finished round of each run) or comma-separated rounds, e.g. "0,3,6".
      rewind_iterations: the iterations k, e.g. "0,25,100,500,2000" (or a list of ints); each
        must be below every source's round length.
      interpolation_points: evenly spaced alphas in [0, 1], both ends included (the paper: 30).
      test_examples: evaluate on the first this many test examples; None: all of them.
      data_dir: where the runs' datasets are, if not where the runs read them.
      same_data_order: both copies read the same data order (the barrier is then 0: a check).
      masks: which masks each level's copies train under, comma-separated: 'imp' (the level's
        IMP masks), 'random' (Frankle et al.'s random-pruning control: each layer's kept count
        of the level's IMP mask at random positions, seeded by the source's seed and the level;
        no ticket-to-dense path, there is no trained ticket), or 'imp,random' (both, one cell each).
      keep_copies: keep the replayed states and the copies' weights (.npz) after their cells.
      verbose: 0: no log lines; 1: one per cell (INFO); 2: also one per copy trained.
    """

    runs: object = ()
    output_dir: str = ""
    levels: object = "all"
    rewind_iterations: object = DEFAULT_REWIND_ITERATIONS
    interpolation_points: int = 30
    test_examples: int | None = None
    data_dir: str | None = None
    same_data_order: bool = False
    masks: str = "imp"
    keep_copies: bool = False
    verbose: int = 1

    def resolved(self):
        """A copy with runs as a list, levels and rewind_iterations parsed, every field checked.

        Raises:
          InstabilityError: naming the field and the fix.
        """
        runs = [self.runs] if isinstance(self.runs, (str, os.PathLike)) else list(self.runs or ())
        if not runs:
            raise InstabilityError("runs is empty: pass IMP run folders (the --output_dir of apps.imp_main) or "
                                   "folders holding them.")
        if not self.output_dir:
            raise InstabilityError("output_dir is required: the folder where instability.json goes.")
        try:
            interpolation.alphas(self.interpolation_points)
            if self.test_examples is not None:
                check_int(self.test_examples, "test_examples (None: every test example)", 1)
            training.check_verbose(self.verbose)
        except ValueError as error:
            raise InstabilityError(str(error)) from None
        for name in ("same_data_order", "keep_copies"):
            if not isinstance(getattr(self, name), bool):
                raise InstabilityError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        levels, masks = parse_levels(self.levels), parse_masks(self.masks)
        if masks == ["random"] and levels == [0]:
            raise InstabilityError("masks='random' at level 0 alone has nothing to analyze: a random mask of the dense "
                                   "network keeps every weight. Ask for pruned levels too, e.g. levels='0,4'.")
        return dataclasses.replace(self, runs=[os.fspath(run) for run in runs], levels=levels,
                                   rewind_iterations=parse_rewind_iterations(self.rewind_iterations),
                                   masks=masks)

    def settings(self):
        """What a cell's numbers depend on besides its source: equal in every call on one output_dir."""
        return {"interpolation_points": self.interpolation_points, "test_examples": self.test_examples,
                "same_data_order": self.same_data_order, "stable_threshold": STABLE_THRESHOLD}

"""What can be checked of a split's files before any training: the checks that
`stages.check_before_training` runs on every split of a run.

A file-backed split (files.FileSegmentation) has every image's format read from its header
(mode, PNG bit depth: the rule `files.read_image` applies when it decodes) and, for an
evaluation split, every label file decoded and mapped through the class protocol, so that a
16-bit image in target val or a Cityscapes val tree of trainIds stops the run before its first
stage trains, not at the final evaluation. In-memory splits (the embedded benchmark,
generated here) have nothing to check. Each split is checked once per process.
"""

from __future__ import annotations

from .files import DatasetError, read_image


def check_split_files(split, name: str, labels: bool) -> None:
    """Check every image header of `split` and, with labels=True, every label's values.

    split: a files.FileSegmentation (anything without `pairs` passes); name: the split's
    name in the run ("target_val"), for the message. Raises DatasetError naming the split,
    how many files failed and the first few, each with its reason; `wsda data check` lists
    them all."""
    pairs = getattr(split, "pairs", None)
    if pairs is None or getattr(split, "_files_checked", set()) >= {labels}:
        return
    problems = []
    for i, (image, _) in enumerate(pairs):
        try:
            read_image(image, decode=False)
            if labels:
                split.label(i)
        except (DatasetError, ValueError) as e:
            problems.append(str(e))
    if problems:
        shown = "; ".join(problems[:3])
        raise DatasetError(f"{name}: {len(problems)} of {len(pairs)} image/label pair(s) "
                           f"cannot be used, checked before training: {shown}"
                           + ("; ..." if len(problems) > 3 else "")
                           + "; `wsda data check` lists every problem")
    split._files_checked = getattr(split, "_files_checked", set()) | {labels, False}

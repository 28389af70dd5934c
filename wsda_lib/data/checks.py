"""What can be checked of a split's files before any training: the checks that
`stages.check_before_training` runs on every split of a run.

A file-backed split (files.FileSegmentation) has every image's format read from its header
(mode, PNG bit depth: the rule `files.read_image` applies when it decodes) and, where labels
are asked for (the evaluation splits, and target train when a stage reads its labels),
every label file decoded and mapped through the class protocol, so that a 16-bit image in
target val or a Cityscapes val tree of trainIds stops the run before its first stage trains,
not at the final evaluation. A split that passed is recorded in the cache folder, keyed by its
files' names, sizes and modification times, so the next run of the same tree does not read it
again (Cityscapes' 1000 evaluation labels at 2048x1024 take about a minute). In-memory splits
(the embedded benchmark, generated here) have nothing to check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from wsda_lib.core.atomic import write_json
from wsda_lib.data.files import DatasetError, read_image


def _record(split, labels: bool, cache_dir: Path) -> Path:
    """Where a passed check of `split` is recorded: a key of its class protocol, whether
    labels were read, and every file's path, size and modification time."""
    def stamp(path: Path) -> str:
        st = path.stat()
        return f"{path} {st.st_size} {st.st_mtime_ns}"

    spec = ["files-checked-v1", split.class_set.name, str(getattr(split, "id_source", "")),
            str(labels), *(stamp(p) for pair in split.pairs for p in pair if p is not None)]
    key = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:16]
    return Path(cache_dir) / "checked" / f"{key}.json"


def check_split_files(split, name: str, labels: bool, cache_dir=None) -> None:
    """Check every image header of `split` and, with labels=True, every label's values.

    split: a files.FileSegmentation (anything without `pairs` passes); name: the split's
    name in the run ("target_val"), for the message; cache_dir: where a passed check is
    recorded (None: not recorded). Raises DatasetError naming the split, how many files
    failed and the first few, each with its reason; `wsda data check` lists them all."""
    pairs = getattr(split, "pairs", None)
    if not pairs:
        return
    record = _record(split, labels, cache_dir) if cache_dir is not None else None
    if record is not None and record.is_file():
        return
    problems = []
    for i, (image, _) in enumerate(pairs):
        try:
            getattr(split, "image_reader", read_image)(image, decode=False)
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
    if record is not None:
        write_json(record, {"split": name, "pairs": len(pairs), "labels_read": labels})

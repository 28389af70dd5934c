"""Made-up outputs of trained stages, for tests of what reads them (results, tables, the
ablation) without training anything."""


def stage_metrics(miou, weak=None, target_statistics=None, target_statistics_test=None):
    """A stage's metrics as run_stage returns them: both target splits scored as trained,
    and with target BatchNorm statistics (`target_statistics`, default: the same; on
    target test `target_statistics_test`, default: as on val)."""
    m = {s: {"miou": miou, "iou": [miou, miou]} for s in ("target_val", "target_test")}
    ts = miou if target_statistics is None else target_statistics
    tt = ts if target_statistics_test is None else target_statistics_test
    m["target_statistics"] = {s: {"miou": v, "iou": [v, v]}
                              for s, v in (("target_val", ts), ("target_test", tt))}
    if weak:
        m["pseudo_weak_start"], m["pseudo_weak_end"] = weak
    return m

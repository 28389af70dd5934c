"""A stage's network and its weights: built from the config, loaded from a checkpoint file
(a wsda run's, a {"state_dict": ...} or a bare state_dict) with errors that name the file and
the settings that differ."""

from __future__ import annotations

import json

import torch

from wsda_lib.core.config import Config, to_dict
from wsda_lib.models import build_deeplab


def build_model(cfg: Config, class_set):
    """DeepLab-v2 as cfg.model describes it, with one output per class of `class_set`."""
    m = cfg.model
    return build_deeplab(class_set.num_classes, m.backbone, m.base_width, m.aspp_rates,
                         m.legacy_aspp, m.freeze_bn, m.backbone_weights, m.freeze_bn_affine)


def model_weights(state, path) -> dict:
    """The network's state_dict in what a checkpoint file holds: a wsda checkpoint
    ({"model": state_dict, ...}), a {"state_dict": ...} or a bare state_dict. Keys prefixed
    "module." (as DataParallel and DDP save them) lose the prefix. Errors name the file and
    say what it holds."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        weights = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        weights = state["state_dict"]
    elif isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        weights = state
    else:
        held = (f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict)
                else type(state).__name__)
        raise ValueError(f"checkpoint {path} holds {held}; expected a wsda checkpoint (a dict "
                         f"whose 'model' is the network's state_dict) or a bare state_dict")
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    return weights


def _shape_of(weights: dict, key: str, dim: int = 0):
    return tuple(weights[key].shape)[dim] if key in weights else None


def load_weights(model, state, path, model_cfg) -> None:
    """Load the network weights of checkpoint `state` (read from `path`) into `model`, built
    from `model_cfg` (config.ModelConfig). A checkpoint that does not fit fails with an error
    naming the file and the settings that differ (number of classes, backbone, width, ASPP
    rates), read from the checkpoint's stored model config or, for a bare state_dict,
    from its tensors' shapes. A checkpoint whose floating-point tensors (weights or buffers)
    hold NaN or inf fails with an error naming the file and the tensors: such a model
    predicts class 0 everywhere and would be scored without a word."""
    weights = model_weights(state, path)
    nonfinite = sorted(k for k, v in weights.items() if torch.is_tensor(v)
                       and v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise ValueError(f"checkpoint {path}: {len(nonfinite)} tensor(s) hold NaN or inf "
                         f"values, e.g. {nonfinite[:3]}; it cannot be evaluated or trained "
                         f"from (a run that diverged, or a damaged file)")
    expected = model.state_dict()
    wrong = sorted(k for k in expected if k not in weights
                   or tuple(weights[k].shape) != tuple(expected[k].shape))
    extra = sorted(k for k in weights if k not in expected)
    if not wrong and not extra:
        model.load_state_dict(weights)
        return
    differ = []
    key = "classifier.branches.0.weight"
    if _shape_of(weights, key) != _shape_of(expected, key):
        differ.append(f"number of classes: checkpoint {_shape_of(weights, key)}, model "
                      f"{_shape_of(expected, key)}")
    saved = state.get("model_config") if isinstance(state, dict) else None
    if isinstance(saved, dict):
        mine = to_dict(model_cfg)
        differ += [f"model.{k}: checkpoint {saved[k]!r}, config {mine[k]!r}"
                   for k in ("backbone", "base_width", "aspp_rates", "legacy_aspp")
                   if k in saved and json_form(saved[k]) != json_form(mine[k])]
    else:
        stem = "backbone.stem.0.weight"
        if _shape_of(weights, stem) != _shape_of(expected, stem):
            differ.append(f"width of the first layer (model.base_width, or the backbone): "
                          f"checkpoint {_shape_of(weights, stem)}, model "
                          f"{_shape_of(expected, stem)}")
        branches = {k.split(".")[2] for k in weights if k.startswith("classifier.branches.")}
        want = {k.split(".")[2] for k in expected if k.startswith("classifier.branches.")}
        if len(branches) != len(want):
            differ.append(f"ASPP branches (model.aspp_rates, model.legacy_aspp): checkpoint "
                          f"{len(branches)}, model {len(want)}")
    detail = "; ".join(differ) if differ else (
        f"{len(wrong)} tensor(s) missing or of another shape, e.g. {wrong[:3]}, "
        f"{len(extra)} unexpected, e.g. {extra[:3]} (another backbone?)")
    raise ValueError(f"checkpoint {path} does not fit the model built from the config: {detail}")


def json_form(value):
    return json.loads(json.dumps(value))
